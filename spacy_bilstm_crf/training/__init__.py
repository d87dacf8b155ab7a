"""Training helpers registered for configs.

``training_plan`` (the ``spacy-bilstm-crf.scale_training.v1`` callback that sizes
steps and evaluation to the corpus) and ``schedules`` (the
``spacy-bilstm-crf.cosine_warm_restarts.v1`` learning-rate schedule), the checks of
``[training]`` that the component and the callback share (``settings``), and the
gold tags of an example over its characters (``gold``, used by ``update``). Modules
here may import spaCy, thinc, ``features`` and ``network``; not ``pipe``. Nothing is
imported by this file.
"""
