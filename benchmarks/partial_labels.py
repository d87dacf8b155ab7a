"""Partial labels on CLUENER: half the entities removed, marked missing against left as ``O``.

    python benchmarks/partial_labels.py                          # the three runs, default config
    python benchmarks/partial_labels.py --config configs/bilstm_crf_fast.cfg
    python benchmarks/partial_labels.py --limit 300 --extra="--initialize.after_init.epochs 1" \\
        --results /tmp/partial_labels_smoke.json                 # a smoke run

Annotators miss entities. A component that learns a missed entity's characters as
``O`` is taught that the entity is not one; a component that marginalizes the CRF
loss over tokens without annotation (``token.ent_iob == 0``) is not. This measures
the difference. From CLUENER's train set (converted with this package's converter,
``--limit`` first docs), ``--drop`` of the entities are removed, chosen at random
over the whole corpus (numpy, ``--seed``), and three corpora are trained:

- ``full``: the original annotation;
- ``marginalized``: the removed entities' tokens are missing, and so are as many
  ``O`` tokens (chosen uniformly among all tokens outside every entity), so that a
  missing token says nothing about whether it belongs to an entity; the kept
  entities and the other ``O`` tokens keep their annotation;
- ``as_outside``: the removed entities' tokens are ``O``, nothing is missing.

Each corpus is written as a DocBin and read back the way ``spacy train`` reads it,
to check that the missing tokens survive; the counts are printed and recorded. The
three are trained with ``python -m spacy train`` (``--jobs`` at a time, one torch
thread each, logs in ``--out``), and every ``model-best`` is scored on all of dev
(entity micro P/R/F, spaCy's scorer). Prints a table and writes ``--results``
(``benchmarks/results/partial_labels.json`` by default).

``--extra`` takes ``spacy train`` overrides as one string; write it as
``--extra="--option value"`` when it holds a single option without a space.
"""
import argparse
import json
import os
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import numpy
import spacy
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Corpus

# Run as a script, this file's folder is on sys.path: the CLUENER helpers are shared.
from cluener_accuracy import REPO, _versions, convert, measure, train_job

VARIANTS = ("full", "marginalized", "as_outside")
# Token and entity positions over the corpus: (doc index, token or entity index).
Position = Tuple[int, int]


def choose_removals(docs: List[Doc], drop: float, seed: int) -> Tuple[List[Position], List[Position]]:
    """Pick the entities to remove and, for the marginalized corpus, the ``O`` tokens
    to mark missing beside them.

    docs (List[Doc]): The training docs, fully annotated.
    drop (float): Share of all entities to remove, chosen over the whole corpus.
    seed (int): Seed of numpy's generator; the entities are drawn first, then the
        ``O`` tokens, so the removed entities do not depend on the ``O`` count.
    RETURNS (Tuple[List[Position], List[Position]]): The removed entities as
        ``(doc, entity index in doc.ents)`` and the ``O`` tokens to mark missing as
        ``(doc, token index)``: as many tokens as the removed entities cover.
    """
    entities = [(d, e) for d, doc in enumerate(docs) for e in range(len(doc.ents))]
    outside = [(d, t.i) for d, doc in enumerate(docs) for t in doc if t.ent_iob_ == "O"]
    rng = numpy.random.default_rng(seed)
    picked = rng.choice(len(entities), size=round(drop * len(entities)), replace=False)
    removed = sorted(entities[i] for i in picked)
    n_tokens = sum(len(docs[d].ents[e]) for d, e in removed)
    if n_tokens > len(outside):
        raise ValueError(f"{n_tokens} removed entity tokens but only {len(outside)} O tokens to match")
    picked_o = rng.choice(len(outside), size=n_tokens, replace=False)
    return removed, sorted(outside[i] for i in picked_o)


