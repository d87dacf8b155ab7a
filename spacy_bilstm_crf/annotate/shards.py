"""The shard plan and the output directory's layout, markers and atomic writes.

Shard i holds records [i * shard_size, (i + 1) * shard_size) of the ordered input,
rejects included, so the plan depends only on the input and the shard size: a
re-run finds the same shards under the same names. A shard is finished when its
marker exists; the marker is written last, after the shard's data, each by
writing a temp file and renaming it, so a run killed at any point leaves
finished shards whole and unfinished ones to be redone.
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from .inputs import Item, Record, Reject

STATE_DIR = "_shards"
REJECTS_FILE = "_rejects.jsonl"
SUMMARY_FILE = "_summary.json"
PLAN_FILE = "plan.json"
OUTPUT_SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}


@dataclass
class Shard:
    """One shard of the input.

    index (int): Its number, from 0.
    items (List[Item]): Its usable records, in input order.
    rejects (List[Reject]): Its rejected records, in input order.
    """

    index: int
    items: List[Item] = field(default_factory=list)
    rejects: List[Reject] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        """RETURNS (int): Records of the input in this shard, rejects included."""
        return len(self.items) + len(self.rejects)


def plan_shards(records: Iterable[Record], shard_size: int) -> Iterator[Shard]:
    """Cut the ordered input into shards of `shard_size` records.

    records (Iterable[Union[Item, Reject]]): The input, in order.
    shard_size (int): Records per shard; the last shard may have fewer.
    YIELDS (Shard): The shards, in order. An empty input gives none.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, not {shard_size}")
    shard = Shard(0)
    for record in records:
        if isinstance(record, Reject):
            shard.rejects.append(record)
        else:
            shard.items.append(record)
        if shard.n_records == shard_size:
            yield shard
            shard = Shard(shard.index + 1)
    if shard.n_records:
        yield shard


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file so that it either exists whole or not at all.

    path (Path): The file to write.
    write (Callable[[Path], None]): Writes the content to the path it is given.
    """
    # A dot name: ignored by readers of the directory (Arrow, Spark, resolve_inputs).
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Layout:
    """Where everything of one run goes in the output directory.

    output (Path): The output directory.
    fmt (str): The output format, "jsonl" or "parquet".
    """

    def __init__(self, output: Path, fmt: str) -> None:
        if fmt not in OUTPUT_SUFFIXES:
            raise ValueError(f"Unknown output format {fmt!r}: use one of {', '.join(OUTPUT_SUFFIXES)}")
        self.output = output
        self.fmt = fmt
        self.state = output / STATE_DIR

    def part(self, index: int) -> Path:
        """RETURNS (Path): The data file of shard `index`."""
        return self.output / f"part-{index:05d}{OUTPUT_SUFFIXES[self.fmt]}"

    def docbin(self, index: int) -> Path:
        """RETURNS (Path): The DocBin file of shard `index`."""
        return self.output / f"part-{index:05d}.spacy"

    def marker(self, index: int) -> Path:
        """RETURNS (Path): The marker that says shard `index` is finished, with its counts."""
        return self.state / f"{index:05d}.json"

    def shard_rejects(self, index: int) -> Path:
        """RETURNS (Path): The rejects of shard `index`."""
        return self.state / f"{index:05d}.rejects.jsonl"

    @property
    def rejects(self) -> Path:
        """RETURNS (Path): The rejects of the whole run, one JSON object per line."""
        return self.output / REJECTS_FILE

    @property
    def summary(self) -> Path:
        """RETURNS (Path): The counts of the whole run, as JSON."""
        return self.output / SUMMARY_FILE

    def ours(self) -> List[Path]:
        """RETURNS (List[Path]): The files of a run in the output directory."""
        names = ("part-*", ".part-*", f".{REJECTS_FILE}.tmp-*", f".{SUMMARY_FILE}.tmp-*")
        found = [p for pattern in names for p in self.output.glob(pattern)]
        found += [p for p in (self.rejects, self.summary) if p.exists()]
        return found + (sorted(self.state.iterdir()) if self.state.exists() else [])

    def prepare(self, plan: Dict[str, Any], overwrite: bool) -> None:
        """Create the directory, or check that it holds a run of the same plan.

        plan (Dict[str, Any]): What decides the shards' content (input files, settings).
        overwrite (bool): Delete an earlier run's files instead of resuming it.
        """
        plan_path = self.state / PLAN_FILE
        if overwrite:
            for path in self.ours():
                path.unlink()
        elif plan_path.exists():
            previous = json.loads(plan_path.read_text(encoding="utf8"))
            if previous != plan:
                changed = sorted(k for k in set(plan) | set(previous) if plan.get(k) != previous.get(k))
                raise ValueError(
                    f"{self.output} holds a run with a different {', '.join(changed)}: "
                    "resuming it would mix two runs. Use another output directory or overwrite."
                )
        elif any(self.output.glob("part-*")):
            raise ValueError(f"{self.output} holds shards of an unknown run: use another directory or overwrite.")
        self.state.mkdir(parents=True, exist_ok=True)
        # Temp files of a killed run: never renamed, so never part of the output.
        for tmp in list(self.output.glob(".*.tmp-*")) + list(self.state.glob(".*.tmp-*")):
            tmp.unlink()
        atomic_write(plan_path, lambda p: p.write_text(json.dumps(plan, indent=2), encoding="utf8"))

    def finished(self, index: int) -> Optional[Dict[str, Any]]:
        """The counts of shard `index` if it is finished.

        index (int): The shard.
        RETURNS (Optional[Dict[str, Any]]): Its marker's content, or None.
        """
        marker = self.marker(index)
        if not marker.exists():
            return None
        return json.loads(marker.read_text(encoding="utf8"))
