"""Evaluation report (the ``evaluate`` command)."""
from ._util import app  # noqa: F401
