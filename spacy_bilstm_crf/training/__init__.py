"""Training helpers registered for configs.

``training_plan`` (the ``spacy-bilstm-crf.scale_training.v1`` callback that sizes
steps and evaluation to the corpus) and ``schedules`` (the
``spacy-bilstm-crf.cosine_warm_restarts.v1`` learning-rate schedule). Modules here
may import spaCy, thinc and the component. Nothing is imported by this file.
"""
