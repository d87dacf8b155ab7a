"""The shard plan and the output directory's layout, markers and atomic writes.

Shard i holds records [i * shard_size, (i + 1) * shard_size) of the ordered input,
rejects included, so the plan depends only on the input and the shard size: a
re-run finds the same shards under the same names. A shard is finished when its
marker exists; the marker is written last, after the shard's data, each by
writing a temp file, syncing it to disk and renaming it, so a run killed at any
point (a power loss included) leaves finished shards whole and unfinished ones to
be redone. One run at a time holds an output directory (see `OutputLock`).
"""
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Type

from .inputs import Item, Record, Reject

STATE_DIR = "_shards"
REJECTS_FILE = "_rejects.jsonl"
SUMMARY_FILE = "_summary.json"
PLAN_FILE = "plan.json"
LOCK_FILE = "_annotate.lock"
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
        # On disk before the rename: otherwise a power loss can leave the new name
        # (a marker, say) pointing at a file whose data never reached the disk.
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk.

    path (Path): A file or a directory.
    """
    if path.is_dir() and os.name == "nt":
        return  # Windows cannot open a directory to sync it; NTFS journals renames
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputInUseError(RuntimeError):
    """Another run holds the output directory."""


class OutputLock:
    """Holds an output directory for one run: a second run on it is refused.

    The lock is an OS lock on OUTPUT/_annotate.lock (`flock`; `msvcrt.locking` on
    Windows), which the OS releases when the process ends, however it ends: a
    lock file left by a killed run is taken over, never in the way. The file
    names the holder (host and process id), for the message of a refused run.

    output (Path): The output directory; created if missing.
    """

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK_FILE
        self.file: Optional[IO[str]] = None

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a+": never truncate a lock file that another run holds and has written.
        handle = self.path.open("a+", encoding="utf8")
        try:
            lock_file(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputInUseError(
                f"{self.path.parent} is in use by another annotate run ({holder}; lock: {self.path}). "
                "Wait for it to finish, or use another output directory."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self.file = handle
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self.file is not None:
            # The file stays: deleting it could race with a run that just opened it.
            unlock_file(self.file)
            self.file.close()
            self.file = None


def lock_file(handle: IO[str]) -> None:
    """Take an exclusive lock on an open file without waiting; OSError if it is held."""
    _os_lock(handle, acquire=True)


def unlock_file(handle: IO[str]) -> None:
    """Release the lock of `lock_file`."""
    _os_lock(handle, acquire=False)


def _os_lock(handle: IO[str], acquire: bool) -> None:
    """Take (without waiting) or release the OS's exclusive lock on an open file."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        mode = msvcrt.LK_NBLCK if acquire else msvcrt.LK_UNLCK  # type: ignore[attr-defined]
        msvcrt.locking(handle.fileno(), mode, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(handle.fileno(), (fcntl.LOCK_EX | fcntl.LOCK_NB) if acquire else fcntl.LOCK_UN)


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
            problem = plan_mismatch(self.output, previous, plan)
            if problem is not None:
                raise ValueError(problem)
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


def plan_mismatch(output: Path, previous: Dict[str, Any], plan: Dict[str, Any]) -> Optional[str]:
    """Why an output directory cannot be resumed with a plan, or None if it can.

    The model is compared by its digest, not its path: the same model moved
    elsewhere may resume a run, another model saved at the same path may not.

    output (Path): The output directory.
    previous (Dict[str, Any]): The plan it was written with.
    plan (Dict[str, Any]): This run's plan.
    RETURNS (Optional[str]): The message (what differs, what to do), or None.
    """
    advice = "Use another output directory, or --overwrite to redo every shard."
    if "model_digest" not in previous:
        return (
            f"{output} was written by an older version that did not record its model's digest: "
            f"it cannot be checked that {plan['model']} is still the same model. {advice}"
        )
    keys = (set(plan) | set(previous)) - {"model"}
    changed = sorted(k for k in keys if plan.get(k) != previous.get(k))
    if not changed:
        return None
    if "model_digest" in changed:
        others = [k for k in changed if k != "model_digest"]
        also = f" (and a different {', '.join(others)})" if others else ""
        return (
            f"{output} was tagged with another model than {plan['model']} is now{also}: its files "
            f"changed since (digest {previous['model_digest']}, now {plan['model_digest']}), and "
            f"resuming would mix the entities of two models. {advice}"
        )
    return f"{output} holds a run of other settings (changed: {', '.join(changed)}): resuming it would mix two runs. {advice}"
