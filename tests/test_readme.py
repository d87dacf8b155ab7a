"""The README's code blocks run as shown, each in a process of its own."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str):
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def ini_blocks(markdown: str):
    return re.findall(r"```ini\n(.*?)```", markdown, flags=re.S)


def test_every_config_block_fills_and_builds(tmp_path: Path) -> None:
    """Each ```ini block is a config of its own: ``spacy init fill-config`` completes it
    as the README says, and the completed config builds a pipeline. A v2 model block
    that names no settings gets the benchmarked network."""
    from spacy.util import load_config, load_model_from_config

    from spacy_bilstm_crf.pipe import DEFAULT_MODEL

    blocks = ini_blocks((REPO / "README.md").read_text(encoding="utf8"))
    assert blocks
    for number, block in enumerate(blocks):
        given, filled = tmp_path / f"block{number}.cfg", tmp_path / f"filled{number}.cfg"
        given.write_text(block, encoding="utf8")
        result = subprocess.run(
            [sys.executable, "-m", "spacy", "init", "fill-config", str(given), str(filled)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, block + result.stdout[-3000:] + result.stderr[-3000:]
        nlp = load_model_from_config(load_config(filled), auto_fill=True, validate=True)
        ner = nlp.get_pipe("bilstm_crf_ner")
        model = dict(nlp.config["components"]["bilstm_crf_ner"]["model"])
        assert {key: model[key] for key in DEFAULT_MODEL if not key.startswith("@")} == {
            key: value for key, value in DEFAULT_MODEL.items() if not key.startswith("@")
        }
        if "tok2vec" in nlp.pipe_names:
            assert nlp.get_pipe("tok2vec").listening_components == ["bilstm_crf_ner"]
            assert ner.model.get_ref("tok2vec") is not None


def test_first_code_block_runs_and_finds_the_entities(tmp_path: Path) -> None:
    first = python_blocks((REPO / "README.md").read_text(encoding="utf8"))[0]
    result = subprocess.run(
        [sys.executable, "-c", first], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "('马云', 'name')" in result.stdout and "('阿里巴巴', 'company')" in result.stdout


def test_pipeline_section_blocks_run(tmp_path: Path, trained_nlp) -> None:
    """The python blocks of "In a spaCy pipeline" run against a trained pipeline."""
    readme = (REPO / "README.md").read_text(encoding="utf8")
    section = readme.split("## In a spaCy pipeline", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert len(blocks) == 4
    model = tmp_path / "model-best"
    trained_nlp.to_disk(model)
    for block in blocks:
        code = block.replace('"training/model-best"', repr(str(model)))
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "partial.spacy").exists()


def test_documented_extras_exist() -> None:
    """Every ``pip install -e ".[...]"`` extra that the README names is in pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    readme = (REPO / "README.md").read_text(encoding="utf8")
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf8"))["project"]["optional-dependencies"])
    named = {extra for group in re.findall(r'\[([a-z,]+)\]"', readme) for extra in group.split(",")}
    named |= set(re.findall(r"^\| `\[(\w+)\]` \|", readme, flags=re.M))
    assert {"evaluate", "project", "parquet", "ray", "test"} <= named
    assert named <= declared, sorted(named - declared)


def test_init_config_command_gives_a_chinese_pipeline(tmp_path: Path) -> None:
    """The README's ``spacy init config`` line, run as written."""
    readme = (REPO / "README.md").read_text(encoding="utf8")
    (command,) = re.findall(r"`(python -m spacy init config [^`]+)`", readme.replace("\n  ", " "))
    args = command.split()
    assert args[:5] == ["python", "-m", "spacy", "init", "config"]
    result = subprocess.run([sys.executable, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from spacy.util import load_config

    config = load_config(tmp_path / args[5])
    assert config["nlp"]["lang"] == "zh" and config["nlp"]["pipeline"] == ["bilstm_crf_ner"]


def test_set_up_installs_torch_cpu_build_first() -> None:
    """A plain ``pip install torch==X`` pulls the multi-GB CUDA build on Linux: the set-up's
    commands take the CPU index, before the package pulls torch in as a requirement."""
    readme = (REPO / "README.md").read_text(encoding="utf8")
    set_up = readme.split("## Set-up\n", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", set_up, flags=re.S)[0].splitlines()
    torch = next(i for i, line in enumerate(commands) if line.startswith("pip install torch=="))
    package = next(i for i, line in enumerate(commands) if line.startswith("pip install -e"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in commands[torch] and torch < package
    packaged = readme.split("**Using the packaged pipeline**", 1)[1]
    assert "download.pytorch.org/whl/cpu" in re.findall(r"```bash\n(.*?)```", packaged, flags=re.S)[0]