def corrupt(docs: List[Doc], removed: List[Position], missing_o: List[Position]) -> Dict[str, List[Doc]]:
    """The three training corpora: ``full``, ``marginalized`` and ``as_outside``.

    docs (List[Doc]): The training docs, fully annotated; left unchanged.
    removed (List[Position]): The entities to remove, from ``choose_removals``.
    missing_o (List[Position]): The ``O`` tokens the marginalized corpus marks missing.
    RETURNS (Dict[str, List[Doc]]): Docs per variant, in the order of ``docs``.
    """
    removed_in: Dict[int, Set[int]] = {}
    for d, e in removed:
        removed_in.setdefault(d, set()).add(e)
    o_in: Dict[int, List[int]] = {}
    for d, i in missing_o:
        o_in.setdefault(d, []).append(i)
    variants: Dict[str, List[Doc]] = {name: [] for name in VARIANTS}
    for d, doc in enumerate(docs):
        gone = removed_in.get(d, set())
        bounds = [(ent.start, ent.end, ent.label) for ent in doc.ents]
        kept = [b for e, b in enumerate(bounds) if e not in gone]
        dropped = [b for e, b in enumerate(bounds) if e in gone]
        # set_ents takes spans of the doc it annotates: spans of each copy.
        marginalized = doc.copy()
        missing = [Span(marginalized, s, e) for s, e, _ in dropped]
        missing += [Span(marginalized, i, i + 1) for i in o_in.get(d, [])]
        marginalized.set_ents([Span(marginalized, *b) for b in kept], missing=missing, default="outside")
        as_outside = doc.copy()
        as_outside.set_ents([Span(as_outside, *b) for b in kept], default="outside")
        variants["full"].append(doc)
        variants["marginalized"].append(marginalized)
        variants["as_outside"].append(as_outside)
    return variants


def read_back(path: Path) -> Dict[str, int]:
    """Read a training DocBin as ``spacy train`` does (``spacy.Corpus.v1``) and count
    its annotation: whether missing tokens survived the round trip.

    path (Path): The DocBin.
    RETURNS (Dict[str, int]): ``docs``, ``tokens``, ``entities`` and ``tokens_missing``
        (``ent_iob == 0``) of the reference docs.
    """
    nlp = spacy.blank("zh")
    counts = {"docs": 0, "tokens": 0, "entities": 0, "tokens_missing": 0}
    for example in Corpus(path)(nlp):
        ref = example.reference
        counts["docs"] += 1
        counts["tokens"] += len(ref)
        counts["entities"] += len(ref.ents)
        counts["tokens_missing"] += sum(1 for token in ref if token.ent_iob == 0)
    return counts


def make_corpora(
    train: Path, out: Path, drop: float, seed: int, limit: Optional[int]
) -> Tuple[Dict[str, Path], Dict[str, object]]:
    """Write the three training corpora and check them after the DocBin round trip.

    train (Path): CLUENER train as a DocBin (the converter's output).
    out (Path): Working folder; the corpora go to ``out/corpus/train_{variant}.spacy``.
    drop (float): Share of the entities to remove.
    seed (int): Seed of the random choices.
    limit (Optional[int]): Use only the first ``limit`` training docs.
    RETURNS (Tuple[Dict[str, Path], Dict[str, object]]): The DocBin per variant, and
        the corpus counts (what was removed, and each DocBin as read back).
    """
    nlp = spacy.blank("zh")
    docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))
    if limit:
        docs = docs[:limit]
    removed, missing_o = choose_removals(docs, drop, seed)
    n_entities = sum(len(doc.ents) for doc in docs)
    removed_tokens = sum(len(docs[d].ents[e]) for d, e in removed)
    expected = {
        "full": (n_entities, 0),
        "marginalized": (n_entities - len(removed), removed_tokens + len(missing_o)),
        "as_outside": (n_entities - len(removed), 0),
    }
    paths: Dict[str, Path] = {}
    read: Dict[str, Dict[str, int]] = {}
    for name, variant in corrupt(docs, removed, missing_o).items():
        paths[name] = out / "corpus" / f"train_{name}.spacy"
        DocBin(docs=variant, store_user_data=True).to_disk(paths[name])
        read[name] = read_back(paths[name])
        if (read[name]["entities"], read[name]["tokens_missing"]) != expected[name]:
            raise RuntimeError(f"{paths[name].name} read back {read[name]}, expected (entities, "
                               f"tokens_missing) = {expected[name]}")  # fmt: skip
    counts: Dict[str, object] = {
        "docs": len(docs),
        "tokens": sum(len(doc) for doc in docs),
        "entities": n_entities,
        "entities_kept": n_entities - len(removed),
        "entities_removed": len(removed),
        "removed_entity_tokens": removed_tokens,
        "outside_tokens_marked_missing": len(missing_o),
        "read_back": read,
    }
    return paths, counts


