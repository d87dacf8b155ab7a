"""spacy-bilstm-crf: a batched, constrained BiLSTM-CRF named-entity recognizer for spaCy.

The names below are imported on first use (PEP 562), so that importing a
submodule that needs neither spaCy nor thinc (``spacy_bilstm_crf.serving``,
``spacy_bilstm_crf.network``) does not import them. spaCy still finds the
component without an import: ``pyproject.toml``'s entry points name the
submodules (``spacy_bilstm_crf.pipe``, ...) directly.

The package's folders (see ``docs/ARCHITECTURE.md``): ``network/`` (the pure-torch
network), ``features/``, ``component/`` (thinc glue, integrity, serialization),
``prediction/`` (windows, confidence, the plan of a batch), ``serving/`` (exports,
INT8, packages), ``training/``, ``evaluation/``, ``corpus/``, ``annotate/`` and
``cli/``; ``pipe.py`` is the spaCy component.
"""
import importlib
from typing import TYPE_CHECKING, Any, Dict, List

from .about import __version__

if TYPE_CHECKING:  # for type checkers and IDEs: the names, without the imports at runtime
    from .component.architectures import build_bilstm_crf
    from .pipe import BiLSTMCRFNER, make_bilstm_crf_ner
    from .training.schedules import cosine_warm_restarts

# Exported name → the submodule that defines it.
_LAZY: Dict[str, str] = {
    "BiLSTMCRFNER": "pipe",
    "build_bilstm_crf": "component.architectures",
    "cosine_warm_restarts": "training.schedules",
    "make_bilstm_crf_ner": "pipe",
}

__all__ = ["__version__", "BiLSTMCRFNER", "build_bilstm_crf", "cosine_warm_restarts", "make_bilstm_crf_ner"]


def __getattr__(name: str) -> Any:
    """Import an exported name's submodule when the name is first used.

    RAISES (AttributeError): ``name`` is not exported by the package.
    """
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
