"""Features: what the network reads, made from spaCy docs and word lists.

The characters of a ``Doc`` as code points and gold tags (``chars``), the lexicon's
and the gazetteer's tables built from word lists and training data
(``lexicon_table``, ``gazetteer_table``), and the character tokenizer registered for
configs (``tokenizer``). Modules here may import ``network`` (its tag scheme, code
points and torch feature modules) and spaCy; never the component (``pipe``) or
``component``. Nothing is imported by this file.
"""
