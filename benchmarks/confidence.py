"""Entity confidence on CLUENER dev: calibration, cost, and what a confidence threshold buys.

    python benchmarks/confidence.py --model MODEL_DIR [--dev DEV_SPACY | --data-dir CLUENER_DIR]

MODEL_DIR is a trained pipeline with a ``bilstm_crf_ner`` component (``--pipe``)
that can score its entities (its ``confidence`` attribute; the scores are in
``doc.spans[spans_key].attrs["scores"]``). The gold data is a DocBin of CLUENER
dev (``--dev``), or CLUENER's ``dev.json`` in ``--data-dir``, converted with this
package's ``convert`` command as ``benchmarks/cluener_accuracy.py`` does. On
every dev text:

- calibration, confidence on: expected calibration error (ECE, 10 equal-width
  bins), Brier score and the reliability table over every scored span (a span is
  right when a gold entity has the same start, end and label), and the same over
  the predicted entities only (``entities_only``);
- the entities with confidence on must equal those with it off (checked text by
  text; the run fails otherwise), so their exact-span P/R/F are the same;
- speed: chars/s of ``nlp.pipe(batch_size=256)`` on one torch thread, confidence
  off and on (best of ``--repeats`` passes each, the passes interleaved so that a
  disturbance hits both), and the cost ``plain / confidence``;
- thresholds: P/R/F of the entities when those less confident than t are dropped,
  for each t of ``--thresholds`` (computed from the one scored pass);
- sentence uncertainty (the component's ``uncertainty`` setting, what ``select``
  ranks by): its cost against plain tagging (timed in the same interleaved passes;
  the costs are also given in CPU time, steadier than the wall clock on a shared machine),
  and how well each measure finds the texts the model gets wrong: the Spearman
  correlation between a text's measure and its real entity errors (false plus
  missed entities against gold), and the share of all entity errors that lie in
  the most uncertain 10% and 20% of texts (a random choice finds 10% and 20%).

Prints a table and writes ``benchmarks/results/confidence.json`` (``--out``) and,
when matplotlib is installed (``pip install -e ".[bench]"``), the reliability
diagram ``benchmarks/results/reliability.png`` (``--png``).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy
import spacy
import torch
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from spacy_bilstm_crf.evaluation.calibration import (
    calibrate_docs,
    doc_entities,
    save_reliability_diagram,
    threshold_prf,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "cluener"
RESULTS = REPO / "benchmarks" / "results"
BATCH_SIZE = 256
Entity = Tuple[int, int, str]


def convert_dev(data_dir: Path, work: Path) -> Path:
    """CLUENER's ``dev.json`` as a DocBin, with this package's converter."""
    source = data_dir / "dev.json"
    if not source.exists():
        sys.exit(f"CLUENER dev.json not found in {data_dir}: pass --data-dir DIR or --dev DEV_SPACY")
    target = work / "dev.spacy"
    cmd = [sys.executable, "-m", "spacy_bilstm_crf", "convert", str(source), str(target)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"Converting {source.name} failed:\n{done.stdout}{done.stderr}")
    return target


def scoring_pipe(nlp: Language, name: str) -> Any:
    """The component that scores entities, or exit saying why it cannot."""
    if name not in nlp.pipe_names:
        sys.exit(f"The pipeline has no component {name!r} (it has {nlp.pipe_names}); pass --pipe")
    pipe = nlp.get_pipe(name)
    missing = [attr for attr in ("confidence", "spans_key") if not hasattr(pipe, attr)]
    if missing:
        sys.exit(
            f"Component {name!r} has no {' or '.join(repr(m) for m in missing)} attribute: this "
            "version of the component cannot score its entities, so there is no confidence to measure."
        )
    return pipe


def config_name(nlp: Language, pipe_name: str) -> str:
    """The config of ``configs/`` whose network settings the pipeline was trained with,
    or ``custom`` when none matches."""
    trained = nlp.config["components"][pipe_name].get("model", {})
    for path in sorted((REPO / "configs").glob("*.cfg")):
        reference = spacy.util.load_config(path, interpolate=False)
        model = reference.get("components", {}).get(pipe_name, {}).get("model")
        if model and all(trained.get(key) == value for key, value in model.items()):
            return path.name
    return "custom"


# What a timed pass computes: plain tags, entity confidence, or confidence and the
# sentence uncertainty (the component's ``uncertainty`` setting).
SETTINGS = ("plain", "confidence", "uncertainty")


def run_pipe(nlp: Language, pipe: Any, texts: Sequence[str], confidence: bool, uncertainty: bool = False) -> List[Doc]:
    pipe.confidence = confidence
    if hasattr(pipe, "uncertainty"):
        pipe.uncertainty = uncertainty
    return list(nlp.pipe(texts, batch_size=BATCH_SIZE))


def run_setting(nlp: Language, pipe: Any, texts: Sequence[str], setting: str) -> List[Doc]:
    return run_pipe(nlp, pipe, texts, setting != "plain", setting == "uncertainty")


def best_seconds(nlp: Language, pipe: Any, texts: Sequence[str], repeats: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """The fastest full pass of each setting, after one warm-up pass of each; the
    timed passes take turns: plain, confidence, uncertainty, plain, ...

    RETURNS (Tuple[Dict[str, float], Dict[str, float]]): The wall seconds and the CPU
        seconds of this process (one torch thread: the work itself, which other
        processes on a shared machine slow down less than the wall clock).
    """
    settings = SETTINGS if hasattr(pipe, "uncertainty") else SETTINGS[:2]
    for setting in settings:
        run_setting(nlp, pipe, texts, setting)
    wall = {setting: float("inf") for setting in settings}
    cpu = dict(wall)
    for _ in range(repeats):
        for setting in settings:
            start, start_cpu = time.perf_counter(), time.process_time()
            run_setting(nlp, pipe, texts, setting)
            wall[setting] = min(wall[setting], time.perf_counter() - start)
            cpu[setting] = min(cpu[setting], time.process_time() - start_cpu)
    return wall, cpu


def average_ranks(values: Sequence[float]) -> numpy.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's correlation needs)."""
    values = numpy.asarray(values, dtype="float64")
    order = numpy.argsort(values, kind="stable")
    ranks = numpy.empty(len(values), dtype="float64")
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Spearman's rank correlation; None when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(numpy.corrcoef(ra, rb)[0, 1])


