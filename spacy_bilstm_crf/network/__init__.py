"""The network, in plain torch: no spaCy, no thinc (a test imports it with both blocked).

``model.BiLSTMCRF`` (embeddings of characters, bigrams and character classes, the
soft-lexicon, gazetteer and LAC features, the BiLSTM and the projection to tag
scores), the batched and constrained CRF (``crf``), the packed recurrence
(``recurrence``), the numba kernels (``kernels``), the torch feature modules that
read lexicon and gazetteer matches (``lexicon``, ``gazetteer``), the tag scheme
(``tags``), code-point normalization (``codepoints``) and the LAC encoder
(``lac/``). Modules here import torch, numpy, numba and each other; the only import
from outside is the Viterbi of ``serving.tagger``, which is torch alone, so that the
CRF and an export decode with the same code. Nothing is imported by this file.
"""
