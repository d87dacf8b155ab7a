"""CLUENER2020 side by side: bilstm_crf_ner against spaCy's built-in ``ner``, same data, same run.

    python benchmarks/cluener_accuracy.py                       # full: 3 seeds + spaCy ner
    python benchmarks/cluener_accuracy.py --quick               # a few minutes, for checks
    python benchmarks/cluener_accuracy.py --ablations           # adds the ablation runs (all levers)

Steps: convert CLUENER's train/dev JSON to DocBins with this package's converter;
train our default config (``configs/bilstm_crf.cfg``) once per seed and spaCy's
``spacy init config -l zh -p ner -o efficiency`` pipeline, all on CPU, on the same
DocBins (``--parallel`` jobs at a time, the cores split between them); then, for
every trained ``model-best``: dev P/R/F (spaCy's scorer, overall and per type),
training wall time, inference speed in chars/s (``nlp.pipe`` with batch 256, and
single ``nlp(text)`` calls) and size on disk. Prints one table; writes everything
to ``OUT/results.json`` and, with ``--record``, ``benchmarks/results/cluener.json``.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
LABELS = ["address", "book", "company", "game", "government",
          "movie", "name", "organization", "position", "scene"]  # fmt: skip
OURS = "bilstm_crf_ner"

# Ablations: each changes one lever of the default config (one seed, --ablation-steps).
# With the default --ablation-steps (the config's max_steps) the reference is the seed-0
# run itself: training is deterministic, so an "ablation_default" run would repeat it.
ABLATIONS: Dict[str, List[str]] = {
    "default": [],
    "no_lexicon": ["--components.bilstm_crf_ner.model.lexicon", "null"],
    # Hashed character bigrams (off by default: they overfit next to the lexicon).
    "bigrams": ["--components.bilstm_crf_ner.model.bigram_dim", "64"],
    "no_char_classes": ["--components.bilstm_crf_ner.model.class_dim", "0"],
    "no_embed_dropout": ["--components.bilstm_crf_ner.model.embed_dropout", "0.0"],
    "no_layer_norm": ["--components.bilstm_crf_ner.model.layer_norm", "false"],
    "bio": ["--components.bilstm_crf_ner.scheme", "BIO"],
    # One cosine cycle over the whole run instead of warm restarts (1000 + 2000 steps).
    "no_warm_restarts": ["--training.optimizer.learn_rate.period", "3000"],
    # A fixed 1000-word batch instead of compounding from 1000 to 2000 words.
    "fixed_batch": ["--training.batcher.size.stop", "1000"],
}  # fmt: skip


def run(cmd: List[str], log: Path, env: Optional[Dict[str, str]] = None) -> float:
    """Run a command, its output to ``log``; RETURNS (float): wall seconds. Raises on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf8") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"Command failed ({result.returncode}), see {log}: {' '.join(cmd)}")
    return time.perf_counter() - start


def convert(data_dir: Path, out: Path) -> Dict[str, Path]:
    paths = {}
    for split in ("train", "dev"):
        source = data_dir / f"{split}.json"
        if not source.exists():
            sys.exit(f"CLUENER {split}.json not found in {data_dir}: pass --data DIR")
        target = out / "corpus" / f"{split}.spacy"
        if not target.exists():
            cmd = [sys.executable, "-m", "spacy_bilstm_crf", "convert", str(source), str(target)]
            run(cmd, out / "logs" / f"convert_{split}.log")
        paths[split] = target
    return paths


def spacy_ner_config(out: Path) -> Path:
    """spaCy's own CPU 'efficiency' NER config for Chinese (char segmenter by default)."""
    config = out / "spacy_ner.cfg"
    if not config.exists():
        cmd = [sys.executable, "-m", "spacy", "init", "config", str(config),
               "-l", "zh", "-p", "ner", "-o", "efficiency", "--force"]  # fmt: skip
        run(cmd, out / "logs" / "init_spacy_ner.log")
    return config


