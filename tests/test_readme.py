"""The README's first code block runs as shown, in a process of its own."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str):
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


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
