"""Training memory: RSS over an ``nlp.update`` loop, and peak RSS of ``spacy train``.

    python benchmarks/training_memory.py [--steps 1000] [--spacy-train-steps 3000]

Update loops (each in a process of its own, one torch thread, batches of 32 CLUENER
train examples reshuffled every epoch, ``nlp.update`` with the optimizer of
``configs/bilstm_crf.cfg``; ``nlp.update`` copies the docs every step, as ``spacy
train`` does; RSS read after ``gc.collect()``):

- ``bilstm_crf_ner``: the component as it is;
- ``bilstm_crf_ner_thinc_shim``: the same with thinc's stock ``PyTorchShim.finish_update``
  (the peer: what the component did before);
- ``spacy_ner``: spaCy's own ``ner`` (efficiency tok2vec), same data.

With ``--spacy-train-steps N`` (0 skips it), also ``spacy train`` on CLUENER for N steps
with ``configs/bilstm_crf.cfg`` and with spaCy's ``ner`` config, and each one's peak RSS.
Writes ``benchmarks/results/training_memory.json`` (``--out``).
"""
import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
CLUENER = REPO.parent / "shared" / "data" / "cluener"
LOOPS = ("bilstm_crf_ner", "bilstm_crf_ner_thinc_shim", "spacy_ner")


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def read_examples(nlp, path: Path, limit: int) -> List:
    from spacy.training import Example

    examples = []
    with path.open(encoding="utf8") as f:
        for line in f:
            if len(examples) >= limit:
                break
            record = json.loads(line)
            ents = [
                (start, end + 1, label)
                for label, surfaces in record.get("label", {}).items()
                for spans in surfaces.values()
                for start, end in spans
            ]
            doc = nlp.make_doc(record["text"])
            try:
                examples.append(Example.from_dict(doc, {"entities": ents}))
            except ValueError:  # overlapping gold spans: not what is measured here
                continue
    return examples


def update_loop(name: str, steps: int, every: int) -> Dict[str, object]:
    """One loop, in this process (run by ``main`` as a subprocess)."""
    import spacy
    import torch
    from thinc.api import Adam, PyTorchShim

    torch.set_num_threads(1)
    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("zh")
    if name == "spacy_ner":
        nlp.add_pipe("ner")
    else:
        nlp.add_pipe("bilstm_crf_ner")
    examples = read_examples(nlp, CLUENER / "train.json", 10_000)
    nlp.initialize(lambda: examples)
    if name == "bilstm_crf_ner_thinc_shim":
        nlp.get_pipe("bilstm_crf_ner").model.layers[0].shims[0].__class__ = PyTorchShim
    optimizer = Adam(0.003, grad_clip=5.0)
    rng = random.Random(0)
    order: List[int] = []
    rss: Dict[int, float] = {0: rss_mb()}
    start = time.perf_counter()
    for step in range(1, steps + 1):
        if len(order) < 32:
            order = list(range(len(examples)))
            rng.shuffle(order)
        batch = [examples[order.pop()] for _ in range(32)]
        nlp.update(batch, sgd=optimizer)
        if step % every == 0:
            rss[step] = rss_mb()
    seconds = time.perf_counter() - start
    return {"rss_mb": rss, "steps_per_s": steps / seconds}


def spacy_train_peak(config: Path, steps: int, corpus: Path) -> Dict[str, float]:
    """Run ``spacy train`` for ``steps`` steps; RETURNS its peak RSS and wall time."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["spacy", "train", str(config), "--output", out]
        argv += ["--paths.train", str(corpus / "train.spacy"), "--paths.dev", str(corpus / "dev.spacy")]
        # patience 0: neither run stops early (evaluated only at steps 0 and N, spaCy's
        # default patience would end the ner run at step 1,600).
        argv += ["--training.max_steps", str(steps), "--training.eval_frequency", str(steps)]
        argv += ["--training.patience", "0"]
        peak_file = Path(out) / "peak"
        # spacy's CLI in a process that writes its own peak RSS (ru_maxrss, KB) on exit.
        code = (
            "import resource, runpy, sys\n"
            f"sys.argv = {argv!r}\n"
            "try:\n    runpy.run_module('spacy', run_name='__main__')\n"
            "finally:\n"
            f"    open({str(peak_file)!r}, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return {
            "peak_rss_mb": int(peak_file.read_text()) / 1024,
            "seconds": time.perf_counter() - start,
            "steps": steps,
        }


def run(command: List[str]) -> Dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--spacy-train-steps", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training_memory.json")
    parser.add_argument("--loop", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop:
        print(json.dumps(update_loop(args.loop, args.steps, args.every)))
        return
    results: Dict[str, object] = {"steps": args.steps}
    print(f"{'update loop':<28}{'RSS@200':>9}{'RSS@end':>9}{'growth':>8}{'steps/s':>9}")
    for name in LOOPS:
        row = run([sys.executable, __file__, "--loop", name, "--steps", str(args.steps), "--every", str(args.every)])
        rss = {int(k): v for k, v in row["rss_mb"].items()}  # type: ignore[union-attr]
        first = rss[min((s for s in rss if s >= 200), default=args.steps)]
        row["growth_from_step_200_mb"] = rss[args.steps] - first
        results[name] = row
        print(f"{name:<28}{first:>9.0f}{rss[args.steps]:>9.0f}{row['growth_from_step_200_mb']:>8.0f}{row['steps_per_s']:>9.2f}")
    if args.spacy_train_steps:
        with tempfile.TemporaryDirectory() as corpus:
            for split in ("train", "dev"):
                subprocess.run(
                    [sys.executable, "-m", "spacy_bilstm_crf", "convert", str(CLUENER / f"{split}.json"),
                     str(Path(corpus) / f"{split}.spacy")], check=True, capture_output=True,
                )  # fmt: skip
            ner_config = Path(corpus) / "ner.cfg"
            subprocess.run(
                [sys.executable, "-m", "spacy", "init", "config", str(ner_config), "--lang", "zh",
                 "--pipeline", "ner", "--optimize", "efficiency"], check=True, capture_output=True,
            )  # fmt: skip
            trained = {
                "spacy_ner": spacy_train_peak(ner_config, args.spacy_train_steps, Path(corpus)),
                "bilstm_crf_ner": spacy_train_peak(REPO / "configs" / "bilstm_crf.cfg", args.spacy_train_steps, Path(corpus)),
            }
        results["spacy_train"] = trained
        for name, row in trained.items():
            print(f"spacy train {name}: {row['steps']} steps, peak RSS {row['peak_rss_mb']:.0f} MB, {row['seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
