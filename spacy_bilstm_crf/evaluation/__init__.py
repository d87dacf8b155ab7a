"""Evaluation: spaCy's scorer and seqeval on the same docs, the report, calibration.

``report`` runs a pipeline over gold docs and scores its entities (spaCy's scorer
and seqeval, which must agree), writes the markdown/JSON report and the displaCy
pages; ``calibration`` measures how well entity confidence scores are calibrated.
Modules here may import spaCy and ``prediction``; not ``pipe``, whose component they
see only as a spaCy pipe. ``from spacy_bilstm_crf.evaluation import evaluate`` keeps
working: the names below are ``report``'s, imported on first use.
"""
import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    """A name of ``report`` (the module that was ``spacy_bilstm_crf.evaluation``).

    RAISES (AttributeError): ``report`` has no such name.
    """
    if name.startswith("__"):  # probes such as __wrapped__ must not import spaCy
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    report = importlib.import_module(".report", __name__)
    try:
        return getattr(report, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
