"""The packaged pipeline says what it holds and under which licence, and claims no
licence that its parts do not give."""
from pathlib import Path

import pytest
import srsly

from spacy_bilstm_crf.serving import packaging

REPO = Path(__file__).resolve().parents[1]
META_FILE = REPO / "configs" / "meta.json"


def _sources(meta: dict) -> dict:
    return {source["name"].split(" (")[0]: source for source in meta["sources"]}


def test_meta_lists_every_part_with_its_license() -> None:
    """The pipeline carries LAC-small's weights (Apache-2.0) and was trained on CLUENER2020
    (no licence stated): a bare ``MIT`` claimed a licence for parts that have another or none."""
    meta = srsly.read_json(META_FILE)
    sources = _sources(meta)
    assert sources["LAC-small"]["license"] == "Apache-2.0" and sources["LAC-small"]["inside"]
    assert "no license stated" in sources["CLUENER2020"]["license"]
    assert "gazetteer" in sources["CLUENER2020"]["inside"]
    assert meta["license"] != "MIT"
    for licence in ("MIT", "Apache-2.0", "CLUENER2020", "LICENSES_SOURCES"):
        assert licence in meta["license"], licence
    assert "CLUENER2020" in meta["notes"] and "no licence" in meta["notes"]
    packaging.check_licenses(meta)


def test_licenses_sources_holds_each_part_and_the_apache_text() -> None:
    meta = srsly.read_json(META_FILE)
    text = packaging.licenses_sources(meta, META_FILE.parent)
    assert "LAC-small" in text and "License: Apache-2.0" in text
    assert "Inside: its character table" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text  # Apache-2.0, section 4(a)
    assert text.count("TERMS AND CONDITIONS") == 1  # once, however many sources name it


@pytest.mark.parametrize(
    "license,sources,error",
    [
        ("MIT", [{"name": "LAC", "license": "Apache-2.0"}], "leaves out Apache-2.0"),
        ("MIT AND Apache-2.0", [{"name": "CLUENER2020", "license": "no license stated"}], "LICENSES_SOURCES"),
        ("MIT", [{"name": "data"}], "has no license"),
        ("MIT", ["data"], "has no license"),
    ],
)
def test_a_meta_that_claims_more_than_its_parts_give_is_refused(license, sources, error) -> None:
    with pytest.raises(ValueError, match=error):
        packaging.check_licenses({"license": license, "sources": sources})


def test_a_missing_license_file_is_an_error(tmp_path: Path) -> None:
    meta = {"license": "Apache-2.0", "sources": [{"name": "LAC", "license": "Apache-2.0", "license_file": "nope.txt"}]}
    with pytest.raises(ValueError, match="nope.txt"):
        packaging.licenses_sources(meta, tmp_path)


def test_package_refuses_the_old_mit_only_meta(tmp_path: Path) -> None:
    """``package`` checks the licences before building anything."""
    meta = srsly.read_json(META_FILE)
    meta["license"] = "MIT"
    meta_path = tmp_path / "meta.json"
    srsly.write_json(meta_path, meta)
    model = tmp_path / "model"
    model.mkdir()
    srsly.write_json(model / "meta.json", {"lang": "zh"})
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="instead of claiming one licence for everything"):
        packaging.package(model, tmp_path / "out", name="x", version="0.1.0", meta_path=meta_path, source=REPO)
    assert not list((tmp_path / "out").iterdir())


def test_a_pipeline_with_lac_full_vectors_names_lac_in_its_sources(tmp_path: Path) -> None:
    meta = srsly.read_json(META_FILE)
    model = tmp_path / "model"
    model.mkdir()
    config = "[components]\n\n[components.bilstm_crf_ner]\nfactory = \"bilstm_crf_ner\"\n\n[components.bilstm_crf_ner.model]\n"
    (model / "config.cfg").write_text(config + "lexicon_vectors = null\n", encoding="utf8")
    assert packaging.with_pipeline_sources(meta, model) == meta
    (model / "config.cfg").write_text(config + 'lexicon_vectors = "lac"\n', encoding="utf8")
    extended = packaging.with_pipeline_sources(meta, model)
    assert extended["sources"][:-1] == meta["sources"] and extended["sources"][-1]["name"].startswith("LAC 2.1.2")
    packaging.check_licenses(extended)  # Apache-2.0 is in the meta's licence already
    text = packaging.licenses_sources(extended, META_FILE.parent)
    assert "LAC 2.1.2" in text and "Apache License" in text
    assert packaging.with_pipeline_sources(extended, model) == extended  # added once
    (model / "config.cfg").write_text(config + 'lac_full_states = "LAC-2.1.2.tar.gz"\n', encoding="utf8")
    assert packaging.with_pipeline_sources(meta, model) == extended
