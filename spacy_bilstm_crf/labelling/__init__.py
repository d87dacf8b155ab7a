"""The labelling loop: choose what to label next, hand it to an annotation tool, read it back.

- ``selection``: rank unlabelled records by the CRF's exact uncertainty (or at
  random), skipping near-duplicates and keeping a batch varied;
- ``pool``: score an unlabelled pool with a pipeline (entities, their
  probabilities, each text's uncertainty);
- ``label_studio`` and ``doccano``: tasks with pre-annotations out, annotations
  back to a DocBin, unreviewed text left missing (partial labels); ``tasks``: what
  both share (records in, docs with missing tokens out).

May import: ``prediction`` (the measures), ``annotate`` (records in and out), spaCy.
"""
