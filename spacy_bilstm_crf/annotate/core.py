"""Records in → batches → entities → shards out, the same for every engine."""
import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple, Union

import spacy
from spacy.language import Language
from tqdm import tqdm

from .engines import ENGINES, FORMATS, Batch, BatchAnnotations, Engine
from .entities import CANDIDATES_FIELD, UNCERTAINTY_FIELD, Annotation
from .identity import model_digest
from .inputs import Item, Reject, input_identity, read_records, require_pyarrow, resolve_inputs
from .local_engine import LocalEngine
from .ray_engine import RayEngine, require_ray
from .schema import output_schema
from .scoring import ScoreSettings, resolve_settings, scoring_components
from .shards import Layout, OutputLock, Shard, atomic_write, plan_shards
from .writers import parquet_table, write_docbin, write_jsonl, write_parquet, write_rejects


@dataclass
class AnnotateSummary:
    """The counts of a run (all shards, resumed ones included) and this run's speed.

    records_in (int): Records read from the input.
    records_out (int): Records written with their entities.
    rejects (int): Records written to the rejects file instead.
    entities (int): Entities found.
    chars (int): Characters of the tagged texts.
    shards (int): Shards of the output.
    shards_resumed (int): Shards finished by an earlier run and kept.
    seconds (float): Wall time of this run.
    records_per_second (float): Records tagged by this run per second.
    chars_per_second (float): Characters tagged by this run per second.
    engine (str): "local" or "ray".
    output (str): The output directory.
    """

    records_in: int
    records_out: int
    rejects: int
    entities: int
    chars: int
    shards: int
    shards_resumed: int
    seconds: float
    records_per_second: float
    chars_per_second: float
    engine: str
    output: str

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The summary as JSON-ready data."""
        return asdict(self)


def output_format(output: Path, fmt: Optional[str]) -> str:
    """The output format: given, or from the output directory's extension, or JSON lines.

    output (Path): The output directory, e.g. "tagged.parquet" or "tagged".
    fmt (Optional[str]): "jsonl", "parquet" or None.
    RETURNS (str): The format.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    return "parquet" if output.suffix.lower() in (".parquet", ".pq") else "jsonl"


def chunks(texts: List[str], size: int) -> List[Batch]:
    """RETURNS (List[List[str]]): `texts` in batches of at most `size`."""
    return [texts[i : i + size] for i in range(0, len(texts), size)]


