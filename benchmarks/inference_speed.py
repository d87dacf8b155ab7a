"""End-to-end CPU inference speed on the CLUENER dev texts: fp32, INT8, exported, spaCy ner.

    python benchmarks/inference_speed.py MODEL_DIR [--fast-model DIR] [--spacy-ner DIR] [--dev DEV_JSON]
        [--baseline-src DIR]

MODEL_DIR is a trained bilstm_crf_ner pipeline (float32), from the default config. Variants:

- ``fp32``: ``spacy.load(MODEL_DIR)``
- ``int8``: the same, quantized in memory (``quantize_pipeline``; what the
  ``quantize`` command saves)
- ``bf16``: the same weights with ``bf16_inference = true`` (the recurrences in
  bfloat16; fast on CPUs with AMX)
- ``exported``: the float32 network exported (``torch.export``), run by ``serving.Tagger``
  (no spaCy); ``exported_int8`` likewise from the INT8 pipeline
- ``onnx`` / ``onnx_int8``: the network exported for ONNX Runtime (``export --onnx``,
  ``--onnx --int8``), run by ``serving.onnx_tagger.OnnxTagger`` (numpy and onnxruntime;
  one intra-op thread, so timed with the 1-thread setting only); ``--onnx-model`` and
  ``--onnx-int8-model`` take exports made beforehand (exporting takes minutes)
- ``fast_fp32``: a pipeline trained with ``configs/bilstm_crf_fast.cfg`` (``--fast-model``)
- ``spacy_ner``: spaCy's built-in ``ner`` trained on the same data (``--spacy-ner``)

For each: chars/s with ``nlp.pipe(batch_size=256)`` and with one ``nlp(text)`` call per
text (best of ``--repeats`` each, the variants taking turns so that a slow phase of a
shared machine falls on all of them), with 1 torch thread and with all cores; dev F1
(spaCy's scorer through ``nlp.evaluate`` for the spaCy pipelines, exact span
matching for all, the two must agree); size on disk. Then a profile of where
the CPU goes in our pipeline: tokenizer, featurization, features/LSTM/head inside
the network (forward hooks), CRF decode, set_annotations, and the lexicon's share
(matching and flags). With ``--baseline-src DIR`` (an older checkout of the
package) the fast model's ``nlp.pipe`` is also timed under that revision and this
one, alternately, in fresh processes (``pipe_timer.py``). Prints a table and
writes ``benchmarks/results/inference.json`` (``--out``), with ``serving_install_bytes``:
what each way of serving installs (the files of the installed distributions it
pulls in, read from this environment's package metadata): the pipeline (this
package, torch, spaCy and their requirements) against an ONNX export (onnxruntime
and numpy).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import spacy
import torch
from spacy.language import Language
from spacy.training import Example

from spacy_bilstm_crf.network import model as model_module
from spacy_bilstm_crf.component.architectures import featurize, get_torch_module
from spacy_bilstm_crf.corpus import CorpusStats, read_clue
from spacy_bilstm_crf.serving.deploy import cpu_has_bf16, export_pipeline, find_pipe, quantize_pipeline
from spacy_bilstm_crf.serving.tagger import Tagger

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO.parent / "shared" / "data" / "cluener" / "dev.json"
BATCH_SIZE = 256
Entity = Tuple[int, int, str]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def interleaved_best(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """The fastest of ``repeats`` runs of each function, the functions taking turns, after
    one warm-up run each: a slow phase of a shared machine then falls on every variant
    alike instead of on whichever was being timed, and the ratios between them hold."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def span_f1(predicted: Sequence[List[Entity]], gold: Sequence[List[Entity]]) -> float:
    """Micro F1 over exact (start_char, end_char, label) matches."""
    n_pred = sum(len(p) for p in predicted)
    n_gold = sum(len(g) for g in gold)
    n_true = sum(len(set(p) & set(g)) for p, g in zip(predicted, gold))
    if not n_true:
        return 0.0
    precision, recall = n_true / n_pred, n_true / n_gold
    return 2 * precision * recall / (precision + recall)


