"""Choose the records of a pool file to label next: read, score, choose, write.

The ``select`` command's work. The pool is read as annotate reads its input (JSON
lines or Parquet; a file, a directory or a glob; unusable records rejected with
the reason), scored once by the pipeline (``pool.scored_pool``: the uncertainty
that ranks a record and the pre-annotations written with it), chosen by
``selection.select``, and the chosen records are written in rank order with all
their fields plus ``entities`` (each with its ``score``), ``uncertainty``, ``rank``
and ``selection`` (the strategy). A summary goes next to the output.
"""
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..annotate.entities import UNCERTAINTY_FIELD, Annotation
from ..annotate.inputs import Item, Reject, file_format, parquet_schema, read_records, require_pyarrow, resolve_inputs
from .selection import DEFAULT_STRATEGY, STRATEGIES, Selection, select

ENTITIES_FIELD = "entities"
RANK_FIELD = "rank"
SELECTION_FIELD = "selection"
OUTPUT_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
SUMMARY_SUFFIX = ".summary.json"
REJECTS_SUFFIX = ".rejects.jsonl"


@dataclass
class SelectSummary:
    """What a selection read, skipped and chose.

    pool (str): The pool as given.
    records_in (int): Records read from the pool.
    pool_records (int): Usable records (scored and ranked).
    rejects (int): Unusable records (written to ``rejects_file``).
    labelled (int): Texts given as already labelled.
    asked (int): Records asked for (``n``).
    chosen (int): Records chosen and written.
    duplicates (int): Records skipped as near-duplicates of a chosen or labelled text.
    capped (int): Records passed over because their kind had its share of the batch.
    kinds (Dict[str, int]): Chosen records per kind (the label of the least certain entity).
    strategy (str): The strategy.
    seed (int): The seed of the random order and of ties.
    per_char (bool): Whether the measure was taken per character.
    max_share (float): Largest share of one kind.
    duplicate_threshold (float): Jaccard similarity from which texts are near-duplicates.
    output (str): The output file.
    rejects_file (Optional[str]): Where the rejects are, None without rejects.
    seconds (float): Wall time.
    """

    pool: str
    records_in: int
    pool_records: int
    rejects: int
    labelled: int
    asked: int
    chosen: int
    duplicates: int
    capped: int
    kinds: Dict[str, int]
    strategy: str
    seed: int
    per_char: bool
    max_share: float
    duplicate_threshold: float
    output: str
    rejects_file: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        """RETURNS (Dict[str, Any]): The summary, JSON-ready."""
        return asdict(self)


@dataclass
class Pool:
    """A pool as read: its usable records and its rejects, in input order."""

    files: List[Path]
    items: List[Item] = field(default_factory=list)
    rejects: List[Reject] = field(default_factory=list)


def output_format(output: Path, fmt: Optional[str] = None) -> str:
    """The output format: given, or from the output file's extension.

    output (Path): The output file.
    fmt (Optional[str]): "jsonl", "parquet" or None.
    RETURNS (str): The format.
    RAISES (ValueError): An unknown format, or an extension that names none.
    """
    formats = sorted(set(OUTPUT_FORMATS.values()))
    if fmt is not None:
        if fmt not in formats:
            raise ValueError(f"Unknown format {fmt!r}: use one of {', '.join(formats)}")
        return fmt
    found = OUTPUT_FORMATS.get(output.suffix.lower())
    if found is None:
        raise ValueError(
            f"Cannot tell the output format of {output} from its extension: "
            "name it .jsonl or .parquet, or give --format"
        )
    return found


def summary_path(output: Path) -> Path:
    """RETURNS (Path): Where the summary of a selection written to ``output`` goes."""
    return output.with_name(output.name + SUMMARY_SUFFIX)


def rejects_path(output: Path) -> Path:
    """RETURNS (Path): Where the pool's rejects of a selection written to ``output`` go."""
    return output.with_name(output.name + REJECTS_SUFFIX)


