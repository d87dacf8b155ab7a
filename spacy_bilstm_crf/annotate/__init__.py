"""Annotate corpora of any size: records in, entities out, as resumable shards.

The same core runs on two engines: `local` (`nlp.pipe`, in one or more processes)
and `ray` (Ray Data actors, on a local or a running cluster).
"""
from .core import AnnotateSummary, annotate
from .ray_engine import RAY_INSTALL_HINT, require_ray

__all__ = ["AnnotateSummary", "annotate", "RAY_INSTALL_HINT", "require_ray"]
