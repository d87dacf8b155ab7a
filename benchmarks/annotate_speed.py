"""Throughput of ``annotate`` on the CLUENER dev texts: local engine with 1 and 2
processes, ray engine with 1 and 2 workers, in one run.

    python benchmarks/annotate_speed.py MODEL_DIR [--records 200000] [--dev DEV_JSON]

The dev texts are repeated to ``--records`` records (JSON lines, with an id) and
each configuration annotates them to JSON lines shards, from scratch. Each
process, and each Ray actor, runs torch on one thread, so "1" and "2" are cores.

Ray has a fixed start-up cost that a large corpus amortizes: ``ray_init_s``
(starting the local cluster) and ``ray_fixed_s`` (a run on as many records as
workers: Ray Data planning, starting the actors, loading the pipeline in each).
Both are reported apart; ``steady_*`` rates are records / (wall - fixed), what a
corpus large enough to hide the start-up gets. Prints a table and writes
``benchmarks/results/annotate.json`` (``--out``).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

# One machine: Ray stays on loopback (on Linux it would advertise the machine's outward
# address, and this benchmark needs no second node).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from spacy_bilstm_crf.annotate import annotate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO.parent / "shared" / "data" / "cluener" / "dev.json"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "annotate.json"


def write_corpus(dev: Path, n_records: int, path: Path) -> int:
    """Write the dev texts, repeated to `n_records` records, as JSON lines.

    dev (Path): CLUENER dev.json.
    n_records (int): Records to write.
    path (Path): The corpus file.
    RETURNS (int): Characters of text written.
    """
    texts = [json.loads(line)["text"] for line in dev.read_text(encoding="utf8").splitlines() if line.strip()]
    n_chars = 0
    with path.open("w", encoding="utf8") as f:
        for i in range(n_records):
            text = texts[i % len(texts)]
            n_chars += len(text)
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    return n_chars


def timed_run(model: str, corpus: Path, output: Path, **kwargs: Any) -> float:
    """RETURNS (float): Wall seconds of one annotate run, from scratch."""
    start = time.perf_counter()
    summary = annotate(model, corpus, output, overwrite=True, **kwargs)
    seconds = time.perf_counter() - start
    assert summary.rejects == 0 and summary.shards_resumed == 0
    return seconds


def row(name: str, n_records: int, n_chars: int, wall: float, fixed: Optional[float] = None, init: Optional[float] = None) -> Dict[str, Any]:
    result: Dict[str, Any] = {
        "config": name,
        "wall_s": round(wall, 2),
        "records_per_s": round(n_records / wall, 1),
        "chars_per_s": round(n_chars / wall),
    }
    if fixed is not None:
        steady = max(wall - fixed, 1e-9)
        result.update(
            ray_init_s=round(init or 0.0, 2),
            ray_fixed_s=round(fixed, 2),
            steady_records_per_s=round(n_records / steady, 1),
            steady_chars_per_s=round(n_chars / steady),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A trained bilstm_crf_ner pipeline directory")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=50_000)
    parser.add_argument("--skip-ray", action="store_true", help="Only the local engine")
    parser.add_argument(
        "--scores", action="store_true",
        help="Write entity scores, annotate's default with this component (recorded runs: without)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    torch.set_num_threads(1)  # one core per process; forked processes and actors do the same
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Plain tagging unless --scores: the recorded numbers measure the engines, not the scoring
    # (whose cost benchmarks/confidence.py measures).
    common = {"batch_size": args.batch_size, "shard_size": args.shard_size, "confidence": args.scores}
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        n_chars = write_corpus(args.dev, args.records, corpus)
        print(f"{args.records} records, {n_chars} chars", file=sys.stderr)
        for n_process in (1, 2):
            wall = timed_run(args.model, corpus, Path(tmp) / "out", n_process=n_process, **common)
            rows.append(row(f"local, {n_process} process{'es' if n_process > 1 else ''}", args.records, n_chars, wall))
            print(rows[-1], file=sys.stderr)
        if not args.skip_ray:
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
            init = time.perf_counter() - start
            for workers in (1, 2):
                tiny = Path(tmp) / f"tiny{workers}.jsonl"
                write_corpus(args.dev, workers, tiny)
                ray_args = {"engine": "ray", "num_workers": workers, **common}
                fixed = timed_run(args.model, tiny, Path(tmp) / "tiny-out", **ray_args)
                wall = timed_run(args.model, corpus, Path(tmp) / "out", **ray_args)
                name = f"ray, {workers} worker{'s' if workers > 1 else ''}"
                rows.append(row(name, args.records, n_chars, wall, fixed, init))
                print(rows[-1], file=sys.stderr)
            ray.shutdown()

    header = f"{'config':<20} {'wall s':>8} {'records/s':>10} {'chars/s':>10} {'fixed s':>8} {'steady rec/s':>13} {'steady chars/s':>15}"
    print(header)
    for r in rows:
        fixed = f"{r['ray_init_s'] + r['ray_fixed_s']:.1f}" if "ray_fixed_s" in r else "-"
        print(
            f"{r['config']:<20} {r['wall_s']:>8.1f} {r['records_per_s']:>10.0f} {r['chars_per_s']:>10.0f} {fixed:>8} "
            f"{r.get('steady_records_per_s', '-'):>13} {r.get('steady_chars_per_s', '-'):>15}"
        )
    result = {
        "model": Path(args.model).name,  # the name only: no machine paths in results
        "records": args.records,
        "chars": n_chars,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "torch": torch.__version__,
        "torch_threads_per_process": 1,
        # The machine may be shared: a load above the CPUs used means other work ran too.
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
        "runs": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    print(f"Saved {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