def check_reuse(out: Path, settings: Dict[str, object], reuse: bool) -> None:
    """Record the settings of ``out``; with ``reuse``, refuse models trained with others."""
    recorded = out / "settings.json"
    if reuse and recorded.exists():
        old = json.loads(recorded.read_text())
        if old != settings:
            sys.exit(f"--reuse: the models in {out} were trained with {old}, not {settings}: "
                     "pass another --out or drop --reuse")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(settings, indent=2))


def config_name(config: Path) -> str:
    """The config as the results name it: relative to the repository when inside it."""
    try:
        return config.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return config.name


def table(results: Dict[str, object], counts: Dict[str, object]) -> str:
    read: Dict[str, Dict[str, int]] = counts["read_back"]  # type: ignore[assignment]
    pr: Dict[str, Dict[str, float]] = results["precision_recall"]  # type: ignore[assignment]
    minutes: Dict[str, float] = results["training_minutes"]  # type: ignore[assignment]
    lines = ["| train corpus | entities | tokens missing | dev P | dev R | dev F1 | train min |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in VARIANTS:
        lines.append(f"| {name} | {read[name]['entities']} | {read[name]['tokens_missing']} | "
                     f"{pr[name]['dev_p']} | {pr[name]['dev_r']} | {results[name]} | {minutes[name]} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cluener")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "runs" / "partial_labels",
                        help="working folder: corpora, models, logs")  # fmt: skip
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "partial_labels.json")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "bilstm_crf.cfg")
    parser.add_argument("--drop", type=float, default=0.5, help="share of the train entities to remove")
    parser.add_argument("--seed", type=int, default=0, help="seed of the removals (numpy)")
    parser.add_argument("--train-seed", type=int, default=0, help="--system.seed of spacy train")
    parser.add_argument("--limit", type=int, default=None, help="only the first N train docs")
    parser.add_argument("--extra", type=str, default="", help='overrides for spacy train, e.g. "--x.y 1"')
    parser.add_argument("--jobs", type=int, default=2, help="training jobs at a time (one thread each)")
    parser.add_argument("--reuse", action="store_true", help="keep trained models found in --out")
    parser.add_argument("--train-only", action="store_true", help="train, measure later with --reuse")
    args = parser.parse_args()
    if not 0 < args.drop < 1:
        parser.error("--drop must be between 0 and 1")

    out = args.out.resolve()
    extra = shlex.split(args.extra)
    settings: Dict[str, object] = {
        "drop": args.drop,
        "seed": args.seed,
        "train_seed": args.train_seed,
        "config": config_name(args.config),
        "extra_overrides": extra,
        "limit": args.limit,
    }
    check_reuse(out, settings, args.reuse)
    corpus = convert(args.data.resolve(), out)
    train_paths, counts = make_corpora(corpus["train"], out, args.drop, args.seed, args.limit)
    print(json.dumps(counts, indent=2), flush=True)

    overrides = ["--system.seed", str(args.train_seed), *extra]
    # One torch thread per job: the jobs run side by side and compare under the same load.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            name: pool.submit(train_job, name, args.config.resolve(), overrides,
                              {"train": train_paths[name], "dev": corpus["dev"]}, out, 1, args.reuse)
            for name in VARIANTS
        }  # fmt: skip
        timings = {name: future.result() for name, future in futures.items()}
    if args.train_only:
        return

    # Training is over: scoring may use every core.
    scores = {name: measure(out / name / "model-best", corpus["dev"], os.cpu_count() or 1, speed=False)
              for name in VARIANTS}  # fmt: skip
    results: Dict[str, object] = {name: scores[name]["dev_f1"] for name in VARIANTS}
    results["marginalized_minus_as_outside"] = round(
        float(scores["marginalized"]["dev_f1"]) - float(scores["as_outside"]["dev_f1"]), 2  # type: ignore[arg-type]
    )
    results["settings"] = settings
    results["corpus_counts"] = counts
    results["precision_recall"] = {name: {"dev_p": scores[name]["dev_p"], "dev_r": scores[name]["dev_r"]}
                                   for name in VARIANTS}  # fmt: skip
    results["training_minutes"] = {name: round(float(timings[name]["train_seconds"]) / 60, 2)  # type: ignore[arg-type]
                                   for name in VARIANTS}  # fmt: skip
    results["versions"] = _versions()
    print(table(results, counts))
    print(f"marginalized - as_outside: {results['marginalized_minus_as_outside']:+.2f} dev F1")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
