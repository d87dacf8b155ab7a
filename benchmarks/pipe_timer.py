"""Time ``nlp.pipe`` of one pipeline on CLUENER dev texts, in a process of its own.

    python benchmarks/pipe_timer.py MODEL_DIR --dev DEV_JSON [--repeats 3] [--threads 1]

Imports nothing of the project itself, so ``inference_speed.py --baseline-src DIR``
can run it against an older checkout of the package (``PYTHONPATH=DIR``) and
against this one, alternately, in the same run. Component settings that the
loaded package's factory does not know (added after that revision) are dropped
from a copy of the model's config first: the weights are read as they are.
Prints one JSON object: chars/s (best of the repeats) and the entities found.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import spacy
import torch
from spacy.util import load_config


def loadable_copy(model_dir: Path, work: Path) -> Path:
    """``model_dir``, or a copy whose component settings the factory accepts."""
    config = load_config(model_dir / "config.cfg")
    changed = False
    for name, settings in config["components"].items():
        factory = settings.get("factory")
        if not factory:
            continue
        known = spacy.blank("zh").get_factory_meta(factory).default_config or {}
        for key in [k for k in settings if k not in known and k != "factory"]:
            del settings[key]
            changed = True
    if not changed:
        return model_dir
    copy = work / "model"
    shutil.copytree(model_dir, copy)
    config.to_disk(copy / "config.cfg")
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--dev", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = [json.loads(line)["text"] for line in args.dev.read_text(encoding="utf8").splitlines() if line.strip()]
    n_chars = sum(len(text) for text in texts)
    with tempfile.TemporaryDirectory() as tmp:
        nlp = spacy.load(loadable_copy(args.model_dir, Path(tmp)))
        docs = list(nlp.pipe(texts, batch_size=args.batch_size))  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            docs = list(nlp.pipe(texts, batch_size=args.batch_size))
            best = min(best, time.perf_counter() - start)
    entities = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in docs]
    json.dump({"chars_per_second_pipe": n_chars / best, "entities": entities}, sys.stdout)


if __name__ == "__main__":
    main()
