__title__ = "spacy-bilstm-crf"
__version__ = "0.1.0"
