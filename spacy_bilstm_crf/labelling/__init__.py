"""The labelling loop: choose what to label next, hand it to an annotation tool, read it back.

- ``selection``: rank unlabelled records by the CRF's exact uncertainty (or at
  random), skipping near-duplicates and keeping a batch varied;
- ``label_studio`` and ``doccano``: tasks with pre-annotations out, annotations
  back to a DocBin, unreviewed text left missing (partial labels).

May import: ``prediction`` (the measures), ``annotate`` (records in and out), spaCy.
"""
