"""The glue between spaCy/thinc and the network, and the component's saved state.

``architectures`` holds the registered thinc architectures that wrap
``network.model.BiLSTMCRF`` (``spacy-bilstm-crf.BiLSTMCRF.v1``/``v2``), with
``torch_shim``, thinc's PyTorch shim that updates the weights in place;
``integrity`` checks a saved component's weights and table sizes;
``serialization`` writes and reads the component's files (``to_disk``/``from_disk``
and the loaders of older layouts). The spaCy component itself is ``pipe.py`` at the
top of the package, which calls these. Modules here may import ``network``,
``features``, ``serving.quantize``, spaCy and thinc; not ``pipe`` (``serialization``
is given the component it works on). Nothing is imported by this file.
"""
