"""Long texts: speed and peak memory of one very long text, against ``nlp.pipe`` on short ones.

    python benchmarks/long_texts.py MODEL_DIR [--chars 1000000] [--dev DEV_JSON]

MODEL_DIR is a trained bilstm_crf_ner pipeline. Every measurement runs in a
process of its own, on one torch thread, so its peak memory is its own:

- ``pipe``: chars/s of ``nlp.pipe(batch_size=256)`` over the CLUENER dev texts (the
  reference speed);
- ``long``: one text of ``--chars`` characters (the dev texts joined, repeated),
  tagged with ``nlp(text)``: chars/s and peak RSS above the loaded pipeline;
- ``unwindowed``: the same for a ``--unwindowed-chars`` text with windows and length
  batching switched off (one sequence per doc, what the component did before), the peer;
- ``mixed_batch``: ``nlp.pipe`` over 255 dev texts plus one 20,000-character text,
  against the 255 alone: how much one long text slows its batch;
- ``dev_parity``: on every dev text, the entities of ``nlp.pipe`` against those of one
  plain forward pass per batch of 256 (no windows, no length batches): must be equal.

Prints a table and writes ``benchmarks/results/long_texts.json`` (``--out``).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO.parent / "shared" / "data" / "cluener" / "dev.json"
BATCH_SIZE = 256


def dev_texts(path: Path) -> List[str]:
    with path.open(encoding="utf8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def long_text(texts: List[str], n_chars: int) -> str:
    """The dev texts joined (each ends a sentence), repeated up to ``n_chars`` characters."""
    joined = "".join(t if t.endswith(("。", "！", "？")) else t + "。" for t in texts)
    return (joined * (n_chars // len(joined) + 1))[:n_chars]


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(args: argparse.Namespace) -> Dict[str, float]:
    """One measurement, in this process (run by ``main`` as a subprocess)."""
    import spacy
    import torch

    torch.set_num_threads(1)
    nlp = spacy.load(args.model)
    ner = nlp.get_pipe("bilstm_crf_ner")
    texts = dev_texts(Path(args.dev))
    nlp("预热")  # first-call allocations belong to the loaded pipeline
    if args.worker == "pipe":
        list(nlp.pipe(texts, batch_size=BATCH_SIZE))  # warm-up
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=BATCH_SIZE))
        seconds = time.perf_counter() - start
        return {"chars_per_s": sum(map(len, texts)) / seconds, "seconds": seconds}
    if args.worker == "mixed_batch":
        short = texts[: BATCH_SIZE - 1]
        extra = long_text(texts, 20_000)
        timings = {}
        for name, batch in (("alone", short), ("with_long_text", short + [extra])):
            list(nlp.pipe(batch, batch_size=BATCH_SIZE))
            start = time.perf_counter()
            list(nlp.pipe(batch, batch_size=BATCH_SIZE))
            timings[name] = time.perf_counter() - start
        return {
            "short_texts_seconds": timings["alone"],
            "with_long_text_seconds": timings["with_long_text"],
            "slowdown": timings["with_long_text"] / timings["alone"],
        }
    if args.worker == "dev_parity":
        docs = list(nlp.pipe(texts, batch_size=BATCH_SIZE))
        plain = [nlp.make_doc(t) for t in texts]
        differ = 0
        for i in range(0, len(plain), BATCH_SIZE):
            batch = plain[i : i + BATCH_SIZE]
            tags = ner.model.ops.to_numpy(ner.model.predict((batch, None)))
            for doc, row, got in zip(batch, tags, docs[i : i + BATCH_SIZE]):
                want = ner.scheme.tags_to_spans(row[: len(doc)])
                have = [(e.start, e.end, ner.labels.index(e.label_)) for e in got.ents]
                differ += want != have
        return {"docs": len(texts), "docs_with_different_entities": differ}
    # "long" or "unwindowed": one long text.
    n_chars = args.chars if args.worker == "long" else args.unwindowed_chars
    text = long_text(texts, n_chars)
    nlp.max_length = len(text) + 1
    if args.worker == "unwindowed":
        ner.window_size = ner.batch_chars = len(text) + 1
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    loaded_kb = rss_kb("VmRSS")
    start = time.perf_counter()
    doc = nlp(text)
    seconds = time.perf_counter() - start
    return {
        "chars": len(text),
        "seconds": seconds,
        "chars_per_s": len(text) / seconds,
        "peak_rss_above_loaded_mb": (rss_kb("VmHWM") - loaded_kb) / 1024,
        "entities": len(doc.ents),
    }


def run_worker(args: argparse.Namespace, name: str) -> Dict[str, float]:
    command = [sys.executable, __file__, args.model, "--dev", str(args.dev), "--worker", name]
    command += ["--chars", str(args.chars), "--unwindowed-chars", str(args.unwindowed_chars)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--dev", type=Path, default=DEFAULT_DEV)
    parser.add_argument("--chars", type=int, default=1_000_000)
    parser.add_argument("--unwindowed-chars", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "long_texts.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = {name: run_worker(args, name) for name in ("pipe", "long", "unwindowed", "mixed_batch", "dev_parity")}
    pipe, long, unwindowed = results["pipe"], results["long"], results["unwindowed"]
    results["long_vs_pipe_speed"] = long["chars_per_s"] / pipe["chars_per_s"]
    results["unwindowed_vs_pipe_speed"] = unwindowed["chars_per_s"] / pipe["chars_per_s"]
    results["model"] = Path(args.model).name
    print(f"{'measurement':<34}{'chars':>10}{'chars/s':>10}{'vs pipe':>9}{'peak MB':>9}")
    print(f"{'nlp.pipe, CLUENER dev':<34}{'':>10}{pipe['chars_per_s']:>10.0f}{1:>9.2f}{'':>9}")
    for name, row in (("one long text, windows", long), ("one long text, no windows (before)", unwindowed)):
        ratio = row["chars_per_s"] / pipe["chars_per_s"]
        print(f"{name:<34}{row['chars']:>10}{row['chars_per_s']:>10.0f}{ratio:>9.2f}{row['peak_rss_above_loaded_mb']:>9.0f}")
    mixed = results["mixed_batch"]
    print(f"255 dev texts + one 20,000-char text: {mixed['slowdown']:.2f}x the time of the 255 alone")
    parity = results["dev_parity"]
    print(f"dev texts whose entities differ from one plain forward pass: {parity['docs_with_different_entities']} of {parity['docs']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