def uncertainty_vs_errors(scored: Sequence[Doc], gold: Sequence[Set[Entity]], key: str) -> Dict[str, Any]:
    """How well each measure ranks the texts by their real entity errors."""
    errors = [len(doc_entities(doc) ^ g) for doc, g in zip(scored, gold)]
    total = sum(errors)
    found: Dict[str, Any] = {"texts": len(errors), "real_entity_errors": total, "texts_with_errors": sum(e > 0 for e in errors)}
    for measure in ("best_path", "tag_errors", "entity_errors"):
        values = [float(doc.spans[key].attrs["uncertainty"][measure]) for doc in scored]
        order = numpy.argsort(-numpy.asarray(values), kind="stable")
        shares = {}
        for top in (0.1, 0.2):
            k = max(1, round(top * len(values)))
            shares[f"{top:g}"] = sum(errors[i] for i in order[:k]) / total if total else None
        found[measure] = {
            "spearman_with_entity_errors": spearman(values, errors),
            "share_of_errors_in_most_uncertain": shares,
            "expected_minus_real_errors": float(sum(values) - total) if measure == "entity_errors" else None,
        }
    return found


def prf(predicted: Sequence[Set[Entity]], gold: Sequence[Set[Entity]]) -> Dict[str, float]:
    """Micro P/R/F over exact (start_char, end_char, label) matches."""
    n_true = sum(len(p & g) for p, g in zip(predicted, gold))
    n_pred, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    p = n_true / n_pred if n_pred else 0.0
    r = n_true / n_gold if n_gold else 0.0
    return {"p": p, "r": r, "f": 2 * p * r / (p + r) if p + r else 0.0}


def versions() -> Dict[str, str]:
    import thinc

    import spacy_bilstm_crf

    found = {"spacy": spacy.__version__, "thinc": thinc.__version__, "torch": torch.__version__,
             "spacy_bilstm_crf": spacy_bilstm_crf.__version__}  # fmt: skip
    try:
        import matplotlib

        found["matplotlib"] = matplotlib.__version__
    except ImportError:
        pass
    return found


