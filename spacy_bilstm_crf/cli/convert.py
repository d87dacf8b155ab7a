"""CLUE JSON / char-per-line corpora → DocBin (the ``convert`` command)."""
from ._util import app  # noqa: F401
