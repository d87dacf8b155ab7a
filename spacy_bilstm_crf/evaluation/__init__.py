"""Evaluation: spaCy's scorer and seqeval on the same docs, the report, calibration.

``scoring`` runs a pipeline over gold docs and scores its entities (spaCy's scorer
and seqeval, which must agree), ``report`` renders the markdown report and the
displaCy pages, ``calibration`` measures how well entity confidence scores are
calibrated.
Modules here may import spaCy and ``prediction``; not ``pipe``, whose component they
see only as a spaCy pipe. ``from spacy_bilstm_crf.evaluation import evaluate`` keeps
working (it was one module): a name of ``scoring`` or ``report`` is imported from
there on first use.
"""
import importlib
from typing import Any

_MISSING = object()


def __getattr__(name: str) -> Any:
    """A name of ``scoring`` or ``report`` (the module that was ``spacy_bilstm_crf.evaluation``).

    RAISES (AttributeError): neither has such a name.
    """
    if name.startswith("__"):  # probes such as __wrapped__ must not import spaCy
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for module in ("scoring", "report"):
        value = getattr(importlib.import_module(f".{module}", __name__), name, _MISSING)
        if value is not _MISSING:
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
