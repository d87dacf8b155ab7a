"""The plan of a batch at prediction time, with no spaCy import.

``windows`` cuts long texts into overlapping windows and stitches their spans back
(shared by the component and by an export's ``serving.tagger``, next to which
``windows.py`` can be copied), ``confidence`` scores candidate entities from the
CRF's lattice, and ``plan`` makes, for a batch of texts, the windows, the pre-set
and blocked tokens, the lattices and the stitched entities with their confidence:
the component calls it once per batch. ``windows`` and ``confidence`` import numpy
and the standard library only; ``plan`` also reads the network through the thinc
glue (``component.architectures``) and docs as ``features.chars.DocChars``. None
imports ``pipe``. Nothing is imported by this file.
"""
