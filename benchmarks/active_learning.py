"""Active learning on CLUENER: does choosing what to label by the CRF's uncertainty beat random?

    python benchmarks/active_learning.py                              # seed 0, entity_errors and random
    python benchmarks/active_learning.py --seeds 0 1 --strategies entity_errors tag_errors random
    python benchmarks/active_learning.py --start 100 --step 100 --rounds 2 --limit 2000 \\
        --extra="--initialize.after_init.epochs 1" --results /tmp/al_smoke.json   # a smoke run

A simulation of the labelling loop of ``select``: CLUENER's train set is the pool,
its labels hidden until a sentence is "annotated"; dev scores every round. Each run
(one strategy, one seed) starts from the same ``--start`` random sentences (numpy-free
``random.Random(seed)``), then, round after round:

1. trains the config (default ``configs/bilstm_crf.cfg``, its schedule scaled to the
   corpus size by ``[initialize.after_init]``) from scratch on the labelled sentences
   with ``python -m spacy train`` (one torch thread, ``--system.seed`` = the seed),
   ``model-best`` chosen on dev as in every CLUENER number;
2. scores it on all of dev (entity micro F1, spaCy's scorer);
3. unless the last round is reached, scores the rest of the pool with that model
   (``labelling.pool``: the exact measures of ``prediction/uncertainty.py``) and
   "annotates" the ``--step`` records that ``labelling.selection.select`` chooses,
   the code the ``select`` command runs (near-duplicates of labelled or chosen texts
   skipped, each kind at most ``--max-share`` of a batch); ``random`` draws them at
   random (near-duplicates skipped too).

Runs go ``--jobs`` at a time, each a process of its own (``--worker``). Finished
rounds are kept in ``--out`` and reused when the same command runs again. The
curves go to ``--results`` (``benchmarks/results/active_learning.json``: key
``curves``, for each strategy the labelled-sentence count, as a string, to dev F1,
for the first seed; ``curves_by_seed`` for all; the labelled characters and entities
per round; and the criterion below) and a PNG of them (``--png``).

The criterion recorded (first seed): the fewest labelled sentences at which the
uncertainty strategy reaches random's F1 at the largest size, and the difference
in F1 between them at ``--compare-at`` sentences.
"""
import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

# Run as a script, this file's folder is on sys.path: the CLUENER helpers are shared.
from cluener_accuracy import REPO, _versions, convert, measure, run

RESULTS = REPO / "benchmarks" / "results"
UNCERTAINTY_DEFAULT = "entity_errors"


def run_dir(out: Path, strategy: str, seed: int) -> Path:
    return out / f"{strategy}_seed{seed}"


def load_pool(train: Path, limit: Optional[int]):
    """The training docs (the pool, with their hidden labels)."""
    import spacy
    from spacy.tokens import DocBin

    nlp = spacy.blank("zh")
    docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))
    return docs[:limit] if limit else docs


def choose_next(model_dir: Path, docs, labelled: List[int], strategy: str, step: int, seed: int,
                max_share: float, batch_size: int) -> Dict[str, object]:  # fmt: skip
    """The ``step`` pool indices to annotate next, as ``select`` would choose them."""
    import spacy

    from spacy_bilstm_crf.labelling.pool import pool_records
    from spacy_bilstm_crf.labelling.selection import PoolRecord, select

    taken = set(labelled)
    rest = [k for k in range(len(docs)) if k not in taken]
    texts = [docs[k].text for k in rest]
    start = time.perf_counter()
    if strategy == "random":
        pool = [PoolRecord(text) for text in texts]
        share = 1.0
    else:
        nlp = spacy.load(model_dir)
        pool = list(pool_records(nlp, texts, batch_size=batch_size))
        share = max_share
    scoring_seconds = time.perf_counter() - start
    chosen = select(pool, step, strategy, seed=seed, max_share=share, labelled=[docs[k].text for k in labelled])
    return {
        "indices": [rest[i] for i in chosen.chosen],
        "duplicates_skipped": chosen.duplicates,
        "kinds": chosen.kinds,
        "scoring_seconds": round(scoring_seconds, 1),
    }


