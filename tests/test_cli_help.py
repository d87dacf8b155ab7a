"""``python -m spacy_bilstm_crf --help`` (and each command's ``--help``) answers without
importing torch, spaCy or the other heavy libraries: they are imported when a command runs."""
import re
import subprocess
import sys
from typing import List

import pytest
import typer

HEAVY = ("torch", "spacy", "thinc", "numba", "ray", "pyarrow", "seqeval")


def _imported(args: List[str]) -> List[str]:
    """RETURNS (List[str]): The top-level packages that ``python -m spacy_bilstm_crf ARGS`` imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "spacy_bilstm_crf", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Usage" in result.stdout
    # -X importtime writes "import time: <self> | <cumulative> | <indented module name>".
    names = re.findall(r"^import time:\s*\d+ \|\s*\d+ \|\s*([\w.]+)", result.stderr, flags=re.M)
    assert names, result.stderr[-2000:]
    return sorted({name.split(".")[0] for name in names})


def _commands() -> List[str]:
    from spacy_bilstm_crf.cli import app

    return sorted(typer.main.get_command(app).commands)


def test_help_imports_no_heavy_library() -> None:
    imported = _imported(["--help"])
    assert "spacy_bilstm_crf" in imported
    assert [name for name in HEAVY if name in imported] == []


@pytest.mark.parametrize("command", _commands())
def test_each_commands_help_imports_no_heavy_library(command: str) -> None:
    imported = _imported([command, "--help"])
    assert [name for name in HEAVY if name in imported] == []
