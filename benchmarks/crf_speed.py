"""CRF speed: our batched, constrained CRF against pytorch-crf, in the same process.

    pip install -e ".[bench]"        # pytorch-crf, a benchmark-only dependency
    python benchmarks/crf_speed.py [--repeats 15] [--threads 1]

41 tags (BIOES over CLUENER's 10 types), batch 256, length 50, one thread by default.
Three settings: all sentences full (50), random lengths 10..50, and few long sentences
(batch 32 × length 200, ``--long-batch``/``--long-length``). For each, the
median time of NLL forward+backward and of Viterbi decoding, for both libraries, and
their agreement: log-partition (both CRFs given the same parameters, unconstrained, as
pytorch-crf has no constraints) and decoded paths. The last line of output is one JSON
object with ``nll_speedup`` and ``decode_speedup`` (pytorch-crf time / ours, full lengths),
also written to ``benchmarks/results/crf_speed.json`` (``--out``) with every setting.
"""
import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict

import torch

from spacy_bilstm_crf.network.crf import LinearChainCRF
from spacy_bilstm_crf.network.tags import TagScheme

CLUENER_LABELS = [
    "address", "book", "company", "game", "government",
    "movie", "name", "organization", "position", "scene",
]  # fmt: skip


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    # Warm-up: glibc raises its mmap threshold after the first large buffers are freed,
    # so the first calls of a process pay page faults that later ones do not.
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def build_pair(n_tags: int, seed: int):
    """Our CRF (unconstrained) and pytorch-crf's, sharing the same random parameters."""
    from torchcrf import CRF

    torch.manual_seed(seed)
    theirs = CRF(n_tags, batch_first=True)
    ours = LinearChainCRF(n_tags)
    with torch.no_grad():
        ours.transitions.copy_(theirs.transitions)
        ours.start_transitions.copy_(theirs.start_transitions)
        ours.end_transitions.copy_(theirs.end_transitions)
    return ours, theirs


def run_setting(name: str, lengths: torch.Tensor, n_tags: int, repeats: int) -> Dict[str, float]:
    batch, max_len = len(lengths), int(lengths.max())
    ours, theirs = build_pair(n_tags, seed=0)
    scheme = TagScheme(CLUENER_LABELS, "BIOES")
    constrained = LinearChainCRF(
        n_tags,
        torch.as_tensor(scheme.allowed_transitions()),
        torch.as_tensor(scheme.allowed_start()),
        torch.as_tensor(scheme.allowed_end()),
    )
    emissions = torch.randn(batch, max_len, n_tags)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    gold = torch.randint(0, n_tags, (batch, max_len))
    gold_valid = torch.as_tensor(
        [scheme.spans_to_tags(max_len, [(5, 9, 1), (20, 21, 3)]).tolist()] * batch
    )

    def ours_nll(crf: LinearChainCRF, tags: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            leaf = emissions.clone().requires_grad_(True)
            crf.nll(leaf, tags, lengths).sum().backward()

        return run

    def theirs_nll() -> None:
        leaf = emissions.clone().requires_grad_(True)
        (-theirs(leaf, gold, mask=mask, reduction="sum")).backward()

    with torch.no_grad():
        ours_z = ours.log_partition(emissions, lengths)
        theirs_z = theirs._compute_normalizer(emissions.transpose(0, 1), mask.transpose(0, 1))
        ours_paths = ours.decode(emissions, lengths)
        theirs_paths = theirs.decode(emissions, mask=mask)
    paths_equal = sum(
        ours_paths[b, : len(p)].tolist() == p for b, p in enumerate(theirs_paths)
    ) / batch

    result = {
        "nll_ms_ours": median_ms(ours_nll(ours, gold), repeats),
        "nll_ms_ours_constrained": median_ms(ours_nll(constrained, gold_valid), repeats),
        "nll_ms_pytorch_crf": median_ms(theirs_nll, repeats),
    }
    with torch.no_grad():
        result["decode_ms_ours"] = median_ms(lambda: ours.decode(emissions, lengths), repeats)
        result["decode_ms_ours_constrained"] = median_ms(
            lambda: constrained.decode(emissions, lengths), repeats
        )
        result["decode_ms_pytorch_crf"] = median_ms(
            lambda: theirs.decode(emissions, mask=mask), repeats
        )
    result["log_z_max_abs_diff"] = float((ours_z - theirs_z).abs().max())
    result["paths_equal_fraction"] = paths_equal
    result["nll_speedup"] = result["nll_ms_pytorch_crf"] / result["nll_ms_ours"]
    result["decode_speedup"] = result["decode_ms_pytorch_crf"] / result["decode_ms_ours"]
    print(f"\n== {name}: batch {batch}, max length {max_len}, {n_tags} tags")
    for key, value in result.items():
        print(f"{key:>28}: {value:.4g}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--long-batch", type=int, default=32)
    parser.add_argument("--long-length", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "crf_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_tags = 1 + 4 * len(CLUENER_LABELS)
    gen = torch.Generator().manual_seed(0)
    full = torch.full((args.batch,), args.length, dtype=torch.long)
    mixed = torch.randint(10, args.length + 1, (args.batch,), generator=gen)
    mixed[0] = args.length
    results = {
        "full": run_setting("full lengths", full, n_tags, args.repeats),
        "random": run_setting("random lengths 10..50", mixed, n_tags, args.repeats),
        "long": run_setting(
            f"long sentences {args.long_batch} x {args.long_length}",
            torch.full((args.long_batch,), args.long_length, dtype=torch.long),
            n_tags,
            args.repeats,
        ),
    }
    summary = {
        "nll_speedup": round(results["full"]["nll_speedup"], 2),
        "decode_speedup": round(results["full"]["decode_speedup"], 2),
        "nll_speedup_random_lengths": round(results["random"]["nll_speedup"], 2),
        "decode_speedup_random_lengths": round(results["random"]["decode_speedup"], 2),
        "nll_speedup_long": round(results["long"]["nll_speedup"], 2),
        "decode_speedup_long": round(results["long"]["decode_speedup"], 2),
        "nll_ms": round(results["full"]["nll_ms_ours"], 2),
        "decode_ms": round(results["full"]["decode_ms_ours"], 2),
        "pytorch_crf_nll_ms": round(results["full"]["nll_ms_pytorch_crf"], 2),
        "pytorch_crf_decode_ms": round(results["full"]["decode_ms_pytorch_crf"], 2),
        "log_z_max_abs_diff": max(r["log_z_max_abs_diff"] for r in results.values()),
        "paths_equal_fraction": min(r["paths_equal_fraction"] for r in results.values()),
        "batch": args.batch,
        "length": args.length,
        "n_tags": n_tags,
        "threads": args.threads,
        "long_batch": args.long_batch,
        "long_length": args.long_length,
        "torch": torch.__version__,
        "settings": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}))
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf8")


if __name__ == "__main__":
    main()