def train_round(config: Path, train: Path, dev: Path, model_dir: Path, seed: int, extra: List[str], log: Path) -> float:
    cmd = [sys.executable, "-m", "spacy", "train", str(config), "--output", str(model_dir),
           "--paths.train", str(train), "--paths.dev", str(dev), "--system.seed", str(seed), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return run(cmd, log, env)


def worker(args: argparse.Namespace) -> None:
    """One run: rounds of train → score on dev → choose the next sentences."""
    import torch
    from spacy.tokens import DocBin

    torch.set_num_threads(1)
    strategy, seed = args.worker[0], int(args.worker[1])
    corpus = {"train": Path(args.corpus_train), "dev": Path(args.corpus_dev)}
    docs = load_pool(corpus["train"], args.limit)
    folder = run_dir(args.out, strategy, seed)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}
    if not state["rounds"]:
        labelled = sorted(random.Random(seed).sample(range(len(docs)), args.start))
    else:
        labelled = list(state["rounds"][-1]["labelled"])
        if "next" in state["rounds"][-1]:
            labelled = sorted(labelled + state["rounds"][-1]["next"]["indices"])
    while True:
        n = len(labelled)
        done = {r["n"] for r in state["rounds"]}
        if n in done:  # resumed after this round was scored but before it chose
            record = next(r for r in state["rounds"] if r["n"] == n)
        else:
            train_path = folder / f"train_{n}.spacy"
            DocBin(docs=[docs[k] for k in labelled], store_user_data=True).to_disk(train_path)
            model_dir = folder / f"model_{n}"
            seconds = train_round(args.config, train_path, corpus["dev"], model_dir, seed, args.extra_list,
                                  folder / f"train_{n}.log")  # fmt: skip
            scores = measure(model_dir / "model-best", corpus["dev"], threads=1, speed=False)
            record = {
                "n": n,
                "dev_f1": scores["dev_f1"],
                "dev_p": scores["dev_p"],
                "dev_r": scores["dev_r"],
                "train_seconds": round(seconds, 1),
                "chars": sum(len(docs[k].text) for k in labelled),
                "entities": sum(len(docs[k].ents) for k in labelled),
                "labelled": labelled,
            }
            state["rounds"].append(record)
            state_path.write_text(json.dumps(state))
            print(f"[{strategy} seed {seed}] {n} sentences: dev F1 {record['dev_f1']}", flush=True)
        if n >= args.max or len(state["rounds"]) >= args.rounds or n >= len(docs):
            break
        if "next" not in record:
            model_best = folder / f"model_{n}" / "model-best"
            record["next"] = choose_next(model_best, docs, labelled, strategy, min(args.step, len(docs) - n),
                                         seed * 1000 + n, args.max_share, args.batch_size)  # fmt: skip
            state_path.write_text(json.dumps(state))
        labelled = sorted(labelled + record["next"]["indices"])


def curves(out: Path, strategies: List[str], seeds: List[int]) -> Dict[str, object]:
    by_seed: Dict[str, Dict[str, Dict[str, float]]] = {}
    labelled_chars: Dict[str, Dict[str, Dict[str, int]]] = {}
    labelled_entities: Dict[str, Dict[str, Dict[str, int]]] = {}
    for seed in seeds:
        for strategy in strategies:
            state = json.loads((run_dir(out, strategy, seed) / "state.json").read_text())
            rounds = sorted(state["rounds"], key=lambda r: r["n"])
            by_seed.setdefault(str(seed), {})[strategy] = {str(r["n"]): r["dev_f1"] for r in rounds}
            labelled_chars.setdefault(str(seed), {})[strategy] = {str(r["n"]): r["chars"] for r in rounds}
            labelled_entities.setdefault(str(seed), {})[strategy] = {str(r["n"]): r["entities"] for r in rounds}
    return {"by_seed": by_seed, "chars": labelled_chars, "entities": labelled_entities}


def criterion(curve: Dict[str, Dict[str, float]], uncertain: str, compare_at: int) -> Dict[str, object]:
    """How the uncertainty strategy compares with random on one seed's curves."""
    random_curve = {int(k): v for k, v in curve["random"].items()}
    ours = {int(k): v for k, v in curve[uncertain].items()}
    largest = max(random_curve)
    target = random_curve[largest]
    reached = [n for n in sorted(ours) if ours[n] >= target]
    gain = None
    if compare_at in ours and compare_at in random_curve:
        gain = round(ours[compare_at] - random_curve[compare_at], 2)
    return {
        "strategy": uncertain,
        "random_f1_at_largest": target,
        "largest": largest,
        "sentences_to_reach_it": reached[0] if reached else None,
        "compare_at": compare_at,
        "f1_gain_at_compare": gain,
    }


