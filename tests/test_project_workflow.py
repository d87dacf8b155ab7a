"""The spaCy project workflow (project.yml) and its ``data`` step (``fetch-cluener``).

The fast tests check project.yml's shape, the package step's meta and outputs,
and the data step's branches without the network: downloads go to ``file://``
URLs. The slow smoke test runs ``spacy project run all`` on the sample data with
a tiny model, then installs the wheels of the package step into a venv that does
not see this environment (torch, then ``pip install dist/*.whl``, as a
deployment would) and loads the pipeline there.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import spacy
import srsly
from spacy.tokens import DocBin
from typer.testing import CliRunner

from spacy_bilstm_crf.serving import packaging
from spacy_bilstm_crf.about import __version__
from spacy_bilstm_crf.cli import app
from spacy_bilstm_crf.cli import data as data_cli

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILE = REPO / "project.yml"
SAMPLE = REPO / "assets" / "cluener_sample.json"
SAMPLE_DEV = REPO / "assets" / "cluener_sample_dev.json"
SHARED_CLUENER = REPO.parent / "shared" / "data" / "cluener"
META_FILE = REPO / "configs" / "meta.json"
CLUENER_REPO_URL = "https://github.com/CLUEbenchmark/CLUENER2020"

# A tiny model and a few steps, so the whole workflow runs in about a minute on a CPU.
# LAC's features stay on (the default), so the packaged pipeline carries them.
# The leading space matters: weasel reads a value that starts with "--" as an option.
SMOKE_TRAIN_OVERRIDES = (
    " --initialize.after_init.epochs 3"
    " --components.bilstm_crf_ner.model.lac_embeddings false"
    " --components.bilstm_crf_ner.model.lexicon_dim 8"
    " --components.bilstm_crf_ner.model.char_dim 32"
    " --components.bilstm_crf_ner.model.bigram_dim 16"
    " --components.bilstm_crf_ner.model.bigram_buckets 997"
    " --components.bilstm_crf_ner.model.class_dim 8"
    " --components.bilstm_crf_ner.model.hidden_size 32"
)

runner = CliRunner()


def plain(text: str) -> str:
    """Output without colours and with wasabi's line wrapping undone, to match phrases in."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sample_source(directory: Path) -> Path:
    """A stand-in for a CLUENER copy: the sample files named train.json / dev.json."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SAMPLE, directory / "train.json")
    shutil.copyfile(SAMPLE_DEV, directory / "dev.json")
    return directory


def make_project(directory: Path) -> Path:
    """A copy of the project (project.yml and configs/) to run commands in."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_FILE, directory / "project.yml")
    shutil.copytree(REPO / "configs", directory / "configs")
    return directory


def unreachable_url(tmp_path: Path) -> str:
    """A download URL that fails at once, without touching the network."""
    return (tmp_path / "no-such-archive.zip").as_uri()


