"""Package a trained pipeline with everything a clean machine needs to install it.

``spacy package`` builds a wheel whose requirements name ``spacy-bilstm-crf`` (the
package that provides the ``bilstm_crf_ner`` component), which is on no package
index, so that wheel alone does not install. This command (the project's
``package`` step) writes both wheels into the pipeline's ``dist/`` directory:

    python -m spacy_bilstm_crf.serving.packaging training/model-best packages \
        --name bilstm_crf_cluener --version 0.1.0 --meta configs/meta.json --source .

and ``pip install torch==... && pip install packages/<lang>_<name>-<version>/dist/*.whl``
installs the pipeline and the component together. It also ships the LICENSE
file (and a LICENSES_SOURCES file made from the meta's ``sources``: what the pipeline
holds from each, under which licence, and the text of each licence file a source names)
inside the pipeline, where ``spacy package`` looks for them, without touching MODEL_DIR.
A meta whose ``license`` claims less than its sources give is refused
(:func:`check_licenses`).
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import srsly
import typer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from wasabi import msg

from ..about import __title__

# What building the component's wheel needs from its source tree (a clean copy is
# built, so no build/ or *.egg-info directory is left in the checkout).
SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
SOURCE_PACKAGE = "spacy_bilstm_crf"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".*")
# torch's CPU wheels: on Linux the package index's torch is the multi-GB CUDA build.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def source_version(source: Path) -> str:
    """RETURNS (str): The version in SOURCE's ``spacy_bilstm_crf/about.py``."""
    about = source / SOURCE_PACKAGE / "about.py"
    if not about.is_file():
        raise ValueError(f"{source} is not a spacy-bilstm-crf source tree: no {SOURCE_PACKAGE}/about.py")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", about.read_text(encoding="utf8"), re.M)
    if not match:
        raise ValueError(f"No __version__ in {about}")
    return match.group(1)


def licenses_sources(meta: Dict[str, Any], base: Optional[Path] = None) -> str:
    """The text of LICENSES_SOURCES: one paragraph per source in the meta (what the
    pipeline holds from it and under which licence), then the full text of each licence
    file that a source names (``license_file``, relative to BASE).

    base (Optional[Path]): The directory of the meta file; None: licence files are not read.
    RETURNS (str): The text.
    """
    parts, texts = [], {}
    for source in meta.get("sources") or []:
        if isinstance(source, str):
            source = {"name": source}
        lines = [source.get("name", "")]
        for key in ("url", "author", "license", "inside"):
            if source.get(key):
                lines.append(f"{key.capitalize()}: {source[key]}")
        parts.append("\n".join(lines))
        if base is not None and source.get("license_file"):
            path = base / source["license_file"]
            if not path.is_file():
                raise ValueError(f"{source.get('name')}: its license_file {path} does not exist")
            texts.setdefault(path.name, (source["license"], path.read_text(encoding="utf8").strip("\n")))
    for name, (license, text) in texts.items():
        parts.append(f"{'=' * 72}\n{license} ({name}), for the sources above that name it:\n\n{text}")
    return "\n\n".join(parts) + "\n"


# Added to a package's sources when its pipeline stores LAC-full's word vectors or network.
LAC_FULL_SOURCE: Dict[str, str] = {
    "name": "LAC 2.1.2 (Baidu's lexical analyser, full model: LAC-2.1.2.tar.gz on PyPI)",
    "url": "https://github.com/baidu/lac",
    "license": "Apache-2.0",
    "author": "PaddlePaddle Authors (Baidu)",
    "inside": "the pretrained vectors of the lexicon words its vocabulary covers (lexicon_vectors), "
    "or its embedding table, BiGRU layers and dictionaries (lac_full_states), stored in the "
    "bilstm_crf_ner weights (tables in float16)",
    "license_file": "LICENSE-Apache-2.0.txt",
}


# The model settings that store parts of LAC-full in the pipeline.
LAC_FULL_SETTINGS = ("lexicon_vectors", "lac_full_states")