class ShardWriter:
    """Writes finished shards: data, DocBin, rejects, then the marker.

    layout (Layout): The output directory.
    text_key (str): The records' text field.
    entities_key (str): The field the entities are written to.
    schema (Optional[pyarrow.Schema]): The output schema of every Parquet shard (see `schema`).
    docbin_nlp (Optional[Language]): A pipeline whose tokenizer makes the DocBin shards, or None for none.
    settings (Optional[ScoreSettings]): What was scored: which fields are written.
    spans_key (Optional[str]): The component's span group, put on the DocBin's docs; None: none.
    """

    def __init__(
        self,
        layout: Layout,
        text_key: str,
        entities_key: str,
        schema: Optional[Any],
        docbin_nlp: Optional[Language],
        settings: Optional[ScoreSettings] = None,
        spans_key: Optional[str] = None,
    ) -> None:
        self.layout = layout
        self.text_key = text_key
        self.entities_key = entities_key
        self.schema = schema
        self.docbin_nlp = docbin_nlp
        self.spans_key = spans_key
        # The fields besides the entities, in the order they are written.
        self.extra_fields: List[str] = []
        if settings is not None and settings.threshold is not None:
            self.extra_fields.append(CANDIDATES_FIELD)
        if settings is not None and settings.uncertainty:
            self.extra_fields.append(UNCERTAINTY_FIELD)

    def row(self, record: Dict[str, Any], annotation: Annotation) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): A record with its annotation's fields (replacing any of the same name)."""
        row = {**record, self.entities_key: annotation["entities"]}
        for name in self.extra_fields:
            row[name] = annotation.get(name)
        return row

    def write(self, shard: Shard, annotations: List[Annotation]) -> Dict[str, int]:
        """Write a shard and its marker.

        shard (Shard): The shard.
        annotations (List[Dict[str, Any]]): The annotations of its items, in order.
        RETURNS (Dict[str, int]): Its counts, as in the marker.
        """
        layout, index = self.layout, shard.index
        items, rejects = shard.items, shard.rejects
        if layout.fmt == "parquet":
            records = [item.record for item in items]
            entities = [a["entities"] for a in annotations]
            extra = {name: [a.get(name) for a in annotations] for name in self.extra_fields}
            table, misfits = parquet_table(records, entities, self.schema, self.entities_key, extra)
            if misfits:
                items, annotations, rejects = self.reject_misfits(shard, annotations, misfits)
            atomic_write(layout.part(index), lambda p: write_parquet(p, table))
        else:
            rows = [self.row(item.record, annotation) for item, annotation in zip(items, annotations)]
            atomic_write(layout.part(index), lambda p: write_jsonl(p, rows))
        if self.docbin_nlp is not None:
            texts = [item.text for item in items]
            nlp, key = self.docbin_nlp, self.spans_key
            atomic_write(layout.docbin(index), lambda p: write_docbin(p, nlp, texts, annotations, key))
        atomic_write(layout.shard_rejects(index), lambda p: write_rejects(p, rejects))
        counts = {
            "index": index,
            "records_in": shard.n_records,
            "records_out": len(items),
            "rejects": len(rejects),
            "entities": sum(len(a["entities"]) for a in annotations),
            "chars": sum(len(item.text) for item in items),
        }
        # Last: the marker is what makes the shard finished.
        atomic_write(layout.marker(index), lambda p: p.write_text(json.dumps(counts), encoding="utf8"))
        return counts

    @staticmethod
    def reject_misfits(
        shard: Shard, annotations: List[Annotation], misfits: List[Tuple[int, str]]
    ) -> Tuple[List[Item], List[Annotation], List[Reject]]:
        """Move the records that do not fit the Parquet schema to the shard's rejects.

        shard (Shard): The shard.
        annotations (List[Dict[str, Any]]): The annotations of its items.
        misfits (List[Tuple[int, str]]): (index into the items, reason) of each misfit.
        RETURNS (Tuple[List[Item], List[Dict], List[Reject]]): The items and
            annotations written, and the rejects, in input order.
        """
        reasons = dict(misfits)
        items = [item for i, item in enumerate(shard.items) if i not in reasons]
        kept = [annotation for i, annotation in enumerate(annotations) if i not in reasons]
        moved = [
            Reject(shard.items[i].source, shard.items[i].position, reason, shard.items[i].record)
            for i, reason in misfits
        ]
        rejects = sorted(shard.rejects + moved, key=lambda r: (r.source, r.position))
        return items, kept, rejects


def process(
    shards: Iterator[Shard],
    run_batches: Callable[[Iterator[Batch]], Iterator[BatchAnnotations]],
    batch_size: int,
    on_shard: Callable[[Shard, List[Annotation]], None],
    on_batch: Callable[[BatchAnnotations], None],
) -> None:
    """Stream the shards' texts through an engine and hand back each shard, whole, in order.

    shards (Iterator[Shard]): The shards to tag.
    run_batches (Callable): The engine: non-empty batches in, their annotations out, in order.
    batch_size (int): Texts per batch; a batch never spans two shards.
    on_shard (Callable[[Shard, List[Dict]], None]): Called with each shard and its annotations.
    on_batch (Callable[[List[str]], None]): Called with each batch once it is tagged.
    """
    # Shards whose batches have gone to the engine: [shard, batches still out, annotations so far].
    # The engine may read ahead; a shard is handed on only when all its batches are back.
    pending: Deque[List[Any]] = deque()

    def batches() -> Iterator[Batch]:
        for shard in shards:
            shard_batches = chunks([item.text for item in shard.items], batch_size)
            pending.append([shard, len(shard_batches), []])
            yield from shard_batches

    def flush_done() -> None:
        while pending and pending[0][1] == 0:
            shard, _, annotations = pending.popleft()
            on_shard(shard, annotations)

    results = run_batches(batches())
    try:
        for batch_annotations in results:
            flush_done()  # shards of rejects only: no batches, handed on in their turn
            entry = pending[0]
            entry[2].extend(batch_annotations)
            entry[1] -= 1
            on_batch(batch_annotations)
            flush_done()
        flush_done()
    finally:
        # On an error (or a hook that raises), stop the engine's work now: nlp.pipe's
        # worker processes are ended when its generator is closed.
        close = getattr(results, "close", None)
        if close is not None:
            close()


