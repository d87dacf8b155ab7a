"""The package's layout keeps its promises: the network is plain torch, serving needs
neither spaCy nor thinc, and the top level holds only subpackages and the public face."""
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_bilstm_crf"

BLOCKED_IMPORT = """
import importlib, pkgutil, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("spacy", "thinc"):
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, Blocked())
import spacy_bilstm_crf.network as network
names = [info.name for info in pkgutil.walk_packages(network.__path__, "spacy_bilstm_crf.network.")]
for name in names:
    importlib.import_module(name)
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in ("spacy", "thinc")))
"""


def test_the_network_imports_neither_spacy_nor_thinc() -> None:
    """Every module of ``network/`` (``lac/`` included) imports with spaCy and thinc blocked."""
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    count, loaded = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) >= 10 and loaded == "[]"


def test_the_top_level_holds_subpackages_and_the_public_face() -> None:
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "about.py", "pipe.py"]
    for package in (path for path in PACKAGE.iterdir() if (path / "__init__.py").exists()):
        docstring = (package / "__init__.py").read_text(encoding="utf8").lstrip()
        assert docstring.startswith('"""'), f"{package.name}/__init__.py has no docstring"