def train_job(name: str, config: Path, extra: List[str], corpus: Dict[str, Path], out: Path,
              threads: int, reuse: bool) -> Dict[str, object]:  # fmt: skip
    model_dir = out / name
    timing = model_dir / "train_seconds.json"
    if reuse and (model_dir / "model-best").exists() and timing.exists():
        return json.loads(timing.read_text())
    cmd = [sys.executable, "-m", "spacy", "train", str(config), "--output", str(model_dir),
           "--paths.train", str(corpus["train"]), "--paths.dev", str(corpus["dev"]), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"training {name} ({threads} thread(s)) ...", flush=True)
    seconds = run(cmd, out / "logs" / f"{name}.log", env)
    info = {"train_seconds": round(seconds, 1), "threads": threads}
    timing.write_text(json.dumps(info))
    print(f"  {name}: {seconds / 60:.1f} min", flush=True)
    return info


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(model_dir: Path, dev_path: Path, threads: int) -> Dict[str, object]:
    """Dev scores, chars/s and size of a trained pipeline, in this process."""
    import spacy
    import torch
    from spacy.tokens import DocBin
    from spacy.training import Example

    torch.set_num_threads(threads)
    nlp = spacy.load(model_dir)
    gold = list(DocBin().from_disk(dev_path).get_docs(nlp.vocab))
    texts = [doc.text for doc in gold]
    n_chars = sum(len(t) for t in texts)
    scores = nlp.evaluate([Example(nlp.make_doc(d.text), d) for d in gold], batch_size=256)
    list(nlp.pipe(texts[:256], batch_size=256))  # warm-up
    pipe_times, single_times = [], []
    for _ in range(3):
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=256))
        pipe_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for text in texts:
        nlp(text)
    single_times.append(time.perf_counter() - start)
    per_type = scores.get("ents_per_type") or {}
    return {
        "dev_p": round(100 * scores["ents_p"], 2),
        "dev_r": round(100 * scores["ents_r"], 2),
        "dev_f1": round(100 * scores["ents_f"], 2),
        "per_type_f1": {k: round(100 * v["f"], 2) for k, v in sorted(per_type.items())},
        "chars_per_second": round(n_chars / statistics.median(pipe_times)),
        "chars_per_second_single": round(n_chars / statistics.median(single_times)),
        "size_bytes": dir_size(model_dir),
        "inference_threads": threads,
    }


