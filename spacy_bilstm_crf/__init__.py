"""spacy-bilstm-crf: a batched, constrained BiLSTM-CRF named-entity recognizer for spaCy."""
from .about import __version__
from .architectures import build_bilstm_crf
from .pipe import BiLSTMCRFNER, make_bilstm_crf_ner
from .schedules import cosine_warm_restarts

__all__ = ["__version__", "BiLSTMCRFNER", "build_bilstm_crf", "cosine_warm_restarts", "make_bilstm_crf_ner"]
