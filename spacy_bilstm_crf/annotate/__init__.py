"""Annotate corpora of any size: records in, entities out, as resumable shards.

The same core runs on two engines: `local` (`nlp.pipe`, in one or more processes)
and `ray` (Ray Data actors, on a local or a running cluster).

The names below are imported on first use: importing this package (as the CLI
does to register its commands) must not import spaCy, torch or Ray.
"""
from typing import Any

__all__ = ["AnnotateSummary", "annotate", "RAY_INSTALL_HINT", "require_ray"]

_SOURCES = {
    "AnnotateSummary": "core",
    "annotate": "core",
    "RAY_INSTALL_HINT": "ray_engine",
    "require_ray": "ray_engine",
}


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