class Variant:
    """Something that turns texts into entities, timed the same way for all."""

    def __init__(self, name: str, size_bytes: int, nlp: Optional[Language] = None,
                 tagger: Optional[object] = None, onnx: bool = False) -> None:  # fmt: skip
        self.name, self.size_bytes, self.nlp, self.tagger = name, size_bytes, nlp, tagger
        # ONNX Runtime's threads are set at load (one), not by torch.set_num_threads.
        self.onnx = onnx

    def pipe(self, texts: Sequence[str]) -> List[List[Entity]]:
        if self.tagger is not None:
            return list(self.tagger.pipe(texts, batch_size=BATCH_SIZE))
        docs = self.nlp.pipe(texts, batch_size=BATCH_SIZE)
        return [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]

    def single(self, texts: Sequence[str]) -> None:
        call = self.tagger if self.tagger is not None else self.nlp
        for text in texts:
            call(text)


def load_dev(path: Path) -> Tuple[List[str], List[spacy.tokens.Doc]]:
    """The dev texts and their gold docs, read with the project's CLUENER reader."""
    gold = list(read_clue(path, spacy.blank("zh"), CorpusStats()))
    return [doc.text for doc in gold], gold


def spacy_f1(nlp: Language, gold_docs: Sequence[spacy.tokens.Doc]) -> float:
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold_docs]
    return float(nlp.evaluate(examples, batch_size=BATCH_SIZE)["ents_f"] or 0.0)