def annotate(
    model: Union[str, Path],
    input_path: Union[str, Path],
    output: Union[str, Path],
    *,
    text_key: str = "text",
    fmt: Optional[str] = None,
    engine: str = "local",
    n_process: int = 1,
    batch_size: int = 256,
    shard_size: int = 100_000,
    num_workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    address: Optional[str] = None,
    docbin: bool = False,
    entities_key: str = "entities",
    overwrite: bool = False,
    progress: bool = False,
    max_chars: Optional[int] = None,
    on_shard_written: Optional[Callable[[Dict[str, int]], None]] = None,
    confidence: Optional[bool] = None,
    threshold: Optional[float] = None,
    uncertainty: bool = False,
) -> AnnotateSummary:
    """Tag a corpus of any size and write it, with every record's entities, as shards.

    With a pipeline that has a bilstm_crf_ner component, each entity gets its
    probability (`score`) by default: the exact marginal of the CRF, the number
    `doc.spans[spans_key].attrs["scores"]` has with the component's `confidence`
    on (it costs about 5% more time in batches; review tools and selection need
    it). A pipeline without one tags without scores, and asking it for scores is
    an error. The component's own `confidence` default stays off.

    Re-running the same call after an interruption keeps the finished shards and
    redoes the others; the output is the same as that of an uninterrupted run (each
    shard is cut into the same batches). Resuming is refused when the input files'
    content, the model's files or a setting that decides the output changed, and
    while another run holds the output directory (OUTPUT/_annotate.lock).

    model (Union[str, Path]): A pipeline directory or installed package.
    input_path (Union[str, Path]): A JSON lines or Parquet file, a directory of them, or a glob.
    output (Union[str, Path]): The output directory: part-NNNNN.jsonl or .parquet shards,
        _rejects.jsonl and _summary.json.
    text_key (str): The records' text field; every other field is carried through.
    fmt (Optional[str]): "jsonl" or "parquet"; None: from the output's extension, else jsonl.
    engine (str): "local" (nlp.pipe) or "ray" (Ray Data).
    n_process (int): Processes of the local engine.
    batch_size (int): Texts per batch.
    shard_size (int): Input records per output shard.
    num_workers (int): Actors of the ray engine.
    cpus_per_worker (float): CPUs per actor.
    gpus_per_worker (float): GPUs per actor.
    address (Optional[str]): The Ray cluster to join; None starts a local one.
    docbin (bool): Also write each shard as a DocBin (part-NNNNN.spacy).
    entities_key (str): The field the entities are written to.
    overwrite (bool): Delete an earlier run's output instead of resuming it.
    progress (bool): Show a progress bar on stderr.
    max_chars (Optional[int]): Reject texts longer than this; None: tag texts of any
        length (spaCy's `nlp.max_length` is raised as needed: the component tags
        long texts in windows, its memory grows linearly with the text).
    on_shard_written (Optional[Callable[[Dict[str, int]], None]]): Called with each written
        shard's counts (for progress reporting, or to simulate a crash in tests).
    confidence (Optional[bool]): Write each entity's probability (`score`); None: when
        the pipeline has a bilstm_crf_ner component.
    threshold (Optional[float]): Also write, as the record's `candidates`, the other
        spans at least this probable (`start`, `end`, `label`, `text`, `score`).
    uncertainty (bool): Also write the record's `uncertainty`: `best_path`,
        `tag_errors`, `entity_errors` (see `prediction.uncertainty`).
    RETURNS (AnnotateSummary): The counts; also written to OUTPUT/_summary.json.
    RAISES (ValueError): Bad settings, scores asked of a pipeline without the
        component, or a resumed run of other settings.
    """
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size), ("max_chars", max_chars)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if engine == "ray":
        require_ray()  # the install hint comes before anything is read or loaded
    start = time.perf_counter()
    # Absolute: Ray's actors do not run in this directory. A package name stays as is.
    model = str(Path(model).resolve()) if Path(model).exists() else str(model)
    output = Path(output)
    layout = Layout(output, output_format(output, fmt))
    if layout.fmt == "parquet":
        require_pyarrow()  # before the run, not at its first shard
    files = resolve_inputs(input_path)
    digest = model_digest(model)  # before the lock: a missing model leaves no directory behind
    settings = resolve_settings(model, confidence, threshold, uncertainty)
    with OutputLock(output):
        schema = (
            output_schema(files, read_records(files, text_key, max_chars), text_key, entities_key, settings)
            if layout.fmt == "parquet"
            else None
        )
        plan = {
            "inputs": [input_identity(p) for p in files],
            "model": model,
            "model_digest": digest,
            "text_key": text_key,
            "entities_key": entities_key,
            "format": layout.fmt,
            "shard_size": shard_size,
            "batch_size": batch_size,
            "max_chars": max_chars,
            "docbin": docbin,
            # Other scores would give other fields: a resumed run must score the same.
            "scores": settings.to_dict(),
        }
        if schema is not None:
            plan["schema"] = schema.to_string(show_field_metadata=True)
        layout.prepare(plan, overwrite)
        summary = run(
            layout,
            files,
            model,
            engine=engine,
            text_key=text_key,
            entities_key=entities_key,
            schema=schema,
            n_process=n_process,
            batch_size=batch_size,
            shard_size=shard_size,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            address=address,
            docbin=docbin,
            max_chars=max_chars,
            settings=settings,
            progress=progress,
            on_shard_written=on_shard_written,
            start=start,
        )
    return summary


