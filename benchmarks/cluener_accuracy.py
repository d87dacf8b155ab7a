"""CLUENER2020 side by side: bilstm_crf_ner against spaCy's built-in ``ner``, same data, same run.

    python benchmarks/cluener_accuracy.py                       # full: 3 seeds x 2 configs + spaCy ner
    python benchmarks/cluener_accuracy.py --quick               # a few minutes, for checks
    python benchmarks/cluener_accuracy.py --ablations           # adds the ablation runs (all levers)
    python benchmarks/cluener_accuracy.py --curve 10 30         # adds the data-efficiency curve
    python benchmarks/cluener_accuracy.py --curve 10 30 --curve-configs bilstm_crf_ner \
        --curve-ablations lac_full_states                     # a lever's curve beside the default's
    python benchmarks/cluener_accuracy.py --guard-only --guard-seeds 0 1 --parallel 1 --record
                                                                # People's Daily guard only

Steps: convert CLUENER's train/dev JSON to DocBins with this package's converter;
train our default config (``configs/bilstm_crf.cfg``) and the fast one
(``configs/bilstm_crf_fast.cfg``) once per seed, and spaCy's ``spacy init config
-l zh -p ner -o efficiency`` pipeline, all on CPU, on the same DocBins
(``--parallel`` jobs at a time, the cores split between them); then, for every
trained ``model-best``: dev P/R/F (spaCy's scorer, overall and per type),
training wall time, inference speed in chars/s (``nlp.pipe`` with batch 256, and
single ``nlp(text)`` calls) and size on disk. ``--curve`` trains both configs
(seed 0; ``--curve-configs`` picks them, ``--curve-ablations`` adds levers of
``ABLATIONS``) on a random share of the training sentences (seed 0), with the training
length scaled to it as the configs do; the recorded curve keeps the points of series
and shares a run did not measure. Prints the tables; writes everything to
``OUT/results.json`` and, with ``--record``, ``benchmarks/results/cluener.json``.
With ``--skip-spacy`` the spaCy ``ner`` numbers are carried over from the recorded
file, marked with the versions that measured them.

The People's Daily guard (``--guard-seeds``): a second, small corpus (news, PER/LOC/ORG,
2,318 training sentences) on which a change of the default recipe must not lose. Per
seed, the config (``--guard-config``, the default one unless given; ``--guard-ablation``
sets one of ``ABLATIONS``' levers over it) is trained on its
train split with dev picking ``model-best``, which is scored on its test split (and dev);
the runs are recorded under ``guard.peoples_daily.<--guard-name>`` with the git revision
and the config, so that a later recipe, recorded under another name, is compared with
today's on the same files. ``--guard-only`` trains nothing else and, with ``--record``,
merges the guard into the recorded file, every other key unchanged.
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
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
LABELS = ["address", "book", "company", "game", "government",
          "movie", "name", "organization", "position", "scene"]  # fmt: skip
OURS = "bilstm_crf_ner"
RECORDED = REPO / "benchmarks" / "results" / "cluener.json"  # what --record writes

FAST = "fast"
MODEL = "--components.bilstm_crf_ner.model."
# Ablations: each changes one lever of the default config (seed 0); the reference is
# the seed-0 run itself (training is deterministic, an "ablation_default" would repeat it).
ABLATIONS: Dict[str, List[str]] = {
    # (a) LAC's character embeddings as the initial character table (off in the default)
    "lac_embeddings": [MODEL + "lac_embeddings", "true"],
    # (b) LAC's BiGRU states as features; frozen instead of its top layer fine-tuned
    "no_lac_features": [MODEL + "lac_features", "false"],
    "lac_frozen": [MODEL + "lac_finetune", "0"],
    # (c) SoftLexicon vectors (the 9 B/M/E/S flags stay)
    "no_soft_lexicon": [MODEL + "lexicon_dim", "0"],
    # (d) word-type flags from jieba's POS column
    "no_word_types": [MODEL + "lexicon_pos", "false"],
    # the training-entity gazetteer
    "no_gazetteer": [MODEL + "gazetteer", "false"],
    # no lexicon at all (flags, SoftLexicon, word types)
    "no_lexicon": [MODEL + "lexicon", "null", MODEL + "lexicon_dim", "0", MODEL + "lexicon_pos", "false"],
    # the previous dropout on the BiLSTM's output
    "dropout_0.3": [MODEL + "dropout", "0.3"],
    # LAC-full's pretrained word vectors in SoftLexicon (off in the default)
    "lac_word_vectors": [MODEL + "lexicon_vectors", "lac"],
    # SoftLexicon's B/M/E/S sets split by jieba's word types (off in the default)
    "typed_sets": [MODEL + "lexicon_typed_sets", "true"],
    # LAC-full's BiGRU states over its own segmentation, per character (off in the default)
    "lac_full_states": [MODEL + "lac_full_states", "lac"],
    # the same in place of LAC-small's states
    "lac_full_instead": [MODEL + "lac_full_states", "lac", MODEL + "lac_features", "false"],
}  # fmt: skip
# Records of the file that a run does not measure again are carried over, marked.
CARRIED = (OURS, FAST, "heldout_selection", "ablations", "data_efficiency")


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


GUARD = "peoples_daily"
GUARD_SPLITS = ("train", "dev", "test")


def convert_guard(data_dir: Path, out: Path) -> Dict[str, Path]:
    """Convert the People's Daily BIO files (one char and its tag a line) to DocBins.

    data_dir (Path): The folder with train.bio, dev.bio and test.bio.
    out (Path): The run folder; the DocBins are cached in ``out/corpus/pd_<split>.spacy``.
    RETURNS (Dict[str, Path]): The DocBin of each split.
    """
    paths = {}
    for split in GUARD_SPLITS:
        source = data_dir / f"{split}.bio"
        if not source.exists():
            sys.exit(f"People's Daily {split}.bio not found in {data_dir}: pass --guard-data DIR")
        target = out / "corpus" / f"pd_{split}.spacy"
        if not target.exists():
            cmd = [sys.executable, "-m", "spacy_bilstm_crf", "convert", str(source), str(target),
                   "--format", "conll", "--scheme", "BIO"]  # fmt: skip
            run(cmd, out / "logs" / f"convert_pd_{split}.log")
        paths[split] = target
    return paths


def guard_run_name(name: str, seed: int) -> str:
    """The run folder of one guard training, distinct per recipe name and seed."""
    return f"guard_{GUARD}_{name}_seed{seed}"


def guard_run(timing: Dict[str, object], test: Dict[str, object], dev: Dict[str, object]) -> Dict[str, object]:
    """One seed's guard record from ``train_job``'s timing and ``measure`` on test and dev.

    ``measure`` names its scores ``dev_*`` whatever the DocBin; the test ones are renamed.
    """
    return {
        "test_f1": test["dev_f1"],
        "test_p": test["dev_p"],
        "test_r": test["dev_r"],
        "dev_f1": dev["dev_f1"],
        "train_seconds": timing["train_seconds"],
        "train_threads": timing.get("threads"),
        "revision": timing.get("revision"),
        "per_type_test_f1": test["per_type_f1"],
    }


def guard_train_job(name: str, config: Path, extra: List[str], corpus: Dict[str, Path], out: Path,
                    threads: int, reuse: bool, revision: Dict[str, object]) -> Dict[str, object]:  # fmt: skip
    """``train_job``, plus the revision that trained, kept beside the model for ``--reuse``."""
    stamp = out / name / "revision.json"
    reused = reuse and (out / name / "model-best").exists() and (out / name / "train_seconds.json").exists()
    timing = train_job(name, config, extra, corpus, out, threads, reuse)
    if reused and stamp.exists():
        return {**timing, **json.loads(stamp.read_text())}
    if not reused:
        stamp.write_text(json.dumps(revision))
    return {**timing, **revision}


def guard_summary(runs: Dict[int, Dict[str, object]], config: Path, revision: Dict[str, object],
                  quick: bool = False, overrides: Sequence[str] = ()) -> Dict[str, object]:  # fmt: skip
    """The record of one recipe on the guard corpus: its runs per seed and their means.

    runs (Dict[int, Dict[str, object]]): ``guard_run`` records by seed.
    config (Path): The config trained.
    overrides (Sequence[str]): Settings given on the command line over ``config``.
    revision (Dict[str, object]): ``git_revision()``: the code that trained.
    RETURNS (Dict[str, object]): What goes under ``guard.peoples_daily.<name>``.
    """
    test_f1 = [float(r["test_f1"]) for r in runs.values()]  # type: ignore[arg-type]
    dev_f1 = [float(r["dev_f1"]) for r in runs.values()]  # type: ignore[arg-type]
    seconds = [float(r["train_seconds"]) for r in runs.values()]  # type: ignore[arg-type]
    try:
        config_name = str(config.resolve().relative_to(REPO))
    except ValueError:
        config_name = config.name  # outside the repository: no machine path in the record
    return {
        "config": config_name,
        "overrides": list(overrides),
        **revision,
        "seeds": sorted(runs),
        "test_f1_mean": round(statistics.mean(test_f1), 2),
        "dev_f1_mean": round(statistics.mean(dev_f1), 2),
        "train_seconds_mean": round(statistics.mean(seconds), 1),
        "quick": quick,
        "runs": {f"seed{seed}": runs[seed] for seed in sorted(runs)},
        "versions": _versions(),
    }


def merge_guard(recorded: Dict[str, object], name: str, entry: Dict[str, object]) -> Dict[str, object]:
    """``recorded`` with ``entry`` at ``guard.peoples_daily.<name>``; every other key kept.

    Other recipes' guard records stay, so a new default is compared with today's one.
    """
    merged = dict(recorded)
    guard = dict(merged.get("guard") or {})  # type: ignore[arg-type]
    corpus = dict(guard.get(GUARD) or {})
    corpus[name] = entry
    guard[GUARD] = corpus
    merged["guard"] = guard
    return merged


def git_revision() -> Dict[str, object]:
    """The commit that trains, and whether tracked files of configs/ or the package differ from it.

    New untracked files are left out: nothing tracked imports them, so they do not change a run.
    """

    def git(*argv: str) -> str:
        result = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "configs", "spacy_bilstm_crf")
    return {"revision": git("rev-parse", "--short", "HEAD") or None, "uncommitted_changes": bool(changed)}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(model_dir: Path, dev_path: Path, threads: int, speed: bool = True) -> Dict[str, object]:
    """Dev scores, chars/s (unless ``speed`` is False: None) and size of a trained pipeline."""
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
    per_type = scores.get("ents_per_type") or {}
    result: Dict[str, object] = {
        "dev_p": round(100 * scores["ents_p"], 2),
        "dev_r": round(100 * scores["ents_r"], 2),
        "dev_f1": round(100 * scores["ents_f"], 2),
        "per_type_f1": {k: round(100 * v["f"], 2) for k, v in sorted(per_type.items())},
        "chars_per_second": None,
        "chars_per_second_single": None,
        "size_bytes": dir_size(model_dir),
        "inference_threads": threads,
    }
    if not speed:
        return result
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
    result["chars_per_second"] = round(n_chars / statistics.median(pipe_times))
    result["chars_per_second_single"] = round(n_chars / statistics.median(single_times))
    return result


def table(results: Dict[str, Dict[str, object]]) -> str:
    head = ["run", "dev P", "dev R", "dev F1", "train min", "chars/s pipe", "chars/s single",
            "size MB"] + LABELS  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, r["dev_p"], r["dev_r"], r["dev_f1"], round(r["train_seconds"] / 60, 1),
               r["chars_per_second"], r["chars_per_second_single"],
               round(r["size_bytes"] / 1e6, 1)]  # fmt: skip
        row += [r["per_type_f1"].get(label, "n/a") for label in LABELS]
        lines.append("| " + " | ".join("n/a" if v is None else str(v) for v in row) + " |")
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


def subset_corpus(train: Path, percent: int, out: Path) -> Path:
    """A random ``percent`` % of the training docs (seed 0), as a DocBin beside the full one."""
    import random

    import spacy
    from spacy.tokens import DocBin

    target = out / "corpus" / f"train_{percent}.spacy"
    if not target.exists():
        nlp = spacy.blank("zh")
        docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))
        keep = sorted(random.Random(0).sample(range(len(docs)), round(len(docs) * percent / 100)))
        DocBin(docs=[docs[i] for i in keep], store_user_data=True).to_disk(target)
    return target


def heldout_split(train: Path, out: Path, percent: int = 10) -> Dict[str, Path]:
    """Train minus a held-out ``percent`` % (seed 0) and that part, as DocBins beside the full one.

    The checkpoint of a run on the rest is chosen on the held-out part, so that the
    dev score it then reports played no part in choosing it.
    """
    import random

    import spacy
    from spacy.tokens import DocBin

    paths = {"train": out / "corpus" / f"train_minus_heldout{percent}.spacy",
             "dev": out / "corpus" / f"heldout{percent}.spacy"}  # fmt: skip
    if not all(path.exists() for path in paths.values()):
        nlp = spacy.blank("zh")
        docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))
        held = set(random.Random(0).sample(range(len(docs)), round(len(docs) * percent / 100)))
        rest = [doc for i, doc in enumerate(docs) if i not in held]
        DocBin(docs=rest, store_user_data=True).to_disk(paths["train"])
        DocBin(docs=[docs[i] for i in sorted(held)], store_user_data=True).to_disk(paths["dev"])
    return paths


def carry_over(summary: Dict[str, object], old: Dict[str, object]) -> Dict[str, object]:
    """Records of ``old`` (the recorded file) that this run did not measure, with their
    runs, marked ``carried_over`` (measured by an earlier revision); ablations merge by name.
    """
    runs = summary["runs"]  # type: ignore[assignment]
    old_runs = old.get("runs", {})
    for key in CARRIED:
        if key not in old:
            continue
        if key not in summary:
            summary[key] = {**old[key], "carried_over": True}  # type: ignore[dict-item]
        elif key == "data_efficiency":
            # Points merge by series and share: a run that measures some keeps the others.
            new_curve = summary[key]["dev_f1_by_train_percent"]  # type: ignore[index]
            old_curve = old[key].get("dev_f1_by_train_percent", {})  # type: ignore[union-attr]
            kept = sorted(name for name in old_curve if name not in new_curve)
            for name, points in old_curve.items():
                new_curve[name] = {**points, **new_curve.get(name, {})}
            summary[key]["carried_over_series"] = kept  # type: ignore[index]
        elif key == "ablations":
            new, previous = summary[key], old[key]
            for field in ("dev_f1", "delta_vs_reference"):
                merged = {**previous.get(field, {}), **new.get(field, {})}  # type: ignore[union-attr]
                new[field] = merged  # type: ignore[index]
            new["carried_over_runs"] = sorted(set(previous.get("dev_f1", {})) - set(new.get("dev_f1_measured", [])))  # type: ignore
    for name, record in old_runs.items():  # type: ignore[union-attr]
        if name not in runs:  # type: ignore[operator]
            runs[name] = {**record, "carried_over": True}  # type: ignore[index]
    return summary


def seed_summary(runs: List[Dict[str, object]]) -> Dict[str, object]:
    f1 = [float(r["dev_f1"]) for r in runs]  # type: ignore[arg-type]
    return {
        "dev_f1_seeds": f1,
        "dev_f1_mean": round(statistics.mean(f1), 2),
        "dev_f1_std": round(statistics.pstdev(f1), 2),
        "train_seconds": round(statistics.mean(float(r["train_seconds"]) for r in runs), 1),  # type: ignore[arg-type]
        "chars_per_second": _mean_or_none([r["chars_per_second"] for r in runs]),
        "chars_per_second_single": _mean_or_none([r["chars_per_second_single"] for r in runs]),
        "per_type_f1_seed0": runs[0]["per_type_f1"],
        "size_bytes": runs[0]["size_bytes"],
    }


def _mean_or_none(values: List[object]) -> Optional[int]:
    numbers = [float(v) for v in values if v is not None]  # type: ignore[arg-type]
    return round(statistics.mean(numbers)) if numbers else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cluener")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--fast-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="seeds of the fast config (configs/bilstm_crf_fast.cfg)")
    parser.add_argument("--parallel", type=int, default=2, help="training jobs at a time")
    parser.add_argument("--quick", action="store_true", help="1 epoch each, spaCy ner 600 steps")
    parser.add_argument(
        "--ablations", nargs="*", default=None, choices=sorted(ABLATIONS),
        help="also these ablation runs (no names: all of them)",
    )  # fmt: skip
    parser.add_argument("--curve", type=int, nargs="*", default=[],
                        help="also train both configs (seed 0) on these percentages of train")
    parser.add_argument("--curve-configs", nargs="*", default=[OURS, FAST], choices=[OURS, FAST],
                        help="the configs --curve trains (default: both)")
    parser.add_argument("--curve-ablations", nargs="*", default=[], choices=sorted(ABLATIONS),
                        help="levers (as --ablations) that --curve also trains at each share, seed 0")
    parser.add_argument("--skip-spacy", action="store_true",
                        help="do not train spaCy's ner: carry its recorded numbers over")
    parser.add_argument(
        "--spacy-max-steps", type=int, default=12000,
        help="cap for spaCy's ner (its dev F1 plateaus at ~62 by 11-12k steps on CLUENER)",
    )  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out")
    parser.add_argument("--record", action="store_true", help="write benchmarks/results/cluener.json")
    parser.add_argument("--train-only", action="store_true", help="train, measure later with --reuse")
    parser.add_argument("--no-speed", action="store_true",
                        help="dev scores and sizes only (benchmarks/inference_speed.py measures speed)")
    parser.add_argument(
        "--inference-threads", type=int, default=1,
        help="torch threads when measuring speed (spaCy's ner runs on one thread)",
    )  # fmt: skip
    parser.add_argument("--train-threads", type=int, default=None,
                        help="torch threads per training job (default: the cores / --parallel)")
    parser.add_argument("--heldout-seeds", type=int, nargs="*", default=[],
                        help="also train the default on train minus a held-out tenth with these seeds, "
                             "the checkpoint chosen on that tenth, and score it on dev")
    parser.add_argument("--guard-data", type=Path, default=REPO.parent / "shared" / "data" / GUARD,
                        help="People's Daily train.bio, dev.bio and test.bio")
    parser.add_argument("--guard-seeds", type=int, nargs="*", default=[],
                        help="also train on the People's Daily guard with these seeds, score on its test")
    parser.add_argument("--guard-name", default="default",
                        help="the name the guard runs are recorded under (guard.peoples_daily.NAME)")
    parser.add_argument("--guard-config", type=Path, default=REPO / "configs" / "bilstm_crf.cfg",
                        help="the config trained on the guard")
    parser.add_argument("--guard-ablation", default=None, choices=sorted(ABLATIONS),
                        help="train the guard runs with this ablation's settings over --guard-config")
    parser.add_argument("--guard-only", action="store_true",
                        help="only the guard runs, merged into the recorded file with --record")
    args = parser.parse_args()
    if args.guard_only:
        if not args.guard_seeds:
            parser.error("--guard-only needs --guard-seeds")
        guard_main(args)
        return

    out = args.out.resolve()
    corpus = convert(args.data.resolve(), out)
    cores = os.cpu_count() or 1
    threads = args.train_threads or max(1, cores // args.parallel)
    configs = {OURS: REPO / "configs" / "bilstm_crf.cfg", FAST: REPO / "configs" / "bilstm_crf_fast.cfg"}
    quick = ["--initialize.after_init.epochs", "1"] if args.quick else []
    Job = Tuple[str, Path, List[str], Dict[str, Path]]
    jobs: List[Job] = [(f"{OURS}_seed{seed}", configs[OURS], ["--system.seed", str(seed), *quick], corpus)
                       for seed in args.seeds]  # fmt: skip
    jobs += [(f"{FAST}_seed{seed}", configs[FAST], ["--system.seed", str(seed), *quick], corpus)
             for seed in args.fast_seeds]  # fmt: skip
    if not args.skip_spacy:
        spacy_steps = 600 if args.quick else args.spacy_max_steps
        jobs.append(("spacy_ner", spacy_ner_config(out), ["--training.max_steps", str(spacy_steps)], corpus))
    if args.ablations is not None:
        names = args.ablations or list(ABLATIONS)
        jobs += [(f"ablation_{name}", configs[OURS], ["--system.seed", "0", *quick, *ABLATIONS[name]], corpus)
                 for name in names]  # fmt: skip
    for percent in args.curve:
        part = {"train": subset_corpus(corpus["train"], percent, out), "dev": corpus["dev"]}
        for config_name in args.curve_configs:
            jobs.append((f"curve{percent}_{config_name}", configs[config_name], ["--system.seed", "0", *quick], part))
        for name in args.curve_ablations:
            jobs.append((f"curve{percent}_ablation_{name}", configs[OURS],
                         ["--system.seed", "0", *quick, *ABLATIONS[name]], part))  # fmt: skip

    if args.heldout_seeds:
        heldout = heldout_split(corpus["train"], out)
        jobs += [(f"heldout_{OURS}_seed{seed}", configs[OURS], ["--system.seed", str(seed), *quick], heldout)
                 for seed in args.heldout_seeds]  # fmt: skip
    guard = convert_guard(args.guard_data.resolve(), out) if args.guard_seeds else {}
    revision = git_revision()  # before training: others may commit while it runs
    guard_jobs = [(guard_run_name(args.guard_name, seed), args.guard_config.resolve(),
                   ["--system.seed", str(seed), *quick, *guard_overrides(args)], guard)
                  for seed in args.guard_seeds]  # fmt: skip
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {
            name: pool.submit(train_job, name, cfg, extra, data, out, threads, args.reuse)
            for name, cfg, extra, data in jobs
        }
        futures.update({
            name: pool.submit(guard_train_job, name, cfg, extra, data, out, threads, args.reuse, revision)
            for name, cfg, extra, data in guard_jobs
        })  # fmt: skip
        timings = {name: future.result() for name, future in futures.items()}
    if args.train_only:
        return

    results: Dict[str, Dict[str, object]] = {}
    for name, _, _, _ in jobs:
        measured = measure(out / name / "model-best", corpus["dev"], args.inference_threads, not args.no_speed)
        results[name] = {**timings[name], **measured}
    print(table(results))
    reference = f"{OURS}_seed0"
    old_record = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    if args.ablations is not None and reference not in results and reference in old_record.get("runs", {}):
        # Training is deterministic: the recorded seed-0 run is the reference, carried over.
        results[reference] = {**old_record["runs"][reference], "carried_over": True}
    if args.ablations is not None and reference in results:
        print(ablation_table(results, reference))

    summary: Dict[str, object] = {"runs": results}
    for config_name, seeds in ((OURS, args.seeds), (FAST, args.fast_seeds)):
        if seeds:
            summary[config_name] = seed_summary([results[f"{config_name}_seed{seed}"] for seed in seeds])
    if args.heldout_seeds:
        held = [results[f"heldout_{OURS}_seed{seed}"] for seed in args.heldout_seeds]
        f1 = [float(r["dev_f1"]) for r in held]  # type: ignore[arg-type]
        summary["heldout_selection"] = {
            "config": OURS,
            "seeds": args.heldout_seeds,
            "dev_f1_seeds": f1,
            "dev_f1_mean": round(statistics.mean(f1), 2),
            "selected_on": "a held-out tenth of train (seed-0 split), trained on the other nine tenths",
        }
    if args.ablations is not None and reference in results:
        base = results[reference]["dev_f1"]
        summary["ablations"] = {
            "reference": reference,
            "dev_f1_measured": sorted(name for name in results if name.startswith("ablation_")),
            "dev_f1": {name: r["dev_f1"] for name, r in results.items() if name.startswith("ablation_")},
            "delta_vs_reference": {name: round(r["dev_f1"] - base, 2)  # type: ignore[operator]
                                   for name, r in results.items() if name.startswith("ablation_")},
        }  # fmt: skip
    if args.curve:
        curve: Dict[str, Dict[str, float]] = {}
        series = [(name, f"{name}_seed0") for name in args.curve_configs]
        series += [(f"ablation_{name}", f"ablation_{name}") for name in args.curve_ablations]
        for series_name, full_run in series:
            points = {str(p): results[f"curve{p}_{series_name}"]["dev_f1"] for p in args.curve}
            if full_run in results:
                points["100"] = results[full_run]["dev_f1"]
            curve[series_name] = points  # type: ignore[assignment]
        summary["data_efficiency"] = {"seed": 0, "dev_f1_by_train_percent": curve}
        print(json.dumps(summary["data_efficiency"]))
    summary["machine"] = {"cores": cores, "python": platform.python_version(), "platform": platform.platform()}
    summary["quick"] = args.quick
    if "spacy_ner" in results:
        summary["spacy_ner"] = {k: results["spacy_ner"][k] for k in SPACY_KEYS}
    elif "spacy_ner" in old_record:
        carried = dict(old_record["spacy_ner"])
        carried.setdefault("measured_with", old_record.get("versions", {}))
        summary["spacy_ner"] = carried
    summary["versions"] = _versions()
    if old_record:  # other recipes' guard records stay
        if old_record.get("guard"):
            summary["guard"] = old_record["guard"]
        summary = carry_over(summary, old_record)
    if args.guard_seeds:
        entry = measure_guard(args, guard, out, timings, revision)
        summary = merge_guard(summary, args.guard_name, entry)
    (out / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.record:
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: summary[k] for k in summary if k in (OURS, FAST, "spacy_ner")}))


def measure_guard(args: argparse.Namespace, guard: Dict[str, Path], out: Path,
                  timings: Dict[str, Dict[str, object]],
                  revision: Dict[str, object]) -> Dict[str, object]:  # fmt: skip
    """Score each guard run's model-best on the guard's test and dev; print and summarise.

    revision (Dict[str, object]): ``git_revision()`` taken before training, unless the runs were
        reused: then the one kept beside them.
    """
    runs: Dict[int, Dict[str, object]] = {}
    for seed in args.guard_seeds:
        model = out / guard_run_name(args.guard_name, seed) / "model-best"
        test = measure(model, guard["test"], args.inference_threads, speed=False)
        dev = measure(model, guard["dev"], args.inference_threads, speed=False)
        runs[seed] = guard_run(timings[guard_run_name(args.guard_name, seed)], test, dev)
        r = runs[seed]
        print(f"guard {GUARD} {args.guard_name} seed {seed}: test P/R/F1 {r['test_p']} / {r['test_r']} / "
              f"{r['test_f1']}, dev F1 {r['dev_f1']}, {float(r['train_seconds']) / 60:.1f} min",  # type: ignore[arg-type]
              flush=True)  # fmt: skip
    first = timings[guard_run_name(args.guard_name, args.guard_seeds[0])]
    if "revision" in first:  # with --reuse, the code that trained the runs, not today's
        revision = {k: first.get(k) for k in ("revision", "uncommitted_changes")}
    entry = guard_summary(runs, args.guard_config, revision, args.quick, guard_overrides(args))
    print(f"guard {GUARD} {args.guard_name}: test F1 mean {entry['test_f1_mean']}", flush=True)
    return entry


def guard_overrides(args: argparse.Namespace) -> List[str]:
    """RETURNS (List[str]): The settings the guard runs give over ``--guard-config``
    (``--guard-ablation``'s, as in ``ABLATIONS``)."""
    return list(ABLATIONS[args.guard_ablation]) if args.guard_ablation else []


def guard_main(args: argparse.Namespace) -> None:
    """``--guard-only``: train and score the guard runs; merge them into the recorded file."""
    out = args.out.resolve()
    guard = convert_guard(args.guard_data.resolve(), out)
    threads = args.train_threads or max(1, (os.cpu_count() or 1) // args.parallel)
    quick = ["--initialize.after_init.epochs", "1"] if args.quick else []
    config = args.guard_config.resolve()
    revision = git_revision()  # before training: others may commit while it runs
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {
            name: pool.submit(guard_train_job, name, config, ["--system.seed", str(seed), *quick, *guard_overrides(args)],
                              guard, out, threads, args.reuse, revision)
            for name, seed in ((guard_run_name(args.guard_name, s), s) for s in args.guard_seeds)
        }  # fmt: skip
        timings = {name: future.result() for name, future in futures.items()}
    if args.train_only:
        return
    entry = measure_guard(args, guard, out, timings, revision)
    (out / f"guard_{GUARD}_{args.guard_name}.json").write_text(json.dumps(entry, indent=2, ensure_ascii=False))
    if args.record:
        recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
        merged = merge_guard(recorded, args.guard_name, entry)
        RECORDED.parent.mkdir(parents=True, exist_ok=True)
        RECORDED.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(entry, ensure_ascii=False))


SPACY_KEYS = ("dev_f1", "dev_p", "dev_r", "train_seconds", "chars_per_second",
              "chars_per_second_single", "size_bytes", "per_type_f1")  # fmt: skip


def _versions() -> Dict[str, str]:
    import spacy
    import thinc
    import torch

    import spacy_bilstm_crf

    return {"spacy": spacy.__version__, "thinc": thinc.__version__, "torch": torch.__version__,
            "spacy_bilstm_crf": spacy_bilstm_crf.__version__}  # fmt: skip


if __name__ == "__main__":
    main()