def where(reject: Reject) -> str:
    """RETURNS (str): A reject's place, e.g. "pool.jsonl, line 3" or "pool.parquet, row 0"."""
    unit = "row" if file_format(Path(reject.source)) == "parquet" else "line"
    return f"{reject.source}, {unit} {reject.position}"


def read_pool(pool: Union[str, Path], text_key: str) -> Pool:
    """Read a pool: every record, usable or rejected with its reason.

    pool (Union[str, Path]): A JSON lines or Parquet file, a directory of them, or a glob.
    text_key (str): The records' text field.
    RETURNS (Pool): The files, the usable records and the rejects.
    RAISES (FileNotFoundError): No pool file.
    """
    files = resolve_inputs(pool)
    result = Pool(files)
    for record in read_records(files, text_key):
        if isinstance(record, Item):
            result.items.append(record)
        else:
            result.rejects.append(record)
    return result


def docbin_texts(path: Path) -> List[str]:
    """RETURNS (List[str]): The texts of the docs of a DocBin file."""
    import spacy
    from spacy.tokens import DocBin

    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # msgpack and zlib raise their own types on a damaged file
        raise ValueError(f"{path} is not a spaCy DocBin: {err}") from err
    # Only the texts are needed: any vocab reads them.
    return [doc.text for doc in docbin.get_docs(spacy.blank("xx").vocab)]


def read_labelled(path: Union[str, Path], text_key: str) -> List[str]:
    """The texts already labelled: DocBins (.spacy), or JSON lines or Parquet records.

    path (Union[str, Path]): A .spacy file, a directory of them (read recursively, as
        ``spacy train`` reads a corpus directory), or a JSON lines or Parquet file,
        directory or glob.
    text_key (str): The records' text field (JSON lines and Parquet).
    RETURNS (List[str]): The texts.
    RAISES (ValueError): A record without a usable text (the file and line say which).
    """
    path = Path(path)
    if path.suffix == ".spacy":
        if not path.is_file():
            raise FileNotFoundError(f"No labelled DocBin at {path}")
        return docbin_texts(path)
    if path.is_dir():
        docbins = sorted(p for p in path.rglob("*.spacy") if p.is_file())
        if docbins:
            return [text for docbin in docbins for text in docbin_texts(docbin)]
    texts = []
    for record in read_records(resolve_inputs(path), text_key):
        if isinstance(record, Reject):
            raise ValueError(f"Labelled texts: {where(record)}: {record.reason}")
        texts.append(record.text)
    return texts


def chosen_rows(
    pool: Pool, annotations: Sequence[Annotation], selection: Selection, strategy: str
) -> List[Dict[str, Any]]:
    """The chosen records, in rank order, with their pre-annotations and rank.

    pool (Pool): The pool.
    annotations (Sequence[Dict[str, Any]]): Each usable record's annotation.
    selection (Selection): What was chosen.
    strategy (str): The strategy, written to each record.
    RETURNS (List[Dict[str, Any]]): The records to write (fields of the same names replaced).
    """
    rows = []
    for rank, index in enumerate(selection.chosen, start=1):
        annotation = annotations[index]
        rows.append(
            {
                **pool.items[index].record,
                ENTITIES_FIELD: annotation["entities"],
                UNCERTAINTY_FIELD: annotation.get(UNCERTAINTY_FIELD),
                RANK_FIELD: rank,
                SELECTION_FIELD: strategy,
            }
        )
    return rows


def written_fields() -> List[Any]:
    """RETURNS (List[pyarrow.Field]): The fields select adds, in the order they are written."""
    import pyarrow as pa

    from ..annotate.schema import annotation_fields
    from .pool import POOL_SCORING

    return annotation_fields(ENTITIES_FIELD, POOL_SCORING) + [
        pa.field(RANK_FIELD, pa.int64()),
        pa.field(SELECTION_FIELD, pa.string()),
    ]


