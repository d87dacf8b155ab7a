"""Tag a corpus of any size (the ``annotate`` command).

Only light modules at the top: every command's module is imported for
`python -m spacy_bilstm_crf --help`, and spaCy, torch and Ray take seconds.
"""
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

from ..annotate.engines import ENGINES, FORMATS
from ..annotate.shards import OutputInUseError
from ._util import app, fail


@app.command("annotate")
def annotate_cli(
    model: str = typer.Argument(..., help="Pipeline directory or installed package"),
    input_path: str = typer.Argument(..., help="JSON lines or Parquet file, a directory of them, or a glob"),
    output: Path = typer.Argument(..., help="Output directory of shards (tagged.jsonl, tagged.parquet, ...)"),
    text_key: str = typer.Option("text", "--text-key", help="Field of a record that holds its text"),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="Output format: jsonl or parquet (default: from OUTPUT's extension, else jsonl)"
    ),
    engine: str = typer.Option("local", "--engine", "-e", help="local (nlp.pipe) or ray (Ray Data)"),
    n_process: int = typer.Option(1, "--n-process", "-n", help="Processes of the local engine"),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Texts per batch"),
    shard_size: int = typer.Option(100_000, "--shard-size", help="Input records per output shard"),
    num_workers: int = typer.Option(1, "--num-workers", help="Ray actors, each with a copy of the pipeline"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs reserved per Ray actor"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs reserved per Ray actor"),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to join, e.g. auto or HOST:6379 (default: start a local one)"
    ),
    docbin: bool = typer.Option(False, "--docbin", help="Also write each shard as a DocBin (.spacy)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run's output instead of resuming it"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
    max_chars: int = typer.Option(
        0, "--max-chars", help="Reject texts longer than this many characters (default 0: tag texts of any length)"
    ),
    confidence: Optional[bool] = typer.Option(
        None,
        "--confidence/--no-confidence",
        help="Write each entity's probability as its `score` "
        "(default: on when the pipeline has a bilstm_crf_ner component)",
    ),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Also write the other spans at least this probable (0-1) as the record's `candidates`"
    ),
    uncertainty: bool = typer.Option(
        False, "--uncertainty", help="Also write the record's `uncertainty` (best_path, tag_errors, entity_errors)"
    ),
) -> None:
    """Tag a corpus of JSON lines or Parquet records; write them with their entities as shards.

    Each record of INPUT_PATH is written to OUTPUT/part-NNNNN.jsonl (or .parquet) with all its fields and an `entities` field: a list of `start`, `end` (character offsets, end exclusive), `label`, `text` and `score`. Shard N holds input records N*SHARD_SIZE to (N+1)*SHARD_SIZE, in input order.

    `score` is the entity's probability under the CRF (exact, as the component's `confidence` setting gives it). It is written by default when the pipeline has a bilstm_crf_ner component (about 5% more time); `--no-confidence` leaves it out. A pipeline without that component tags without scores, and `--confidence`, `--threshold` or `--uncertainty` with it is an error. `--threshold P` adds `candidates`: other spans at least P probable, each with its `score`. `--uncertainty` adds `uncertainty`: the record's `best_path` (1 - P(decoded tags)), `tag_errors` and `entity_errors` (expected wrong tags and wrong entities). With `--docbin`, the DocBin's docs carry the scored spans in `doc.spans` under the component's `spans_key`.

    A record whose text is missing, not a string, undecodable or longer than `--max-chars` goes to OUTPUT/_rejects.jsonl with the reason. Texts of any length are tagged otherwise (in windows; memory grows with the longest text). OUTPUT/_summary.json has the counts: records in = records out + rejects.

    A run that was stopped can be re-run with the same command: it keeps the finished shards and redoes the others. It is refused if the input, the model's files or a setting that decides the output changed since (use `--overwrite`), and while another run uses OUTPUT.

    Parquet output has one schema for every shard; a field whose values have no common type (e.g. int and str) is written as JSON text, marked `encoding: json` in the field's metadata.

    The ray engine runs on a local Ray cluster, or on a running one with `--address`. It needs `pip install "spacy-bilstm-crf[ray]"`; Parquet needs pyarrow, which that extra installs.
    """
    if engine not in ENGINES:
        fail(f"Unknown engine: {engine}", f"Use one of: {', '.join(ENGINES)}")
    if fmt is not None and fmt not in FORMATS:
        fail(f"Unknown format: {fmt}", f"Use one of: {', '.join(FORMATS)}")
    if max_chars < 0:
        fail(f"Invalid --max-chars: {max_chars}", "Use a positive number of characters, or 0 for no limit")
    if threshold is not None and not 0.0 < threshold <= 1.0:
        fail(f"Invalid --threshold: {threshold}", "Use a probability in (0, 1], e.g. 0.3")
    from ..annotate import annotate  # imports spaCy and torch: only when the command runs

    try:
        summary = annotate(
            model,
            input_path,
            output,
            text_key=text_key,
            fmt=fmt,
            engine=engine,
            n_process=n_process,
            batch_size=batch_size,
            shard_size=shard_size,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
            address=address,
            docbin=docbin,
            overwrite=overwrite,
            progress=progress,
            max_chars=max_chars or None,
            confidence=confidence,
            threshold=threshold,
            uncertainty=uncertainty,
        )
    except ImportError as err:  # ray or pyarrow missing: the message says what to install
        fail("A dependency is missing", str(err))
    except OutputInUseError as err:
        fail("Output directory in use", str(err))
    except (FileNotFoundError, ValueError, OSError) as err:
        fail("Cannot annotate", str(err))
    msg.good(
        f"{summary.records_in} records in = {summary.records_out} out + {summary.rejects} rejects; "
        f"{summary.entities} entities; {summary.shards} shards ({summary.shards_resumed} kept from an earlier run)"
    )
    msg.text(
        f"{summary.seconds:.1f} s, {summary.records_per_second:.0f} records/s, "
        f"{summary.chars_per_second:.0f} chars/s ({summary.engine} engine)"
    )
    if summary.rejects:
        msg.warn(f"{summary.rejects} rejects in {output / '_rejects.jsonl'}")
    msg.text(f"Saved {output} (summary: {output / '_summary.json'})")