def draw(results: Dict[str, object], png: Path) -> Optional[Path]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for seed, strategies in results["curves_by_seed"].items():  # type: ignore[union-attr]
        for strategy, curve in strategies.items():
            xs = sorted(int(n) for n in curve)
            style = "--" if strategy == "random" else "-"
            axes.plot(xs, [curve[str(x)] for x in xs], style, marker="o", markersize=3,
                      label=f"{strategy} (seed {seed})")  # fmt: skip
    axes.set_xlabel("labelled sentences")
    axes.set_ylabel("CLUENER dev F1 (micro)")
    axes.set_title("Active learning on CLUENER train")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cluener")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "active_learning")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bilstm_crf.cfg")
    parser.add_argument("--strategies", nargs="*", default=[UNCERTAINTY_DEFAULT, "random"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--start", type=int, default=500, help="random sentences labelled first")
    parser.add_argument("--step", type=int, default=500, help="sentences labelled per round")
    parser.add_argument("--max", type=int, default=4500, help="stop once this many are labelled")
    parser.add_argument("--rounds", type=int, default=1000, help="at most this many rounds")
    parser.add_argument("--max-share", type=float, default=0.3, help="largest share of one kind in a batch")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per batch when scoring the pool")
    parser.add_argument("--limit", type=int, default=None, help="only the first N training sentences as the pool")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--compare-at", type=int, default=2500)
    parser.add_argument("--extra", type=str, default="", help='overrides for spacy train, e.g. "--x.y 1"')
    parser.add_argument("--results", type=Path, default=RESULTS / "active_learning.json")
    parser.add_argument("--png", type=Path, default=RESULTS / "active_learning.png")
    parser.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--corpus-train", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--corpus-dev", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.extra_list = shlex.split(args.extra)
    if args.worker:
        worker(args)
        return
    uncertain = [s for s in args.strategies if s != "random"]
    if "random" not in args.strategies or not uncertain:
        sys.exit("Give random and at least one uncertainty strategy: the curves are compared")
    corpus = convert(args.data, args.out)
    start = time.perf_counter()

    def launch(job) -> None:
        strategy, seed = job
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", strategy, str(seed),
               "--corpus-train", str(corpus["train"]), "--corpus-dev", str(corpus["dev"]),
               "--out", str(args.out), "--config", str(args.config), "--start", str(args.start),
               "--step", str(args.step), "--max", str(args.max), "--rounds", str(args.rounds),
               "--max-share", str(args.max_share), "--batch-size", str(args.batch_size),
               f"--extra={args.extra}"]  # fmt: skip
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        log = args.out / "logs" / f"{strategy}_seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"run {strategy} seed {seed}: log {log}", flush=True)
        with log.open("a", encoding="utf8") as out:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO / "benchmarks")
        if result.returncode != 0:
            raise RuntimeError(f"{strategy} seed {seed} failed ({result.returncode}): see {log}")

    jobs = [(strategy, seed) for seed in args.seeds for strategy in args.strategies]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(launch, job) for job in jobs]:
            future.result()
    found = curves(args.out, args.strategies, args.seeds)
    first = str(args.seeds[0])
    results: Dict[str, object] = {
        "curves": found["by_seed"][first],
        "curves_by_seed": found["by_seed"],
        "labelled_chars": found["chars"],
        "labelled_entities": found["entities"],
        "criterion": {s: criterion(found["by_seed"][first], s, args.compare_at) for s in uncertain},
        "settings": {
            "config": str(args.config.resolve().relative_to(REPO)) if args.config.resolve().is_relative_to(REPO) else str(args.config),
            "strategies": args.strategies,
            "seeds": args.seeds,
            "start": args.start,
            "step": args.step,
            "max": args.max,
            "max_share": args.max_share,
            "limit": args.limit,
            "extra_overrides": args.extra_list,
            "model_selection": "model-best on CLUENER dev, as in every CLUENER number",
            "threads_per_run": 1,
        },
        "wall_seconds": round(time.perf_counter() - start, 1),
        "versions": _versions(),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf8")
    print(json.dumps({"curves": results["curves"], "criterion": results["criterion"]}, indent=2))
    png = draw(results, args.png)
    print(f"Wrote {args.results}" + (f" and {png}" if png else " (matplotlib not installed: no PNG)"))


if __name__ == "__main__":
    main()