def parquet_output_schema(files: List[Path], records: List[Dict[str, Any]], text_key: str) -> Any:
    """The output's Arrow schema: the pool's, when it is Parquet of one schema, else inferred.

    files (List[Path]): The pool's files.
    records (List[Dict[str, Any]]): The chosen records as read.
    text_key (str): The text field.
    RETURNS (pyarrow.Schema): The schema, select's fields last.
    """
    from ..annotate.schema import SchemaInference

    written = written_fields()
    schema = parquet_schema(files)
    if schema is None:
        inference = SchemaInference(text_key, ENTITIES_FIELD, written)
        inference.add(records)
        return inference.schema()
    for added in written:
        if added.name in schema.names:
            schema = schema.remove(schema.get_field_index(added.name))
        schema = schema.append(added)
    return schema


def write_output(path: Path, fmt: str, rows: List[Dict[str, Any]], pool: Pool, text_key: str) -> None:
    """Write the chosen records, whole or not at all.

    path (Path): The output file.
    fmt (str): "jsonl" or "parquet".
    rows (List[Dict[str, Any]]): The records, from ``chosen_rows``.
    pool (Pool): The pool (its files decide the Parquet schema).
    text_key (str): The text field.
    """
    from ..annotate.shards import atomic_write
    from ..annotate.writers import parquet_table, write_jsonl, write_parquet

    if fmt == "jsonl":
        atomic_write(path, lambda p: write_jsonl(p, rows))
        return
    require_pyarrow()
    added = [f.name for f in written_fields() if f.name != ENTITIES_FIELD]
    records = [{k: v for k, v in row.items() if k not in added and k != ENTITIES_FIELD} for row in rows]
    schema = parquet_output_schema(pool.files, records, text_key)
    extra = {name: [row[name] for row in rows] for name in added}
    table, misfits = parquet_table(records, [row[ENTITIES_FIELD] for row in rows], schema, ENTITIES_FIELD, extra)
    if misfits:
        index, reason = misfits[0]
        raise ValueError(f"The chosen record ranked {index + 1} ({rows[index].get(text_key)!r:.40}) {reason}")
    atomic_write(path, lambda p: write_parquet(p, table))


