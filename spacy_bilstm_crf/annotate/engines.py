"""What an engine is: it maps batches of texts to their annotations, in order.

Reading, sharding and writing are the same for every engine (see `core`); an
engine only decides where the batches are tagged: `local_engine` (this machine)
or `ray_engine` (a Ray cluster). Every engine tags each batch it is given as one
batch, with the run's `scoring.ScoreSettings` applied to its own copy of the
pipeline (see `tagging`), so all engines give the same entities and scores.
"""
from typing import Iterator, List, Protocol

from .entities import Annotation

ENGINES = ("local", "ray")
FORMATS = ("jsonl", "parquet")

Batch = List[str]
# Each text's entities (and with scoring, candidates and uncertainty): `entities.doc_annotation`.
BatchAnnotations = List[Annotation]


class Engine(Protocol):
    """Tags non-empty batches of texts, in order, and releases what it holds on close."""

    name: str

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchAnnotations]:
        ...

    def close(self) -> None:
        ...
