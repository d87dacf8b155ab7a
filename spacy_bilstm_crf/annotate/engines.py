"""What an engine is: it maps batches of texts to their entities, in order.

Reading, sharding and writing are the same for every engine (see `core`); an
engine only decides where the batches are tagged: `local_engine` (this machine)
or `ray_engine` (a Ray cluster). Every engine tags each batch it is given as one
batch (see `tagging`), so all engines give the same entities.
"""
from typing import Iterator, List, Protocol

from .entities import Entity

ENGINES = ("local", "ray")
FORMATS = ("jsonl", "parquet")

Batch = List[str]
BatchEntities = List[List[Entity]]


class Engine(Protocol):
    """Tags non-empty batches of texts, in order, and releases what it holds on close."""

    name: str

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchEntities]:
        ...

    def close(self) -> None:
        ...