def select_file(
    model: Union[str, Path],
    pool: Union[str, Path],
    output: Union[str, Path],
    n: int,
    *,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    max_share: float = 0.3,
    duplicate_threshold: float = 0.8,
    per_char: bool = False,
    labelled: Optional[Union[str, Path]] = None,
    text_key: str = "text",
    fmt: Optional[str] = None,
    batch_size: int = 256,
    progress: bool = False,
) -> SelectSummary:
    """Choose ``n`` records of a pool to label next and write them, most worth labelling first.

    model (Union[str, Path]): A pipeline with a bilstm_crf_ner component.
    pool (Union[str, Path]): JSON lines or Parquet: a file, a directory of them, or a glob.
    output (Union[str, Path]): The output file (.jsonl or .parquet); its summary goes to
        OUTPUT.summary.json, the pool's rejects (if any) to OUTPUT.rejects.jsonl.
    n (int): Records to choose.
    strategy (str): One of ``selection.STRATEGIES``: a measure (most uncertain first) or
        "random" (the records still get their pre-annotations).
    seed (int): The seed of the random order and of ties.
    max_share (float): Largest share of the batch of one kind, in (0, 1].
    duplicate_threshold (float): Character-trigram Jaccard similarity from which two
        texts are near-duplicates, in (0, 1].
    per_char (bool): Rank by the measure per character.
    labelled (Optional[Union[str, Path]]): Texts already labelled (a .spacy DocBin, or JSON
        lines or Parquet records with ``text_key``): their near-duplicates are skipped.
    text_key (str): The records' text field.
    fmt (Optional[str]): "jsonl" or "parquet"; None: from the output's extension.
    batch_size (int): Texts per tagging batch.
    progress (bool): Show a progress bar of the scoring on stderr.
    RETURNS (SelectSummary): What was read and chosen; also written to OUTPUT.summary.json.
    RAISES (ValueError): Bad settings, a pool without usable records, a pipeline without
        the component. (FileNotFoundError, OSError): Missing pool, labelled file or model.
    """
    start = time.perf_counter()
    output = Path(output)
    fmt = output_format(output, fmt)
    check_settings(n, strategy, max_share, duplicate_threshold, batch_size)
    if fmt == "parquet":
        require_pyarrow()
    data = read_pool(pool, text_key)
    if any(output.resolve() == f.resolve() for f in data.files):
        raise ValueError(f"The output {output} is a pool file: write the selection elsewhere")
    if not data.items:
        first = f" (first: {where(data.rejects[0])}: {data.rejects[0].reason})" if data.rejects else ""
        raise ValueError(f"No usable record in {pool}: {len(data.rejects)} rejected{first}")
    labelled_texts = read_labelled(labelled, text_key) if labelled is not None else []

    import spacy

    from .pool import scored_pool

    from ..annotate.scoring import scoring_components

    nlp = spacy.load(model)
    if not scoring_components(nlp):
        names = ", ".join(nlp.pipe_names) or "none"
        raise ValueError(
            f"Selection scores the pool with a bilstm_crf_ner component, and {model} has none (components: {names})"
        )
    from tqdm import tqdm

    texts = [item.text for item in data.items]
    scoring = scored_pool(nlp, texts, batch_size)
    scored = list(tqdm(scoring, total=len(texts), unit=" rec", desc="select", disable=not progress))
    records, annotations = [r for r, _ in scored], [a for _, a in scored]
    selection = select(
        records,
        n,
        strategy,
        seed=seed,
        max_share=max_share,
        duplicate_threshold=duplicate_threshold,
        labelled=labelled_texts,
        per_char=per_char,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_output(output, fmt, chosen_rows(data, annotations, selection, strategy), data, text_key)
    rejects_file = write_pool_rejects(output, data.rejects)
    summary = SelectSummary(
        pool=str(pool),
        records_in=len(data.items) + len(data.rejects),
        pool_records=len(data.items),
        rejects=len(data.rejects),
        labelled=len(labelled_texts),
        asked=n,
        chosen=len(selection.chosen),
        duplicates=selection.duplicates,
        capped=selection.capped,
        kinds=selection.kinds,
        strategy=strategy,
        seed=seed,
        per_char=per_char,
        max_share=max_share,
        duplicate_threshold=duplicate_threshold,
        output=str(output),
        rejects_file=rejects_file,
        seconds=time.perf_counter() - start,
    )
    summary_path(output).write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False), encoding="utf8")
    return summary


def write_pool_rejects(output: Path, rejects: List[Reject]) -> Optional[str]:
    """Write the pool's rejects next to the output (and remove an earlier run's if none).

    output (Path): The output file.
    rejects (List[Reject]): The rejects.
    RETURNS (Optional[str]): The rejects file, None without rejects.
    """
    from ..annotate.writers import write_rejects

    path = rejects_path(output)
    if not rejects:
        if path.exists():
            path.unlink()  # an earlier selection's: it would be taken for this one's
        return None
    write_rejects(path, rejects)
    return str(path)


def check_settings(n: int, strategy: str, max_share: float, duplicate_threshold: float, batch_size: int) -> None:
    """Refuse bad settings before anything is read or loaded.

    RAISES (ValueError): The first bad setting, what it is and what is allowed.
    """
    problems: List[Tuple[bool, str]] = [
        (n < 1, f"n must be at least 1, not {n}"),
        (strategy not in STRATEGIES, f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}"),
        (not 0.0 < max_share <= 1.0, f"max_share must be in (0, 1], not {max_share}"),
        (
            not 0.0 < duplicate_threshold <= 1.0,
            f"The near-duplicate threshold must be in (0, 1], not {duplicate_threshold}",
        ),
        (batch_size < 1, f"batch_size must be at least 1, not {batch_size}"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(message)