def run(
    layout: Layout,
    files: List[Path],
    model: str,
    *,
    engine: str,
    text_key: str,
    entities_key: str,
    schema: Optional[Any],
    n_process: int,
    batch_size: int,
    shard_size: int,
    num_workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    address: Optional[str],
    docbin: bool,
    max_chars: Optional[int],
    settings: ScoreSettings,
    progress: bool,
    on_shard_written: Optional[Callable[[Dict[str, int]], None]],
    start: float,
) -> AnnotateSummary:
    """Tag the unfinished shards of a prepared output directory, then write the summary.

    The arguments are those of `annotate`, checked; `layout` is prepared and locked,
    `schema` the Parquet output's (None for JSON lines) and `start` the run's start time.
    RETURNS (AnnotateSummary): The counts; also written to OUTPUT/_summary.json.
    """
    output = layout.output
    nlp: Optional[Language] = None
    if engine == "local" or docbin:
        nlp = spacy.load(model)
    if engine == "local":
        assert nlp is not None
        runner: Engine = LocalEngine(nlp, model, n_process=n_process, batch_size=batch_size, settings=settings)
    else:
        runner = RayEngine(
            model,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            batch_size=batch_size,
            address=address,
            settings=settings,
        )
    spans_key = None
    if docbin and settings.any:
        assert nlp is not None
        spans_key = scoring_components(nlp)[-1][1].spans_key
    writer = ShardWriter(layout, text_key, entities_key, schema, nlp if docbin else None, settings, spans_key)

    n_shards = 0
    resumed = 0
    done_now = {"records": 0, "chars": 0}
    bar = tqdm(unit=" rec", disable=not progress, desc="annotate", dynamic_ncols=True)

    def todo() -> Iterator[Shard]:
        nonlocal n_shards, resumed
        for shard in plan_shards(read_records(files, text_key, max_chars), shard_size):
            n_shards += 1
            finished = layout.finished(shard.index)
            if finished is None:
                yield shard
                continue
            if finished["records_in"] != shard.n_records:
                raise ValueError(f"Shard {shard.index} of {output} does not match the input: overwrite it")
            resumed += 1
            bar.update(shard.n_records)

    def on_shard(shard: Shard, annotations: List[Annotation]) -> None:
        counts = writer.write(shard, annotations)
        bar.update(len(shard.rejects))
        if on_shard_written is not None:
            on_shard_written(counts)

    def on_batch(batch: BatchAnnotations) -> None:
        bar.update(len(batch))
        elapsed = time.perf_counter() - start
        if progress and elapsed > 0:
            bar.set_postfix_str(f"{done_now['chars'] / elapsed:,.0f} chars/s", refresh=False)

    def counted(batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            done_now["records"] += len(batch)
            done_now["chars"] += sum(len(text) for text in batch)
            yield batch

    try:
        process(todo(), lambda b: runner.run(counted(b)), batch_size, on_shard, on_batch)
    finally:
        runner.close()
        bar.close()

    totals = {"records_in": 0, "records_out": 0, "rejects": 0, "entities": 0, "chars": 0}
    rejects_parts = []
    for index in range(n_shards):
        counts = layout.finished(index)
        assert counts is not None, f"shard {index} has no marker"
        for key in totals:
            totals[key] += counts[key]
        rejects_parts.append(layout.shard_rejects(index))

    def merge_rejects(path: Path) -> None:
        with path.open("w", encoding="utf8") as out:
            for part in rejects_parts:
                out.write(part.read_text(encoding="utf8"))

    atomic_write(layout.rejects, merge_rejects)
    seconds = time.perf_counter() - start
    summary = AnnotateSummary(
        **totals,
        shards=n_shards,
        shards_resumed=resumed,
        seconds=seconds,
        records_per_second=done_now["records"] / seconds if seconds else 0.0,
        chars_per_second=done_now["chars"] / seconds if seconds else 0.0,
        engine=engine,
        output=str(output),
    )
    assert summary.records_in == summary.records_out + summary.rejects
    atomic_write(layout.summary, lambda p: p.write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf8"))
    return summary