def run_project(
    project: Path, command: str, args: List[str], env: Dict[str, str]
) -> subprocess.CompletedProcess:
    """Run ``python -m spacy project run COMMAND`` with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", command, str(project), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )


def quiet_env(tmp_path: Path) -> Dict[str, str]:
    """The environment for project runs: one thread each (the machine is shared),
    and the download pointed at a missing local file so no test reaches the network.
    """
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            data_cli.URL_ENV_VAR: unreachable_url(tmp_path),
        }
    )
    return env


# --- project.yml -------------------------------------------------------------------------


def load_project(directory: Path, args: Sequence[str] = ()) -> dict:
    """project.yml loaded and interpolated by weasel, with ``--vars.*`` args as
    on the command line. Loads a copy in ``directory``: loading creates the
    project's directories.
    """
    weasel_util = pytest.importorskip("weasel.util")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_FILE, directory / "project.yml")
    overrides = weasel_util.parse_config_overrides(list(args))
    return weasel_util.load_project_config(directory, overrides=overrides)


def test_project_yml_validates_against_weasel_schema() -> None:
    schemas = pytest.importorskip("weasel.schemas")
    raw = srsly.read_yaml(PROJECT_FILE)
    assert schemas.validate(schemas.ProjectConfigSchema, raw) == []
    for key in ("title", "description", "vars", "directories", "assets", "workflows", "commands"):
        assert raw.get(key), key
    vars_ = raw["vars"]
    assert vars_["lang"] == "zh" and vars_["config"] == "bilstm_crf" and vars_["gpu_id"] == -1
    assert not Path(vars_["cluener_dir"]).is_absolute()
    assert {"name", "version", "train_overrides"} <= set(vars_)


def test_workflow_steps_chain_through_deps_and_outputs(tmp_path: Path) -> None:
    config = load_project(tmp_path)
    commands = {cmd["name"]: cmd for cmd in config["commands"]}
    steps = config["workflows"]["all"]
    assert steps == ["data", "convert", "train", "evaluate", "package"]
    produced = set()
    for name in steps:
        cmd = commands[name]
        assert cmd.get("help") and cmd["script"] and cmd["outputs"], name
        for script in cmd["script"]:
            assert script.startswith("python -m "), script  # the interpreter spaCy runs with
        if name != "data":  # data's source lies outside the project, so it always runs
            assert cmd["deps"], name
            for dep in cmd["deps"]:
                assert dep in produced or (REPO / dep).exists(), f"{name}: {dep}"
        produced.update(cmd["outputs"])
    assert commands["data"].get("no_skip") is True


def test_assets_and_fetch_command_agree_on_checksums(tmp_path: Path) -> None:
    config = load_project(tmp_path)
    by_name = {Path(asset["dest"]).name: asset for asset in config["assets"]}
    assert {name: asset["checksum"] for name, asset in by_name.items()} == data_cli.CLUENER_MD5
    for name, asset in by_name.items():
        assert asset["dest"] == f"assets/cluener/{name}"
        assert asset["url"] == f"{config['vars']['cluener_dir']}/{name}"
    fetch = next(cmd for cmd in config["commands"] if cmd["name"] == "data")["script"][0]
    assert "fetch-cluener assets/cluener --source" in fetch


@pytest.mark.skipif(not SHARED_CLUENER.is_dir(), reason="no shared CLUENER copy beside the repo")
def test_shared_copy_is_the_release_the_checksums_describe() -> None:
    for name, expected in data_cli.CLUENER_MD5.items():
        assert md5(SHARED_CLUENER / name) == expected, name


def test_vars_reach_the_scripts(tmp_path: Path) -> None:
    args = ["--vars.gpu_id", "0", "--vars.cluener_dir", "my/cluener"]
    args += ["--vars.train_overrides", " --training.max_steps 20"]
    scripts = {cmd["name"]: " ".join(cmd["script"]) for cmd in load_project(tmp_path, args)["commands"]}
    assert "--gpu-id 0" in scripts["train"] and "--gpu-id 0" in scripts["evaluate"]
    assert scripts["train"].endswith("--gpu-id 0  --training.max_steps 20")
    assert "--source my/cluener" in scripts["data"]
    default = {cmd["name"]: " ".join(cmd["script"]) for cmd in load_project(tmp_path / "d")["commands"]}
    assert "--gpu-id -1" in default["train"] and "--gpu-id -1" in default["evaluate"]


def package_command(config: dict) -> dict:
    return next(cmd for cmd in config["commands"] if cmd["name"] == "package")


def test_package_step_ships_the_component_wheel_beside_the_pipeline(tmp_path: Path) -> None:
    config = load_project(tmp_path)
    vars_ = config["vars"]
    # The pipeline requires spacy-bilstm-crf, which is on no package index: its wheel
    # is built into the same dist/ so that `pip install dist/*.whl` installs both.
    assert vars_["component_version"] == __version__
    dist = f"packages/{vars_['lang']}_{vars_['name']}-{vars_['version']}/dist"
    cmd = package_command(config)
    assert cmd["outputs"] == [
        f"{dist}/{vars_['lang']}_{vars_['name']}-{vars_['version']}-py3-none-any.whl",
        f"{dist}/spacy_bilstm_crf-{__version__}-py3-none-any.whl",
    ]
    assert cmd["script"] == [
        f"python -m spacy_bilstm_crf.serving.packaging training/model-best packages --name {vars_['name']}"
        f" --version {vars_['version']} --meta configs/meta.json --source ."
        f" --component-version {__version__}"
    ]
    for dep in ("training/model-best", "configs/meta.json", "./LICENSE", "./pyproject.toml"):
        assert dep in cmd["deps"], dep
    other = package_command(load_project(tmp_path / "other", ["--vars.component_dir", "/src/tree"]))
    assert "--source /src/tree" in other["script"][0] and "/src/tree/LICENSE" in other["deps"]


def test_workflow_outputs_and_state_are_not_tracked() -> None:
    """``spacy project run all`` leaves its outputs and ``project.lock`` (the hashes of this
    machine's last run of each step) out of ``git status``."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    for path in ("project.lock", "assets/cluener/train.json", "corpus/train.spacy", "training/model-best",
                 "metrics/dev.json", "packages/zh_x-0.1.0", "exported/model.pt2"):
        result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
        assert result.returncode == 0, f"{path} is not ignored by .gitignore"


