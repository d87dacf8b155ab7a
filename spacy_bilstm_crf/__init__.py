"""spacy-bilstm-crf: a batched, constrained BiLSTM-CRF named-entity recognizer for spaCy."""
from .about import __version__

__all__ = ["__version__"]
