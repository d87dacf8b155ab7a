"""Serving and export: a trained pipeline as files that torch alone, or ONNX Runtime, can run.

``tagger`` loads and runs an export with torch and the standard library only (no
spaCy, thinc or numpy); ``deploy`` writes exports and INT8 pipelines, ``quantize``
is the INT8 quantization of the network, and ``packaging`` builds an installable
spaCy package with its licenses. ``tagger`` and ``quantize`` import torch alone
(``tagger`` also ``prediction.windows``); ``deploy`` and ``packaging`` may import
spaCy and the component. ``onnx_export`` writes an ONNX export (torch, onnx and
onnxscript), which ``onnx_tagger`` serves with onnxruntime and numpy alone (no torch).
``export_format`` is what both taggers share (``tagger.json``, tokens, windows): the
standard library only.

``from spacy_bilstm_crf.serving import Tagger`` imports ``tagger`` only: this file
imports nothing that needs spaCy, thinc or numpy.
"""
from .tagger import FORMAT, FORMAT_VERSION, META_FILE, ExportError, Tagger, char_tokens

__all__ = ["ExportError", "FORMAT", "FORMAT_VERSION", "META_FILE", "Tagger", "char_tokens"]