def print_table(report: Dict[str, Any]) -> None:
    print(f"{'spans':<22}{'n':>8}{'ECE':>10}{'Brier':>10}")
    for name, block in (("all scored spans", report), ("predicted entities", report["entities_only"])):
        ece = "n/a" if block["ece"] is None else f"{block['ece']:.4f}"
        brier = "n/a" if block["brier"] is None else f"{block['brier']:.4f}"
        print(f"{name:<22}{block['n_spans']:>8}{ece:>10}{brier:>10}")
    print()
    print(f"{'confidence bin':<16}{'spans':>8}{'mean conf':>11}{'accuracy':>10}")
    for row in report["bins"]:
        conf = "n/a" if row["confidence"] is None else f"{row['confidence']:.4f}"
        acc = "n/a" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        print(f"{row['lower']:.2f}-{row['upper']:.2f}{'':<7}{row['count']:>8}{conf:>11}{acc:>10}")
    print()
    print(f"{'threshold':<12}{'P':>8}{'R':>8}{'F1':>8}{'kept':>8}{'dropped':>9}")
    base = report["prf_confidence"]
    print(f"{'none':<12}{100 * base['p']:8.2f}{100 * base['r']:8.2f}{100 * base['f']:8.2f}"
          f"{report['n_pred_ents']:8d}{0:9d}")  # fmt: skip
    for t, row in report["threshold_prf"].items():
        print(f"{t:<12}{100 * row['p']:8.2f}{100 * row['r']:8.2f}{100 * row['f']:8.2f}"
              f"{row['n_kept']:8d}{row['n_dropped']:9d}")  # fmt: skip
    print()
    print(f"nlp.pipe, 1 thread, batch {BATCH_SIZE}: {report['chars_per_second_plain']:.0f} chars/s plain, "
          f"{report['chars_per_second_confidence']:.0f} chars/s with confidence "
          f"(cost x{report['confidence_cost']:.2f}); entities identical: {report['ents_identical']}")  # fmt: skip
    measured = report.get("uncertainty_vs_errors")
    if measured:
        print(f"with uncertainty: {report['chars_per_second_uncertainty']:.0f} chars/s "
              f"(cost x{report['uncertainty_cost']:.2f})")  # fmt: skip
        print(f"CPU time: confidence x{report['confidence_cost_cpu']:.2f}, "
              f"uncertainty x{report['uncertainty_cost_cpu']:.2f} the plain pass's")  # fmt: skip
        print(f"{measured['texts']} texts, {measured['real_entity_errors']} entity errors in "
              f"{measured['texts_with_errors']} of them")  # fmt: skip
        print(f"{'measure':<16}{'Spearman':>10}{'errors in top 10%':>19}{'top 20%':>9}")
        for name in ("best_path", "tag_errors", "entity_errors"):
            row = measured[name]
            rho = "n/a" if row["spearman_with_entity_errors"] is None else f"{row['spearman_with_entity_errors']:.3f}"
            top = row["share_of_errors_in_most_uncertain"]
            cells = ["n/a" if top[k] is None else f"{100 * top[k]:.1f}%" for k in ("0.1", "0.2")]
            print(f"{name:<16}{rho:>10}{cells[0]:>19}{cells[1]:>9}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="Trained pipeline with a bilstm_crf_ner component")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dev", type=Path, default=None, help="CLUENER dev as a DocBin (.spacy)")
    source.add_argument("--data-dir", type=Path, default=None,
                        help="Directory with CLUENER's dev.json, converted here")  # fmt: skip
    parser.add_argument("--pipe", default="bilstm_crf_ner", help="The component that scores entities")
    parser.add_argument("--bins", type=int, default=10, help="Equal-width confidence bins")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes per setting (best is kept)")
    parser.add_argument("--limit", type=int, default=0, help="Use the first N dev docs (0: all), for checks")
    parser.add_argument("--out", type=Path, default=RESULTS / "confidence.json")
    parser.add_argument("--png", type=Path, default=RESULTS / "reliability.png")
    args = parser.parse_args(argv)

    if not args.model.exists():
        sys.exit(f"Model not found: {args.model}")
    torch.set_num_threads(1)
    nlp = spacy.load(args.model)
    pipe = scoring_pipe(nlp, args.pipe)
    old_confidence = pipe.confidence
    with tempfile.TemporaryDirectory() as tmp:
        dev_path = args.dev or convert_dev(args.data_dir or DEFAULT_DATA_DIR, Path(tmp))
        if not dev_path.exists():
            sys.exit(f"Dev data not found: {dev_path}")
        docs = list(DocBin().from_disk(dev_path).get_docs(nlp.vocab))
    gold = [doc for doc in docs if doc.has_annotation("ENT_IOB")]
    if args.limit:
        gold = gold[: args.limit]
    texts = [doc.text for doc in gold]
    n_chars = sum(len(text) for text in texts)
    gold_ents = [doc_entities(doc) for doc in gold]
    print(f"{len(texts)} dev texts, {n_chars} chars, {sum(map(len, gold_ents))} gold entities; "
          f"1 torch thread; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)  # fmt: skip

    try:
        plain = run_pipe(nlp, pipe, texts, confidence=False)
        scored = run_pipe(nlp, pipe, texts, confidence=True)
        differing = [i for i, (a, b) in enumerate(zip(plain, scored)) if doc_entities(a) != doc_entities(b)]
        if differing:
            i = differing[0]
            sys.exit(
                f"Entities differ with confidence on in {len(differing)} of {len(texts)} texts, e.g. "
                f"{texts[i][:40]!r}: off {sorted(doc_entities(plain[i]))}, on {sorted(doc_entities(scored[i]))}"
            )
        key = pipe.spans_key
        calibration = calibrate_docs(scored, gold, key, n_bins=args.bins)
        entities_only = calibrate_docs(scored, gold, key, n_bins=args.bins, ents_only=True)
        thresholds = {f"{t:g}": threshold_prf(scored, gold, key, t) for t in args.thresholds}
        measured = None
        if hasattr(pipe, "uncertainty"):
            measured = uncertainty_vs_errors(run_setting(nlp, pipe, texts, "uncertainty"), gold_ents, key)
        seconds, cpu_seconds = best_seconds(nlp, pipe, texts, args.repeats)
    finally:
        pipe.confidence = old_confidence
        if hasattr(pipe, "uncertainty"):
            pipe.uncertainty = False

    f1_plain = prf([doc_entities(doc) for doc in plain], gold_ents)
    f1_scored = prf([doc_entities(doc) for doc in scored], gold_ents)
    report: Dict[str, Any] = {
        **calibration.to_dict(),
        "chars_per_second_plain": n_chars / seconds["plain"],
        "chars_per_second_confidence": n_chars / seconds["confidence"],
        "confidence_cost": seconds["confidence"] / seconds["plain"],
        "chars_per_second_uncertainty": n_chars / seconds["uncertainty"] if "uncertainty" in seconds else None,
        "uncertainty_cost": seconds["uncertainty"] / seconds["plain"] if "uncertainty" in seconds else None,
        "cpu_seconds": cpu_seconds,
        "confidence_cost_cpu": cpu_seconds["confidence"] / cpu_seconds["plain"],
        "uncertainty_cost_cpu": cpu_seconds["uncertainty"] / cpu_seconds["plain"] if "uncertainty" in cpu_seconds else None,
        "uncertainty_vs_errors": measured,
        "threshold_prf": thresholds,
        "prf_plain": f1_plain,
        "n_pred_ents": sum(len(doc.ents) for doc in scored),
        "prf_confidence": f1_scored,
        "ents_identical": True,
        "entities_only": entities_only.to_dict(),
        "spans_key": key,
        "component_settings": {k: getattr(pipe, k) for k in ("threshold", "min_confidence") if hasattr(pipe, k)},
        "dev": {"source": dev_path.name, "n_texts": len(texts), "n_chars": n_chars,
                "n_gold_ents": sum(map(len, gold_ents))},  # fmt: skip
        "model": args.model.name,
        "model_config": config_name(nlp, args.pipe),
        "threads": 1,
        "batch_size": BATCH_SIZE,
        "repeats": args.repeats,
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]},
        "versions": versions(),
    }
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    print(f"Wrote {args.out}")
    title = f"{args.model.name} on CLUENER dev"
    png = save_reliability_diagram(calibration.bins, args.png, title=title)
    print(f"Wrote {png}" if png else "matplotlib is not installed: no reliability diagram")


if __name__ == "__main__":
    main()