def with_pipeline_sources(meta: Dict[str, Any], model_dir: Path) -> Dict[str, Any]:
    """The meta with the sources that the pipeline's config says it holds beyond the
    meta's own: LAC-full's where a component has ``lexicon_vectors`` or ``lac_full_states``.

    RETURNS (Dict[str, Any]): A new meta (``meta`` is not changed).
    """
    from spacy.util import load_config

    if not (model_dir / "config.cfg").is_file():  # not a pipeline: spaCy's package says so
        return meta
    config = load_config(model_dir / "config.cfg", interpolate=False)
    models = [block.get("model", {}) for block in config.get("components", {}).values()]
    uses_lac_full = any(
        isinstance(m, dict) and any(m.get(key) is not None for key in LAC_FULL_SETTINGS) for m in models
    )
    sources = list(meta.get("sources") or [])
    if uses_lac_full and not any(s.get("name") == LAC_FULL_SOURCE["name"] for s in sources):
        sources.append(dict(LAC_FULL_SOURCE))
    return {**meta, "sources": sources}


def check_licenses(meta: Dict[str, Any]) -> None:
    """Refuse a meta whose ``license`` claims less than its sources give: every source
    must state its licence (or that it has none), each licence named by a source (an SPDX
    identifier such as ``Apache-2.0``) must appear in the meta's ``license``, and a source
    under no stated licence must be pointed to (``LICENSES_SOURCES``), since the package
    as a whole cannot then be under one licence.
    """
    license = str(meta.get("license") or "")
    for source in meta.get("sources") or []:
        if isinstance(source, str):
            raise ValueError(f"Source {source!r} of the meta has no license: give it as an object with a 'license'")
        name, stated = source.get("name", "?"), str(source.get("license") or "").strip()
        if not stated:
            raise ValueError(f"Source {name!r} of the meta has no license (say so if none is stated)")
        if re.fullmatch(r"[A-Za-z0-9.+-]+", stated):
            if stated not in license:
                raise ValueError(f"The meta's license {license!r} leaves out {stated}, the license of {name!r}")
        elif "LICENSES_SOURCES" not in license:
            raise ValueError(
                f"Source {name!r} is under {stated!r}: the meta's license {license!r} must point to "
                "LICENSES_SOURCES instead of claiming one licence for everything"
            )


def build_component_wheel(source: Path, dist: Path) -> Path:
    """Build the wheel of the spacy-bilstm-crf source tree SOURCE into DIST.
    RETURNS (Path): The wheel.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        for name in SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        shutil.copytree(source / SOURCE_PACKAGE, tree / SOURCE_PACKAGE, ignore=IGNORE)
        before = set(dist.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dist), str(tree)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"Building the {__title__} wheel failed:\n{result.stdout}\n{result.stderr}")
    built = sorted(set(dist.glob("*.whl")) - before)
    if len(built) != 1:
        raise RuntimeError(f"Expected one new wheel in {dist}, found {[p.name for p in built]}")
    return built[0]


def torch_version() -> str:
    """RETURNS (str): The installed torch's version without its local part (2.13.0, not 2.13.0+cpu)."""
    from importlib.metadata import version

    return version("torch").split("+")[0]


def wheel_version(wheel: Path) -> str:
    """RETURNS (str): The version in a wheel's file name (name-version-tags.whl)."""
    return wheel.name.split("-")[1]