def test_package_meta_and_license() -> None:
    meta = srsly.read_json(META_FILE)
    assert meta["license"].startswith("MIT AND Apache-2.0") and meta["description"] and meta["author"]
    assert "requirements" not in meta  # spacy package works them out; a list here would replace them
    sources = {source["name"]: source for source in meta["sources"]}
    assert sources["CLUENER2020"]["url"] == CLUENER_REPO_URL and sources["CLUENER2020"]["license"]
    assert any(name.startswith("spacy-bilstm-crf") for name in sources)
    schemas = pytest.importorskip("spacy.schemas")
    full = {"lang": "zh", "name": "bilstm_crf_cluener", "version": "0.1.0", **meta}
    assert schemas.validate(schemas.ModelMetaSchema, full) == []
    license_text = (REPO / "LICENSE").read_text(encoding="utf8")
    assert license_text.startswith("MIT License") and "spacy-bilstm-crf authors" in license_text
    text = packaging.licenses_sources(meta)
    assert "CLUENER2020" in text and CLUENER_REPO_URL in text


def test_packaging_refuses_a_component_version_the_outputs_do_not_name(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    out = tmp_path / "packages"
    out.mkdir()
    with pytest.raises(ValueError, match="vars.component_version"):
        packaging.package(
            model, out, name="x", version="0.0.1", meta_path=META_FILE, source=REPO,
            component_version=__version__ + ".post9",
        )
    assert not list(out.iterdir())
    with pytest.raises(ValueError, match="not a spacy-bilstm-crf source tree"):
        packaging.source_version(tmp_path)
    assert packaging.source_version(REPO) == __version__


# --- the data step -----------------------------------------------------------------------


def test_data_step_copies_from_cluener_dir(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    source = sample_source(tmp_path / "my-cluener")
    result = run_project(project, "data", ["--vars.cluener_dir", str(source)], quiet_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("train.json", "dev.json"):
        assert md5(project / "assets" / "cluener" / name) == md5(source / name)
    # The sample is not the official release: used, but the user is told so.
    assert "not the official CLUENER2020 file" in plain(result.stdout)


def test_data_step_says_what_to_do_when_nothing_works(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    env = quiet_env(tmp_path)
    result = run_project(project, "data", ["--vars.cluener_dir", str(tmp_path / "missing")], env)
    assert result.returncode != 0
    out = plain(result.stdout + result.stderr)
    assert "Could not get the CLUENER2020 data" in out
    assert str(tmp_path / "missing") in out and env[data_cli.URL_ENV_VAR] in out
    assert "put train.json and dev.json in assets/cluener/" in out
    assert "--vars.cluener_dir PATH" in out
    assert not (project / "assets" / "cluener" / "train.json").exists()


def test_fetch_default_url_is_the_official_archive() -> None:
    assert data_cli.CLUENER_ARCHIVE_URL == "https://storage.googleapis.com/cluebenchmark/tasks/cluener_public.zip"


def test_fetch_official_copy_is_silent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = sample_source(tmp_path / "src")
    monkeypatch.setattr(data_cli, "CLUENER_MD5", {"train.json": md5(SAMPLE), "dev.json": md5(SAMPLE_DEV)})
    result = runner.invoke(app, ["fetch-cluener", str(tmp_path / "out"), "--source", str(source)])
    assert result.exit_code == 0, result.output
    assert "Copied" in plain(result.output) and "not the official" not in plain(result.output)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


def test_fetch_keeps_a_copy_already_in_place(tmp_path: Path) -> None:
    out_dir = sample_source(tmp_path / "out")  # e.g. put there by hand
    args = ["--source", str(tmp_path / "missing"), "--url", unreachable_url(tmp_path)]
    result = runner.invoke(app, ["fetch-cluener", str(out_dir), *args])
    assert result.exit_code == 0, result.output
    assert "already in" in plain(result.output) and "not the official" in plain(result.output)


def test_fetch_needs_both_files_in_source(tmp_path: Path) -> None:
    source = sample_source(tmp_path / "src")
    (source / "dev.json").unlink()
    args = ["--source", str(source), "--url", unreachable_url(tmp_path)]
    result = runner.invoke(app, ["fetch-cluener", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    out = plain(result.output)
    assert "No dev.json in" in out and "Could not get the CLUENER2020 data" in out


def make_archive(path: Path, files: Dict[str, Path]) -> str:
    """A zip laid out like the official one (files under a folder); RETURNS its file:// URL."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, src in files.items():
            zf.write(src, f"cluener_public/{name}")
    return path.as_uri()


def test_fetch_downloads_extracts_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = make_archive(tmp_path / "cluener_public.zip", {"train.json": SAMPLE, "dev.json": SAMPLE_DEV})
    monkeypatch.setattr(data_cli, "CLUENER_MD5", {"train.json": md5(SAMPLE), "dev.json": md5(SAMPLE_DEV)})
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["fetch-cluener", str(out_dir), "--url", url])
    assert result.exit_code == 0, result.output
    assert md5(out_dir / "train.json") == md5(SAMPLE) and md5(out_dir / "dev.json") == md5(SAMPLE_DEV)
    assert sorted(p.name for p in out_dir.iterdir()) == ["dev.json", "train.json"]


def test_fetch_rejects_a_download_that_is_not_the_release(tmp_path: Path) -> None:
    url = make_archive(tmp_path / "cluener_public.zip", {"train.json": SAMPLE, "dev.json": SAMPLE_DEV})
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["fetch-cluener", str(out_dir), "--url", url])
    assert result.exit_code == 1
    out = plain(result.output)
    assert "not the expected CLUENER2020 release" in out and md5(SAMPLE) in out
    assert not (out_dir / "train.json").exists()  # nothing half-verified is left to be used


@pytest.mark.parametrize(
    "content,expected",
    [(b"<html>not found</html>", "not a valid zip archive"), (None, "has no dev.json")],
)
def test_fetch_rejects_a_bad_archive(tmp_path: Path, content, expected: str) -> None:
    archive = tmp_path / "cluener_public.zip"
    if content is None:
        url = make_archive(archive, {"train.json": SAMPLE})
    else:
        archive.write_bytes(content)
        url = archive.as_uri()
    result = runner.invoke(app, ["fetch-cluener", str(tmp_path / "out"), "--url", url])
    assert result.exit_code == 1
    assert expected in plain(result.output) and "Do one of" in plain(result.output)


def test_fetch_url_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = unreachable_url(tmp_path)
    monkeypatch.setenv(data_cli.URL_ENV_VAR, url)
    result = runner.invoke(app, ["fetch-cluener", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"Downloading {url} failed" in plain(result.output)


# --- the whole workflow ------------------------------------------------------------------


def count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def check_corpus(project: Path) -> None:
    vocab = spacy.blank("zh").vocab
    for split, sample in (("train", SAMPLE), ("dev", SAMPLE_DEV)):
        docs = list(DocBin().from_disk(project / "corpus" / f"{split}.spacy").get_docs(vocab))
        stats = srsly.read_json(project / "corpus" / f"{split}.stats.json")
        assert len(docs) == stats["docs_written"] == count_lines(sample), split
        assert any(doc.ents for doc in docs), split


def check_metrics(project: Path) -> None:
    scores = srsly.read_json(project / "metrics" / "dev.json")
    for key in ("ents_p", "ents_r", "ents_f", "ents_per_type"):
        assert key in scores, key
    assert 0.0 <= scores["ents_f"] <= 1.0
    assert scores["n_docs"] == count_lines(SAMPLE_DEV)
    assert (project / "metrics" / "dev_report.md").stat().st_size > 0
    assert "<html" in (project / "metrics" / "dev_displacy.html").read_text(encoding="utf8").lower()


def clean_env() -> Dict[str, str]:
    """The environment for the deployment venv: nothing that would let it see this
    environment's packages or the checkout (PYTHONPATH, a venv's variables, user
    site-packages), one thread (the machine is shared).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
    env.update({"PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def torch_requirement() -> str:
    """``torch==X.Y.Z``: this environment's torch release, the local part (``+cpu``) left
    off, as the README tells a deployment to install it before the wheels (torch
    first, so pip does not pick a build of its own).
    """
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def install_in_clean_venv(tmp_path: Path, wheels: List[Path], package: str) -> dict:
    """Create a venv that does not see this environment's packages (no
    --system-site-packages: from a venv that would be the base interpreter's
    anyway), install torch and then all WHEELS there as a deployment would (the
    other dependencies come from the package index or pip's cache), and load
    PACKAGE with spacy.load, from a directory outside the checkout.
    RETURNS (dict): What the venv's interpreter reports.
    """
    venv = tmp_path / "deploy-venv"
    env = clean_env()
    # sys.executable -m venv works in a venv or not: venv bases the new one on the
    # base interpreter (sys._base_executable).
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in ([torch_requirement()], [str(w) for w in wheels]):
        cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
        result = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True)
        assert result.returncode == 0, " ".join(cmd) + "\n" + result.stdout[-4000:] + result.stderr[-4000:]
    code = (
        "import importlib, json, sys, spacy\n"
        "from spacy.tokens import Doc\n"
        f"nlp = spacy.load({package!r})\n"
        "doc = nlp('马云在阿里巴巴杭州总部发表演讲')\n"
        "pipe = nlp.get_pipe('bilstm_crf_ner')\n"
        "print(json.dumps({\n"
        "    'is_doc': isinstance(doc, Doc), 'ents_is_tuple': isinstance(doc.ents, tuple),\n"
        "    'text': doc.text, 'pipe_names': nlp.pipe_names, 'prefix': sys.prefix,\n"
        f"    'package': importlib.import_module({package!r}).__file__,\n"
        "    'component': sys.modules[type(pipe).__module__].__file__,\n"
        "    'plugin': importlib.import_module('spacy_bilstm_crf').__file__,\n"
        "    'license': nlp.meta.get('license'), 'sources': nlp.meta.get('sources'),\n"
        "}))\n"
    )
    # -I: no PYTHON* variables, no user site-packages, no script/cwd directory on sys.path.
    result = subprocess.run([str(python), "-I", "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["venv"] = str(venv.resolve())
    return info


@pytest.mark.slow
def test_project_run_all_smoke(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    source = sample_source(tmp_path / "cluener")
    env = quiet_env(tmp_path)
    args = ["--vars.cluener_dir", str(source), "--vars.train_overrides", SMOKE_TRAIN_OVERRIDES]
    args += ["--vars.component_dir", str(REPO)]  # the project copy holds no source tree
    result = run_project(project, "all", args, env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "--initialize.after_init.epochs 3" in result.stdout  # the overrides reached spacy train

    check_corpus(project)
    check_metrics(project)
    assert (project / "training" / "model-best" / "meta.json").exists()
    config = load_project(tmp_path / "loaded")
    package = f"{config['vars']['lang']}_{config['vars']['name']}"
    wheels = [project / output for output in package_command(config)["outputs"]]
    dist = wheels[0].parent
    assert sorted(dist.glob("*.whl")) == sorted(wheels), sorted(str(p.relative_to(project)) for p in dist.rglob("*"))
    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
        metadata = zf.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode("utf8")
    assert "MIT AND Apache-2.0" in metadata and "Requires-Dist: spacy-bilstm-crf" in metadata
    assert any(name.endswith("LICENSES_SOURCES") for name in names), names

    # Unchanged inputs: every step but data is skipped.
    again = run_project(project, "all", args, env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    for name in ("convert", "train", "evaluate", "package"):
        assert f"Skipping '{name}': nothing changed" in plain(again.stdout), name

    # What a clean machine does: torch, then every wheel in dist/ (the pipeline's
    # requirement on spacy-bilstm-crf is met by the wheel on the same command line).
    loaded = install_in_clean_venv(tmp_path, wheels, package)
    assert loaded["is_doc"] and loaded["ents_is_tuple"]
    assert loaded["text"] == "马云在阿里巴巴杭州总部发表演讲"
    assert "bilstm_crf_ner" in loaded["pipe_names"]
    assert Path(loaded["prefix"]).resolve() == Path(loaded["venv"])
    for key in ("package", "component", "plugin"):  # imported from the venv, not the checkout
        path = Path(loaded[key]).resolve()
        assert Path(loaded["venv"]) in path.parents and REPO not in path.parents, (key, path)
    # The installed pipeline declares what configs/meta.json says its parts are under.
    assert loaded["license"] == json.loads((REPO / "configs" / "meta.json").read_text("utf8"))["license"]
    assert CLUENER_REPO_URL in [source.get("url") for source in loaded["sources"]]