def table(results: Dict[str, Dict[str, object]]) -> str:
    head = ["run", "dev P", "dev R", "dev F1", "train min", "chars/s pipe", "chars/s single",
            "size MB"] + LABELS  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, r["dev_p"], r["dev_r"], r["dev_f1"], round(r["train_seconds"] / 60, 1),
               r["chars_per_second"], r["chars_per_second_single"],
               round(r["size_bytes"] / 1e6, 1)]  # fmt: skip
        row += [r["per_type_f1"].get(label, "n/a") for label in LABELS]
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def ablation_table(results: Dict[str, Dict[str, object]], reference: str) -> str:
    base = float(results[reference]["dev_f1"])  # type: ignore[arg-type]
    lines = [f"| ablation | dev F1 | vs {reference} | train min |", "|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("ablation_") or name == reference:
            delta = float(r["dev_f1"]) - base  # type: ignore[arg-type]
            minutes = round(float(r["train_seconds"]) / 60, 1)  # type: ignore[arg-type]
            lines.append(f"| {name} | {r['dev_f1']} | {delta:+.2f} | {minutes} |")
    return "\n".join(lines)


def config_max_steps(config: Path) -> int:
    from spacy.util import load_config

    return int(load_config(config)["training"]["max_steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cluener")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="training jobs at a time")
    parser.add_argument("--quick", action="store_true", help="300 steps each, spaCy ner 600")
    parser.add_argument(
        "--ablations", nargs="*", default=None, choices=sorted(ABLATIONS),
        help="also these ablation runs (no names: all of them)",
    )  # fmt: skip
    parser.add_argument("--ablation-steps", type=int, default=3000)
    parser.add_argument("--skip-spacy", action="store_true")
    parser.add_argument(
        "--spacy-max-steps", type=int, default=12000,
        help="cap for spaCy's ner (its dev F1 plateaus at ~62 by 11-12k steps on CLUENER)",
    )  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/cluener.json")
    parser.add_argument("--train-only", action="store_true", help="train, measure later with --reuse")
    parser.add_argument(
        "--inference-threads", type=int, default=1,
        help="torch threads when measuring speed (spaCy's ner runs on one thread)",
    )  # fmt: skip
    args = parser.parse_args()

    out = args.out.resolve()
    corpus = convert(args.data.resolve(), out)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.parallel)
    ours_config = REPO / "configs" / "bilstm_crf.cfg"
    quick = ["--training.max_steps", "300", "--training.eval_frequency", "100"] if args.quick else []
    jobs = [(f"{OURS}_seed{seed}", ours_config, ["--system.seed", str(seed), *quick])
            for seed in args.seeds]  # fmt: skip
    if not args.skip_spacy:
        spacy_steps = 600 if args.quick else args.spacy_max_steps
        jobs.append(("spacy_ner", spacy_ner_config(out), ["--training.max_steps", str(spacy_steps)]))
    ablation_reference = ""
    if args.ablations is not None:
        steps = ["--training.max_steps", str(args.ablation_steps)]
        names = args.ablations or list(ABLATIONS)
        same_as_seed0 = 0 in args.seeds and not args.quick and (
            args.ablation_steps == config_max_steps(ours_config))
        if same_as_seed0:
            names = [name for name in names if name != "default"]
            ablation_reference = f"{OURS}_seed0"
        else:
            names = ["default"] + [name for name in names if name != "default"]
            ablation_reference = "ablation_default"
        jobs += [(f"ablation_{name}", ours_config, steps + ABLATIONS[name]) for name in names]

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {
            name: pool.submit(train_job, name, cfg, extra, corpus, out, threads, args.reuse)
            for name, cfg, extra in jobs
        }
        timings = {name: future.result() for name, future in futures.items()}
    if args.train_only:
        return

    results: Dict[str, Dict[str, object]] = {}
    for name, _, _ in jobs:
        results[name] = {**timings[name], **measure(out / name / "model-best", corpus["dev"], args.inference_threads)}
    print(table(results))
    if args.ablations is not None:
        print(ablation_table(results, ablation_reference))

    ours = [results[f"{OURS}_seed{seed}"] for seed in args.seeds]
    summary: Dict[str, object] = {"runs": results}
    if ours:
        summary[OURS] = {
            "dev_f1_seeds": [r["dev_f1"] for r in ours],
            "dev_f1_mean": round(statistics.mean(r["dev_f1"] for r in ours), 2),
            "dev_f1_std": round(statistics.pstdev(r["dev_f1"] for r in ours), 2),
            "train_seconds": round(statistics.mean(r["train_seconds"] for r in ours), 1),
            "chars_per_second": round(statistics.mean(r["chars_per_second"] for r in ours)),
            "chars_per_second_single": round(statistics.mean(r["chars_per_second_single"] for r in ours)),
            "per_type_f1_seed0": ours[0]["per_type_f1"],
            "size_bytes": ours[0]["size_bytes"],
        }
    if args.ablations is not None:
        base = results[ablation_reference]["dev_f1"]
        summary["ablations"] = {
            "reference": ablation_reference,
            "steps": args.ablation_steps,
            "dev_f1": {name: r["dev_f1"] for name, r in results.items() if name.startswith("ablation_")},
            "delta_vs_reference": {name: round(r["dev_f1"] - base, 2)  # type: ignore[operator]
                                   for name, r in results.items() if name.startswith("ablation_")},
        }  # fmt: skip
    summary["machine"] = {"cores": cores, "python": platform.python_version(), "platform": platform.platform()}
    summary["quick"] = args.quick
    if "spacy_ner" in results:
        summary["spacy_ner"] = {k: results["spacy_ner"][k] for k in (
            "dev_f1", "dev_p", "dev_r", "train_seconds", "chars_per_second",
            "chars_per_second_single", "size_bytes", "per_type_f1")}  # fmt: skip
    summary["versions"] = _versions()
    (out / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.record:
        target = REPO / "benchmarks" / "results" / "cluener.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: summary[k] for k in summary if k in (OURS, "spacy_ner")}))


def _versions() -> Dict[str, str]:
    import spacy
    import thinc
    import torch

    import spacy_bilstm_crf

    return {"spacy": spacy.__version__, "thinc": thinc.__version__, "torch": torch.__version__,
            "spacy_bilstm_crf": spacy_bilstm_crf.__version__}  # fmt: skip


if __name__ == "__main__":
    main()