def package(
    model_dir: Path,
    output_dir: Path,
    *,
    name: str,
    version: str,
    meta_path: Path,
    source: Path,
    license_path: Optional[Path] = None,
    component_version: Optional[str] = None,
) -> List[Path]:
    """Package MODEL_DIR with ``spacy package`` (wheel only, meta from META_PATH, with
    LICENSE and LICENSES_SOURCES) and build the component's wheel from SOURCE
    next to it, in ``OUTPUT_DIR/<lang>_<name>-<version>/dist/``, which holds only
    these two wheels afterwards.

    component_version (Optional[str]): The version the component's wheel must have
        (the project's ``vars.component_version``, which names the output).
    RETURNS (List[Path]): The pipeline's wheel and the component's wheel.
    """
    from spacy.cli.package import package as spacy_package

    license_path = license_path or source / "LICENSE"
    for path, what in ((model_dir, "pipeline"), (meta_path, "meta file"), (license_path, "license file")):
        if not path.exists():
            raise ValueError(f"No {what} at {path}")
    if not output_dir.is_dir():
        raise ValueError(f"No output directory at {output_dir}")
    found = source_version(source)
    if component_version is not None and found != component_version:
        raise ValueError(
            f"{source} holds {__title__} {found}, not {component_version}: set the project's "
            f"vars.component_version to {found} (it names the wheel the package step writes)"
        )
    meta = with_pipeline_sources(srsly.read_json(meta_path), model_dir)
    check_licenses(meta)
    sources_text = licenses_sources(meta, meta_path.parent)
    lang = srsly.read_json(model_dir / "meta.json")["lang"]
    model_name = name if name.startswith(f"{lang}_") else f"{lang}_{name}"
    main_path = output_dir / f"{model_name}-{version}"
    # Start afresh: `spacy package --force` keeps dist/ and build/, so old wheels and
    # stale files would ship (and `pip install dist/*.whl` would see two versions).
    if main_path.exists():
        shutil.rmtree(main_path)
    with tempfile.TemporaryDirectory() as tmp:
        # spacy package copies LICENSE and LICENSES_SOURCES from the pipeline directory;
        # add them to a copy so that training/ (another step's output) stays as it is.
        staged = Path(tmp) / model_dir.name
        shutil.copytree(model_dir, staged)
        shutil.copy2(license_path, staged / "LICENSE")
        (staged / "LICENSES_SOURCES").write_text(sources_text, encoding="utf8")
        staged_meta = Path(tmp) / "meta.json"
        srsly.write_json(staged_meta, meta)
        spacy_package(
            staged, output_dir, meta_path=staged_meta, name=name, version=version,
            create_sdist=False, create_wheel=True, require_parent=True, force=True, silent=False,
        )
    dist = main_path / "dist"
    pipeline_wheels = sorted(dist.glob("*.whl"))
    if len(pipeline_wheels) != 1:
        raise RuntimeError(f"Expected the pipeline's wheel in {dist}, found {[p.name for p in pipeline_wheels]}")
    component_wheel = build_component_wheel(source, dist)
    # The pipeline's requirement on the component must accept the wheel built beside it.
    packaged_meta = srsly.read_json(main_path / "meta.json")
    for req in map(Requirement, packaged_meta.get("requirements", [])):
        if canonicalize_name(req.name) == canonicalize_name(__title__):
            if not req.specifier.contains(wheel_version(component_wheel), prereleases=True):
                raise RuntimeError(
                    f"The pipeline requires {req}, but {source} builds {component_wheel.name}: "
                    f"reinstall the project (pip install -e .) so both agree"
                )
    return [pipeline_wheels[0], component_wheel]


def main(
    # fmt: off
    model_dir: Path = typer.Argument(..., help="Trained pipeline directory, e.g. training/model-best", exists=True, file_okay=False),
    output_dir: Path = typer.Argument(..., help="Where the package directory is made, e.g. packages", file_okay=False),
    name: str = typer.Option(..., "--name", help="Package name (the language code is put before it)"),
    version: str = typer.Option(..., "--version", help="Package version"),
    meta_path: Path = typer.Option(..., "--meta", help="JSON with the package's meta: description, license, sources, author ...", exists=True, dir_okay=False),
    source: Path = typer.Option(Path("."), "--source", help="The spacy-bilstm-crf source tree (with pyproject.toml) whose wheel ships with the pipeline", file_okay=False),
    license_path: Optional[Path] = typer.Option(None, "--license", help="License file to ship [default: SOURCE/LICENSE]", dir_okay=False),
    component_version: Optional[str] = typer.Option(None, "--component-version", help="Fail unless SOURCE is this version of spacy-bilstm-crf"),
    # fmt: on
) -> None:
    """Package a trained pipeline and build the spacy-bilstm-crf wheel beside it, so
    that ``pip install DIST/*.whl`` installs both on a machine without this repo.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        wheels = package(
            model_dir, output_dir, name=name, version=version, meta_path=meta_path,
            source=source, license_path=license_path, component_version=component_version,
        )
    except (ValueError, RuntimeError) as err:
        msg.fail("Packaging failed", str(err), exits=1)
    dist = wheels[0].parent
    msg.good("Wrote both wheels a deployment needs", "\n".join(str(w) for w in wheels))
    torch = f"torch=={torch_version()}"
    msg.info(
        f"Install them, torch first: pip install {torch} --index-url {TORCH_CPU_INDEX} on a machine "
        f"without a GPU (plain `pip install {torch}` pulls the CUDA build on Linux), then "
        f"pip install {dist}/*.whl"
    )


if __name__ == "__main__":
    typer.run(main)
