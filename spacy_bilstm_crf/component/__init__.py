"""The glue between spaCy/thinc and the network, and the component's saved state.

``architectures`` holds the registered thinc architectures that wrap
``network.model.BiLSTMCRF`` (``spacy-bilstm-crf.BiLSTMCRF.v1``/``v2``), with
``torch_shim``, thinc's PyTorch shim that updates the weights in place;
``network_build`` builds the tables (characters, lexicon, gazetteer) and the
network at ``initialize``; ``annotations`` puts predicted entities onto docs
(``set_annotations``); ``serialization`` writes and reads the component's files
(``to_disk``/``from_disk`` and the loaders of older layouts), checked by
``integrity`` (weights and table sizes). The spaCy component itself is ``pipe.py``
at the top of the package, which calls these. Modules here may import ``network``,
``features``, ``prediction``, ``serving.quantize``, spaCy and thinc; not ``pipe``
(the functions are given the component they work on). Nothing is imported by this
file.
"""
