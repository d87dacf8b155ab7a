"""The `select` command: choose the pool records to label next.

Only light modules at the top: every command's module is imported for
`python -m spacy_bilstm_crf --help`.
"""
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from wasabi import msg

from ._util import app, fail

if TYPE_CHECKING:
    from ..labelling.select_run import SelectSummary

# The strategies and their default, as labelling.selection has them; written out
# here because importing selection would import numpy for --help. A test checks them.
STRATEGIES = ("best_path", "tag_errors", "entity_errors", "random")
DEFAULT_STRATEGY = "entity_errors"


@app.command("select")
def select_cli(
    model: str = typer.Argument(..., help="Pipeline directory or installed package, with a bilstm_crf_ner component"),
    pool: str = typer.Argument(
        ..., help="Unlabelled records: JSON lines or Parquet file, a directory of them, or a glob"
    ),
    output: Path = typer.Argument(..., help="Output file: .jsonl or .parquet"),
    n: int = typer.Option(..., "--n", "-n", help="Records to choose"),
    strategy: str = typer.Option(
        DEFAULT_STRATEGY, "--strategy", "-s", help=f"One of: {', '.join(STRATEGIES)}"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random strategy and of ties"),
    max_share: float = typer.Option(0.3, "--max-share", help="Largest share of the batch of one kind (0-1; 1: no cap)"),
    duplicates: float = typer.Option(
        0.8, "--duplicates", help="Character-trigram Jaccard similarity from which texts are near-duplicates (0-1]"
    ),
    per_char: bool = typer.Option(False, "--per-char", help="Rank by the measure per character, not per record"),
    labelled: Optional[Path] = typer.Option(
        None,
        "--labelled",
        help="Texts already labelled (.spacy DocBin, JSON lines or Parquet): their near-duplicates are skipped",
    ),
    text_key: str = typer.Option("text", "--text-key", help="Field of a record that holds its text"),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="Output format: jsonl or parquet (default: from OUTPUT's extension)"
    ),
    batch_size: int = typer.Option(256, "--batch-size", "-b", help="Texts per tagging batch"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar"),
) -> None:
    """Choose the N pool records most worth labelling next; write them with pre-annotations.

    Every record of POOL is tagged, and its uncertainty measured exactly from the CRF: `best_path` (1 - P(decoded tags)), `tag_errors` (expected wrong tags) or `entity_errors` (expected false plus missed entities, the default). The most uncertain records are chosen first; `random` chooses at random (by `--seed`), the baseline to beat. A record is skipped when its text is a near-duplicate of one already chosen or of a `--labelled` text, and a kind of record (the label of its least certain entity) gets at most `--max-share` of the batch while other kinds are left.

    OUTPUT holds the chosen records in rank order, each with all its fields plus `entities` (`start`, `end`, `label`, `text`, `score`), `uncertainty`, `rank` (from 1) and `selection` (the strategy). OUTPUT.summary.json has the counts; records whose text is missing or unusable go to OUTPUT.rejects.jsonl with the reason.
    """
    if strategy not in STRATEGIES:
        fail(f"Unknown strategy: {strategy}", f"Use one of: {', '.join(STRATEGIES)}")
    if n < 1:
        fail(f"Invalid --n: {n}", "Choose at least 1 record")
    from ..labelling.select_run import select_file  # imports the network only when the command runs

    try:
        summary = select_file(
            model,
            pool,
            output,
            n,
            strategy=strategy,
            seed=seed,
            max_share=max_share,
            duplicate_threshold=duplicates,
            per_char=per_char,
            labelled=labelled,
            text_key=text_key,
            fmt=fmt,
            batch_size=batch_size,
            progress=progress,
        )
    except ImportError as err:  # pyarrow missing: the message says what to install
        fail("A dependency is missing", str(err))
    except (FileNotFoundError, ValueError, OSError) as err:
        fail("Cannot select", str(err))
    report(summary)


def report(summary: "SelectSummary") -> None:
    """Print what a selection read, skipped and chose."""
    msg.good(
        f"Chose {summary.chosen} of {summary.pool_records} pool records ({summary.strategy}); saved {summary.output}"
    )
    if summary.chosen < summary.asked:
        msg.warn(f"{summary.asked} asked for: the pool has no more records that are not near-duplicates")
    kinds = ", ".join(f"{kind} {count}" for kind, count in summary.kinds.items()) or "none"
    msg.text(f"Per kind: {kinds}")
    msg.text(f"Near-duplicates skipped: {summary.duplicates}; passed over for their kind's share: {summary.capped}")
    if summary.rejects:
        msg.warn(f"{summary.rejects} rejects in {summary.rejects_file}")
    msg.text(f"Summary: {summary.output}.summary.json")