def installed_bytes(roots: Sequence[str]) -> Dict[str, object]:
    """The bytes on disk of the installed distributions ``roots`` and everything they
    require (markers evaluated here, no extras), from their package metadata.

    RETURNS (Dict[str, object]): ``bytes`` and the ``distributions`` counted.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: Dict[str, int] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        size = 0
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                size += path.stat().st_size
        seen[name] = size
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return {"bytes": sum(seen.values()), "distributions": sorted(seen)}


def build_variants(model_dir: Path, fast_model: Optional[Path], spacy_ner: Optional[Path], work: Path,
                   onnx_dirs: Dict[str, Optional[Path]]) -> List[Variant]:  # fmt: skip
    variants = [Variant("fp32", dir_size(model_dir), nlp=spacy.load(model_dir))]
    int8 = spacy.load(model_dir)
    quantize_pipeline(int8)
    int8.to_disk(work / "int8")
    variants.append(Variant("int8", dir_size(work / "int8"), nlp=int8))
    # The same weights, products in bfloat16 (bf16_inference, set at load).
    name = find_pipe(variants[0].nlp).name
    bf16 = spacy.load(model_dir, config={"components": {name: {"model": {"bf16_inference": True}}}})
    variants.append(Variant("bf16", dir_size(model_dir), nlp=bf16))
    export_pipeline(variants[0].nlp, work / "exported")
    variants.append(Variant("exported", dir_size(work / "exported"), tagger=Tagger.load(work / "exported")))
    export_pipeline(int8, work / "exported_int8")
    variants.append(
        Variant("exported_int8", dir_size(work / "exported_int8"), tagger=Tagger.load(work / "exported_int8", trust_torchscript=True))
    )
    from spacy_bilstm_crf.serving.onnx_export import export_onnx
    from spacy_bilstm_crf.serving.onnx_tagger import OnnxTagger

    for name, path in onnx_dirs.items():
        if path is None:
            path = export_onnx(variants[0].nlp, work / name, int8=name == "onnx_int8")
        variants.append(Variant(name, dir_size(path), tagger=OnnxTagger.load(path, threads=1), onnx=True))
    if fast_model is not None:
        variants.append(Variant("fast_fp32", dir_size(fast_model), nlp=spacy.load(fast_model)))
    if spacy_ner is not None:
        variants.append(Variant("spacy_ner", dir_size(spacy_ner), nlp=spacy.load(spacy_ner)))
    return variants


def profile(nlp: Language, texts: Sequence[str], repeats: int) -> Dict[str, float]:
    """Seconds per stage for the whole dev set in batches of 256 (best of ``repeats``).

    The network's share is split with forward hooks on its LSTM and its head
    (LayerNorm + output layer; on the CPU the LSTM is ``recurrence.bilstm_rows``, which
    includes the character and class lookups folded into its input projection);
    "lexicon" is matching and flags; "features" is the rest of the emissions: code point
    normalization, character table lookup, bigram hashing, classes, lexicon.
    """
    pipe = find_pipe(nlp)
    module = get_torch_module(pipe.model).eval()
    batches = [list(texts[i : i + BATCH_SIZE]) for i in range(0, len(texts), BATCH_SIZE)]
    spent: Dict[str, float] = {}

    def timed(key: str, sub: torch.nn.Module) -> None:
        starts: List[float] = []
        sub.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))

        def after(*_: object) -> None:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - starts.pop()

        sub.register_forward_hook(after)

    timed("lstm", module.lstm)
    timed("head", module.project)
    timed("head", module.norm)

    active: set = set()

    def timed_call(key: str, owner: object, name: str, attribute: object) -> None:
        """Time every call of ``owner.name`` (a function or a bound method) under ``key``."""

        def wrapper(*args: object, **kwargs: object) -> object:
            # A timed call inside another of the same key is counted once, in the outer
            # one (e.g. ``_lac_states`` calling ``_lac_rows`` in an INT8 pipeline).
            if key in active:
                return attribute(*args, **kwargs)  # type: ignore[operator]
            active.add(key)
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)  # type: ignore[operator]
            finally:
                active.discard(key)
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, wrapper)

    # Predictions on the CPU run the LSTM as recurrence.bilstm_rows, not module.lstm.
    restore_rows = model_module.bilstm_rows
    timed_call("lstm", model_module, "bilstm_rows", restore_rows)
    # Batches of a few sentences run it as compiled kernels (``rnn_kernels.py``).
    timed_call("lstm", module, "_compiled_lstm", module._compiled_lstm)
    if module.lexicon is not None:
        # Lexicon matching and its B/M/E/S flags (word types, when used): the share
        # the lexicon costs (SoftLexicon pooling counts as features).
        for name in ("matches", "word_flags"):
            timed_call("lexicon", module.lexicon, name, getattr(module.lexicon, name))
    # The network calls LAC's layers directly (no module forward to hook): time its
    # whole step through instance attributes that shadow the methods (padded states,
    # or the rows that predictions on the CPU give the LSTM).
    lac_methods = ("_lac_states", "_lac_rows") if module.lac is not None else ()
    for name in lac_methods:
        timed_call("lac", module, name, getattr(module, name))

    def stages() -> Dict[str, float]:
        spent.clear()
        out = {k: 0.0 for k in ("tokenizer", "featurize", "emissions", "crf_decode", "set_annotations")}
        for batch in batches:
            t0 = time.perf_counter()
            docs = [nlp.make_doc(text) for text in batch]
            t1 = time.perf_counter()
            tensors = featurize(pipe.model, docs, None)
            codepoints, lengths = torch.as_tensor(tensors.codepoints), torch.as_tensor(tensors.lengths)
            t2 = time.perf_counter()
            with torch.no_grad():
                emissions = module.emissions(codepoints, lengths)
                t3 = time.perf_counter()
                tags = module.crf.decode(emissions, lengths).numpy()
            t4 = time.perf_counter()
            pipe.set_annotations(docs, [row[: len(doc)] for row, doc in zip(tags, docs)])
            t5 = time.perf_counter()
            for key, seconds in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                out[key] += seconds
        out["lstm"] = spent.get("lstm", 0.0)
        out["head"] = spent.get("head", 0.0)
        out["lac"] = spent.get("lac", 0.0)
        out["lexicon"] = spent.get("lexicon", 0.0)
        out["features"] = out["emissions"] - out["lstm"] - out["head"] - out["lac"]
        return out

    try:
        runs = [stages() for _ in range(repeats + 1)][1:]  # the first is a warm-up
    finally:
        model_module.bilstm_rows = restore_rows
        delattr(module, "_compiled_lstm")
        for name in lac_methods:
            delattr(module, name)  # the instance's wrapper: back to the method
        if module.lexicon is not None:
            for name in ("matches", "word_flags"):
                delattr(module.lexicon, name)  # the instance's wrapper: back to the method
    best = min(runs, key=lambda run: sum(run[k] for k in ("tokenizer", "featurize", "emissions", "crf_decode", "set_annotations")))
    start = time.perf_counter()
    list(nlp.pipe(texts, batch_size=BATCH_SIZE))
    best["end_to_end_pipe"] = time.perf_counter() - start
    total = sum(best[k] for k in ("tokenizer", "featurize", "emissions", "crf_decode", "set_annotations"))
    best["lexicon_share"] = best["lexicon"] / total
    return best


def compare_with_baseline(model_dir: Path, baseline_src: Path, dev: Path, rounds: int, repeats: int) -> Dict[str, object]:
    """``nlp.pipe`` of one pipeline under an older checkout of the package and under
    this one, alternately (``rounds`` times each, best kept), one thread, each in a
    fresh process (``pipe_timer.py``)."""
    timer = Path(__file__).with_name("pipe_timer.py")
    best = {"baseline": 0.0, "current": 0.0}
    found: Dict[str, List[List[Entity]]] = {}
    for _ in range(rounds):
        for which, src in (("baseline", baseline_src), ("current", REPO)):
            env = dict(os.environ, PYTHONPATH=str(src.resolve()))
            command = [sys.executable, str(timer), str(model_dir), "--dev", str(dev), "--repeats", str(repeats)]
            out = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
            best[which] = max(best[which], out["chars_per_second_pipe"])
            found[which] = [[tuple(e) for e in doc] for doc in out["entities"]]
            print(f"  {which:8s} {out['chars_per_second_pipe']:9.0f} chars/s", file=sys.stderr)
    revision = subprocess.run(
        ["git", "-C", str(baseline_src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "baseline_revision": revision or None,
        "chars_per_second_pipe_baseline": best["baseline"],
        "chars_per_second_pipe_current": best["current"],
        "speedup": best["current"] / best["baseline"],
        "texts_differing": sum(a != b for a, b in zip(found["baseline"], found["current"])),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="Trained bilstm_crf_ner pipeline (float32)")
    parser.add_argument("--fast-model", type=Path, default=None, help="Pipeline trained with configs/bilstm_crf_fast.cfg")
    parser.add_argument("--spacy-ner", type=Path, default=None, help="spaCy ner pipeline trained on the same data")
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="CLUENER dev.json (JSON lines)")
    parser.add_argument("--repeats", type=int, default=3, help="Timed nlp.pipe runs per setting (best is kept)")
    parser.add_argument("--limit", type=int, default=0, help="Use the first N dev texts (0: all)")
    parser.add_argument("--threads", default="1,all", help="Torch thread counts to time, comma-separated; 'all' is every core")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "inference.json")
    parser.add_argument("--onnx-model", type=Path, default=None, help="export --onnx of MODEL_DIR (default: made here)")
    parser.add_argument("--onnx-int8-model", type=Path, default=None,
                        help="export --onnx --int8 of MODEL_DIR (default: made here)")  # fmt: skip
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="An older checkout of the package (e.g. git worktree add ../baseline REV): "
                             "the fast model's nlp.pipe is timed under it and under this one, alternately")  # fmt: skip
    parser.add_argument("--baseline-rounds", type=int, default=3, help="Alternating rounds for --baseline-src")
    args = parser.parse_args()

    texts, gold_docs = load_dev(args.dev)
    if args.limit:
        texts, gold_docs = texts[: args.limit], gold_docs[: args.limit]
    gold = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in gold_docs]
    n_chars = sum(len(t) for t in texts)
    all_threads = os.cpu_count() or 1
    thread_settings = sorted({all_threads if t == "all" else int(t) for t in args.threads.split(",")})
    print(f"{len(texts)} dev texts, {n_chars} chars; torch threads {thread_settings}; "
          f"load average {os.getloadavg()[0]:.1f} on {all_threads} cores", file=sys.stderr)  # fmt: skip

    results: Dict[str, Dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_dirs = {"onnx": args.onnx_model, "onnx_int8": args.onnx_int8_model}
        variants = build_variants(args.model_dir, args.fast_model, args.spacy_ner, Path(tmp), onnx_dirs)
        torch.set_num_threads(1)
        predictions = {v.name: v.pipe(texts) for v in variants}
        by_threads: Dict[str, Dict[str, Dict[str, float]]] = {v.name: {} for v in variants}
        for threads in thread_settings:
            torch.set_num_threads(threads)
            # All variants take turns (see interleaved_best): their ratios are the numbers
            # that matter, and a shared machine's speed drifts over minutes.
            timed = [v for v in variants if threads == 1 or not v.onnx]
            pipe_s = interleaved_best({v.name: partial(v.pipe, texts) for v in timed}, args.repeats)
            single_s = interleaved_best({v.name: partial(v.single, texts) for v in timed}, args.repeats)
            for v in timed:
                by_threads[v.name][str(threads)] = {
                    "chars_per_second_pipe": n_chars / pipe_s[v.name],
                    "chars_per_second_single": n_chars / single_s[v.name],
                }
                print(f"  {v.name:14s} threads={threads}: pipe {n_chars / pipe_s[v.name]:9.0f} chars/s, "
                      f"single {n_chars / single_s[v.name]:9.0f} chars/s", file=sys.stderr)  # fmt: skip
        for v in variants:
            row: Dict[str, object] = {"size_bytes": v.size_bytes, "dev_f1": span_f1(predictions[v.name], gold)}
            if v.nlp is not None:
                row["dev_f1_spacy_scorer"] = spacy_f1(v.nlp, gold_docs)
            row.update(by_threads[v.name][str(thread_settings[0])])
            row["threads"] = thread_settings[0]
            row["by_threads"] = by_threads[v.name]
            results[v.name] = row
        torch.set_num_threads(1)
        # bf16 is profiled only where the CPU has bfloat16 units: elsewhere it runs at a
        # twentieth of float32, which the timings above already show.
        profiled = ("fp32", "int8", "bf16", "fast_fp32") if cpu_has_bf16() else ("fp32", "int8", "fast_fp32")
        profiles = {v.name: profile(v.nlp, texts, args.repeats) for v in variants if v.name in profiled}
        agreement = {
            "exported_vs_fp32_texts_differing": sum(a != b for a, b in zip(predictions["exported"], predictions["fp32"])),
            "exported_int8_vs_int8_texts_differing": sum(a != b for a, b in zip(predictions["exported_int8"], predictions["int8"])),
            "onnx_vs_fp32_texts_differing": sum(a != b for a, b in zip(predictions["onnx"], predictions["fp32"])),
            "onnx_int8_vs_fp32_texts_differing": sum(a != b for a, b in zip(predictions["onnx_int8"], predictions["fp32"])),
        }  # fmt: skip

    baseline = None
    if args.baseline_src is not None and args.fast_model is not None:
        print(f"fast model under {args.baseline_src} and under this checkout:", file=sys.stderr)
        baseline = compare_with_baseline(args.fast_model, args.baseline_src, args.dev, args.baseline_rounds, args.repeats)

    fp32, int8 = results["fp32"], results["int8"]
    summary = {
        "int8_speedup_pipe": int8["chars_per_second_pipe"] / fp32["chars_per_second_pipe"],
        "int8_speedup_single": int8["chars_per_second_single"] / fp32["chars_per_second_single"],
        "int8_f1_loss_points": 100 * (fp32["dev_f1"] - int8["dev_f1"]),
        "bf16_speedup_pipe": results["bf16"]["chars_per_second_pipe"] / fp32["chars_per_second_pipe"],
        "bf16_f1_loss_points": 100 * (fp32["dev_f1"] - results["bf16"]["dev_f1"]),
    }
    if "spacy_ner" in results:
        for name in ("fp32", "fast_fp32"):
            if name in results:
                for mode in ("pipe", "single"):
                    ratio = results[name][f"chars_per_second_{mode}"] / results["spacy_ner"][f"chars_per_second_{mode}"]
                    summary[f"{name}_vs_spacy_ner_{mode}"] = ratio
    onnx, onnx_int8 = results["onnx"], results["onnx_int8"]
    summary["onnx_vs_fp32_pipe"] = onnx["chars_per_second_pipe"] / fp32["chars_per_second_pipe"]
    summary["onnx_vs_fp32_single"] = onnx["chars_per_second_single"] / fp32["chars_per_second_single"]
    summary["onnx_int8_vs_onnx_pipe"] = onnx_int8["chars_per_second_pipe"] / onnx["chars_per_second_pipe"]
    summary["onnx_int8_f1_loss_points"] = 100 * (onnx["dev_f1"] - onnx_int8["dev_f1"])
    if "spacy_ner" in results:
        summary["onnx_vs_spacy_ner_single"] = onnx["chars_per_second_single"] / results["spacy_ner"]["chars_per_second_single"]
    if "fast_fp32" in results:
        summary["fp32_vs_fast_fp32_pipe"] = fp32["chars_per_second_pipe"] / results["fast_fp32"]["chars_per_second_pipe"]
        summary["fast_fp32_lexicon_share"] = profiles["fast_fp32"]["lexicon_share"]
    if baseline is not None:
        summary["fast_fp32_vs_baseline_pipe"] = baseline["speedup"]
    report = {
        "dev": {"n_texts": len(texts), "n_chars": n_chars},
        "machine": {"cpu_count": all_threads, "platform": platform.platform(), "load_average_1min": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "spacy": spacy.__version__},
        "batch_size": BATCH_SIZE,
        "variants": results,
        "summary": summary,
        "agreement": agreement,
        "profile_seconds_1_thread": profiles,
        "fast_fp32_vs_baseline": baseline,
        "serving_install_bytes": {
            "pipeline": installed_bytes(["spacy-bilstm-crf"]),
            "onnx": installed_bytes(["onnxruntime", "numpy"]),
        },
    }  # fmt: skip
    print_table(results, profiles, summary, agreement, n_chars)
    print("serving installs " + ", ".join(
        f"{way} {sizes['bytes'] / 1e6:.0f} MB ({len(sizes['distributions'])} distributions)"
        for way, sizes in report["serving_install_bytes"].items()
    ))  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
    print(f"Wrote {args.out}")


def print_table(results, profiles, summary, agreement, n_chars: int) -> None:
    threads = sorted({t for row in results.values() for t in row["by_threads"]}, key=int)
    head = "".join(f" pipe/s t={t:<3s} single/s t={t:<3s}" for t in threads)
    print(f"{'variant':14s}{head}  dev F1   size MB")
    for name, row in results.items():
        if "dev_f1_spacy_scorer" in row and abs(row["dev_f1_spacy_scorer"] - row["dev_f1"]) > 1e-9:
            print(f"WARNING {name}: spaCy scorer F1 {row['dev_f1_spacy_scorer']} != span F1 {row['dev_f1']}")
        cells = "".join(
            f" {row['by_threads'][t]['chars_per_second_pipe']:12.0f} {row['by_threads'][t]['chars_per_second_single']:14.0f}"
            if t in row["by_threads"] else f" {'-':>12s} {'-':>14s}"
            for t in threads
        )
        print(f"{name:14s}{cells}  {100 * row['dev_f1']:6.2f}  {row['size_bytes'] / 1e6:7.1f}")
    print()
    for name, stages in profiles.items():
        total = sum(stages[k] for k in ("tokenizer", "featurize", "emissions", "crf_decode", "set_annotations"))
        parts = ", ".join(
            f"{k} {1000 * stages[k]:.0f} ms ({100 * stages[k] / total:.0f}%)"
            for k in ("tokenizer", "featurize", "features", "lexicon", "lac", "lstm", "head", "crf_decode", "set_annotations")
        )
        print(f"profile {name} (1 thread, {n_chars} chars): {parts}; stages {1000 * total:.0f} ms, "
              f"nlp.pipe {1000 * stages['end_to_end_pipe']:.0f} ms")  # fmt: skip
    print()
    print(" ".join(f"{k}={v:.3f}" for k, v in summary.items()), agreement)


if __name__ == "__main__":
    main()
