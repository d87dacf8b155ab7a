"""GPU check: training and tagging on a CUDA GPU against the CPU, one command.

    python benchmarks/gpu_check.py                      # on a GPU machine, a few minutes
    python benchmarks/gpu_check.py --steps 300 --cpu-steps 150 --seed 0
    python benchmarks/gpu_check.py --allow-cpu --limit 200 --steps 20 --out /tmp/gpu_test.json

Meant to finish within 8 minutes on one GPU with 16 cores: the two trainings run at
the same time, and the CPU one (300 steps of the default config: about 2 to 3 minutes
on one thread, from the CLUENER benchmark's 1,200 steps in about 8) sets the pace;
``--cpu-steps 150`` halves it if a slow CPU needs that.

Needs a CUDA GPU, a CUDA build of torch and CuPy (``pip install -e ".[gpu]"``): without
them it stops at once (exit code 2 without a GPU, 3 without CuPy), before converting or
training anything, and writes nothing.

Steps:

1. Convert CLUENER's ``train.json`` / ``dev.json`` (``--data``) to DocBins with this
   package's converter (once; kept in ``--work``).
2. Train the default config (``configs/bilstm_crf.cfg``) with ``spacy train`` for
   ``--steps`` steps on the GPU (``--gpu-id 0``), and for ``--cpu-steps`` steps on
   the CPU, both at once (the CPU run gets all cores but two, which the GPU run's host
   side uses), with the same seed and the same learning-rate schedule (one
   cosine cycle of ``--steps`` steps, as the config's ``scale_training`` would plan it,
   given explicitly so that a shorter CPU run follows the same schedule). The loss curve
   of each is the training loss summed over each evaluation interval
   (``--steps / 6`` steps), as spaCy's logger writes it; the last CPU interval must end
   on one of the GPU run's. The two curves are not expected
   to be equal: dropout's masks come from the CUDA generator on the GPU and from the
   CPU one on the CPU, and the float sums run in another order; they should agree within
   a few percent. A final loss (the last common interval) more than
   ``--loss-tolerance`` apart is flagged.
3. Load the GPU-trained ``model-last`` on the CPU and on the GPU (the same weights), tag
   dev on both and compare: dev F1 (spaCy's NER scorer) of each, and the share of dev
   texts whose entities are identical.
4. Time ``nlp.pipe(dev texts, batch_size=256)`` on the GPU in float32 and with
   ``mixed_precision = true`` (the component's setting: the network autocast to
   float16 on CUDA, the CRF in float32), and on the CPU with one torch thread for
   reference: chars/s, best of ``--repeats``.
5. Write ``benchmarks/results/gpu.json`` (``--out``) and print a summary.

``--allow-cpu`` runs the same pipeline with the CPU standing in for the GPU, to test
the script on a machine without one: the output says so (``"device": "cpu (test run,
not a GPU result)"``), mixed precision is not timed, and the results go to ``--out``
(required then), never to ``benchmarks/results/gpu.json``.
"""
import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cluener"
DEFAULT_WORK = REPO / "benchmarks" / "runs" / "gpu_check"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu.json"
CONFIG = REPO / "configs" / "bilstm_crf.cfg"
PIPE = "bilstm_crf_ner"
CPU_TEST_DEVICE = "cpu (test run, not a GPU result)"
BATCH_SIZE = 256
EVALUATIONS = 6  # evaluation intervals per run: the points of the loss curve

# Exit codes: distinct, so that a job runner can tell "wrong machine" from a failure.
EXIT_NO_GPU = 2
EXIT_NO_CUPY = 3
NO_GPU_MESSAGE = (
    "No CUDA GPU: this check needs one; run it on a GPU machine with a CUDA build of torch "
    '(pip install torch) and CuPy (pip install -e ".[gpu]"). Nothing was run or written. '
    "(--allow-cpu runs the script's steps on the CPU, only to test the script.)"
)
NO_CUPY_MESSAGE = (
    "CuPy is not installed: spaCy needs it to train or tag on the GPU "
    '(pip install -e ".[gpu]", CuPy for CUDA 12). Nothing was run or written.'
)

Entity = Tuple[int, int, str]


# -- arguments and the device ---------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Read the command line; ``--out`` is required with ``--allow-cpu``.

    argv (Optional[Sequence[str]]): The arguments; ``sys.argv[1:]`` by default.
    RETURNS (argparse.Namespace): The settings.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CLUENER dir (train.json, dev.json)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="corpus, trained models, logs")
    parser.add_argument("--out", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUT})")
    parser.add_argument("--steps", type=int, default=300, help="training steps on the GPU")
    parser.add_argument("--cpu-steps", type=int, default=None, help="training steps on the CPU (default --steps)")
    parser.add_argument("--limit", type=int, default=0, help="use the first N training docs (0: all)")
    parser.add_argument("--dev-limit", type=int, default=0, help="use the first N dev docs (0: all; for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed nlp.pipe runs (best counts)")
    parser.add_argument("--loss-tolerance", type=float, default=0.05, help="flag final losses further apart")
    parser.add_argument("--allow-cpu", action="store_true", help="TEST ONLY: the CPU stands in for the GPU")
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.cpu_steps is not None and not 1 <= args.cpu_steps <= args.steps):
        parser.error("need --steps >= 1 and 1 <= --cpu-steps <= --steps")
    if args.limit < 0 or args.dev_limit < 0 or args.repeats < 1:
        parser.error("need --limit >= 0, --dev-limit >= 0 and --repeats >= 1")
    if args.cpu_steps is None:
        args.cpu_steps = args.steps
    if args.out is None:
        if args.allow_cpu:
            parser.error("--allow-cpu needs --out: a CPU test run never writes benchmarks/results/gpu.json")
        args.out = DEFAULT_OUT
    elif args.allow_cpu and args.out.resolve() == DEFAULT_OUT.resolve():
        parser.error(f"--allow-cpu may not write {DEFAULT_OUT}: it holds GPU results only")
    return args


def check_device(allow_cpu: bool) -> str:
    """Stop at once (exit code 2 or 3) unless a CUDA GPU and CuPy are there.

    Only torch is imported: nothing is converted, trained or written before this.
    allow_cpu (bool): A test run: return the CPU's label instead of stopping.
    RETURNS (str): The device's name, e.g. ``"NVIDIA H100 80GB HBM3"``.
    """
    import torch

    if not torch.cuda.is_available():
        if allow_cpu:
            return CPU_TEST_DEVICE
        print(NO_GPU_MESSAGE, file=sys.stderr)
        sys.exit(EXIT_NO_GPU)
    if importlib.util.find_spec("cupy") is None:
        if allow_cpu:
            return CPU_TEST_DEVICE
        print(NO_CUPY_MESSAGE, file=sys.stderr)
        sys.exit(EXIT_NO_CUPY)
    return torch.cuda.get_device_name(0)


# -- training -------------------------------------------------------------------------


def train_command(corpus: Dict[str, Path], output: Path, steps: int, schedule_steps: int, seed: int,
                  limit: int, gpu: bool, dev_limit: int = 0) -> List[str]:  # fmt: skip
    """The ``spacy train`` command line of one run.

    The config's ``scale_training`` callback keeps settings given on the command line,
    so ``max_steps``, ``eval_frequency`` and the cosine period are given: a run of fewer
    steps (the CPU's) follows the same learning-rate schedule and evaluates at the same steps.

    corpus (Dict[str, Path]): ``train`` and ``dev`` DocBins.
    output (Path): The run's output directory (its ``loss.jsonl`` goes there).
    steps (int): Steps of this run.
    schedule_steps (int): Steps of the full run: the cosine cycle's length.
    seed (int): ``system.seed``.
    limit (int): First N training docs; 0 for all.
    gpu (bool): Train on GPU 0.
    dev_limit (int): First N dev docs for the evaluations; 0 for all.
    RETURNS (List[str]): The command.
    """
    frequency = eval_frequency(schedule_steps)
    cmd = [sys.executable, "-m", "spacy", "train", str(CONFIG), "--output", str(output),
           "--paths.train", str(corpus["train"]), "--paths.dev", str(corpus["dev"]),
           "--system.seed", str(seed), "--training.max_steps", str(steps),
           "--training.eval_frequency", str(frequency),
           "--training.optimizer.learn_rate.period", str(schedule_steps),
           "--training.logger.output_file", str(output / "loss.jsonl")]  # fmt: skip
    if limit:
        cmd += ["--corpora.train.limit", str(limit)]
    if dev_limit:
        cmd += ["--corpora.dev.limit", str(dev_limit)]
    if gpu:
        cmd += ["--gpu-id", "0"]
    return cmd


def eval_frequency(steps: int) -> int:
    """The evaluation interval of both runs: at most ``EVALUATIONS`` evaluations, the last at ``steps``.

    The one the config's ``scale_training`` picks for ``--training.max_steps steps``.
    RETURNS (int): ``eval_frequency``, a divisor of ``steps``.
    """
    from spacy_bilstm_crf.training.training_plan import frequency_for

    return frequency_for(steps, EVALUATIONS, steps)


def check_cpu_steps(steps: int, cpu_steps: int) -> None:
    """Stop (exit code 1, a message) unless the CPU run ends on an evaluation of the GPU run.

    The last point of the CPU's loss curve is then a full interval, comparable with the GPU's.
    """
    frequency = eval_frequency(steps)
    if cpu_steps % frequency:
        example = max(frequency, cpu_steps // frequency * frequency)
        sys.exit(f"--cpu-steps {cpu_steps} must be a multiple of the evaluation interval, "
                 f"{frequency} steps for --steps {steps} (e.g. --cpu-steps {example})")  # fmt: skip


def train_threads(cores: Optional[int] = None) -> Dict[str, int]:
    """Torch threads of the two concurrent runs: the GPU run's host side needs few.

    cores (Optional[int]): CPU cores; ``os.cpu_count()`` by default.
    RETURNS (Dict[str, int]): Threads per run, ``gpu`` and ``cpu``.
    """
    cores = cores or os.cpu_count() or 1
    gpu = min(2, max(1, cores // 2))
    return {"gpu": gpu, "cpu": max(1, cores - gpu)}


def train(name: str, cmd: List[str], work: Path, threads: int) -> float:
    """Run one training (a fresh output directory) with ``threads`` torch threads, its log in ``work/logs``.

    RETURNS (float): Wall seconds.
    """
    from cluener_accuracy import run

    log = Path(cmd[cmd.index("--training.logger.output_file") + 1])
    if log.exists():  # spaCy's logger appends: a curve from an earlier run would mix in
        log.unlink()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    seconds = run(cmd, work / "logs" / f"train_{name}.log", env)
    print(f"  {name} run trained: {seconds:.0f} s", flush=True)
    return seconds


def train_both(cmds: Dict[str, List[str]], work: Path) -> Tuple[Dict[str, float], Dict[str, int]]:
    """Train the GPU and the CPU run at the same time (the check's time limit), the cores split.

    The loss curves do not depend on the number of threads beyond float order.
    RETURNS (Tuple[Dict[str, float], Dict[str, int]]): Wall seconds and threads per run.
    """
    threads = train_threads()
    print(f"training the gpu and cpu runs (threads {threads}) ...", flush=True)
    with ThreadPoolExecutor(max_workers=len(cmds)) as pool:
        futures = {name: pool.submit(train, name, cmd, work, threads[name]) for name, cmd in cmds.items()}
        seconds = {name: round(future.result(), 1) for name, future in futures.items()}
    return seconds, threads


def read_loss_curve(path: Path, pipe: str = PIPE) -> List[Tuple[int, float]]:
    """The loss curve written by ``spacy.ConsoleLogger.v3`` (``output_file``).

    Each line is one evaluation; its loss is the sum over the steps since the last one.
    path (Path): The JSON-lines file.
    pipe (str): The component whose loss is read.
    RETURNS (List[Tuple[int, float]]): ``(step, loss)`` per evaluation.
    """
    curve = []
    for number, line in enumerate(path.read_text(encoding="utf8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            curve.append((int(record["step"]), float(record["losses"][pipe])))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}, line {number}: not a logger record with losses.{pipe} ({err})") from None
    return curve


def compare_curves(gpu: Sequence[Tuple[int, float]], cpu: Sequence[Tuple[int, float]]) -> Dict[str, Any]:
    """Relative differences of two loss curves at the steps both have.

    gpu (Sequence[Tuple[int, float]]): ``(step, loss)`` of the GPU run.
    cpu (Sequence[Tuple[int, float]]): ``(step, loss)`` of the CPU run (the reference).
    RETURNS (Dict[str, Any]): ``steps`` compared, ``rel_diff`` per step, ``max_rel_diff``
        and ``final_rel_diff`` (the last common step); None where no step is common.
    """
    cpu_at = dict(cpu)
    steps = [step for step, _ in gpu if step in cpu_at]
    gpu_at = dict(gpu)
    diffs = [abs(gpu_at[s] - cpu_at[s]) / max(abs(cpu_at[s]), 1e-12) for s in steps]
    return {
        "steps": steps,
        "rel_diff": [round(d, 5) for d in diffs],
        "max_rel_diff": round(max(diffs), 5) if diffs else None,
        "final_rel_diff": round(diffs[-1], 5) if diffs else None,
    }


# -- tagging --------------------------------------------------------------------------


def doc_entities(doc: Any) -> List[Entity]:
    """RETURNS (List[Entity]): ``(start_char, end_char, label)`` of each entity."""
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def identical_share(a: Sequence[Sequence[Entity]], b: Sequence[Sequence[Entity]]) -> float:
    """RETURNS (float): The share of texts whose entities are the same in ``a`` and ``b``."""
    if len(a) != len(b):
        raise ValueError(f"Entity lists of {len(a)} and {len(b)} texts")
    if not a:
        return 1.0
    return sum(list(x) == list(y) for x, y in zip(a, b)) / len(a)


def tag_dev(nlp: Any, gold: List[Any]) -> Tuple[List[List[Entity]], float]:
    """Tag the dev texts; RETURNS: entities per text and dev F1 (spaCy's NER scorer, in %)."""
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    predicted = list(nlp.pipe((doc.text for doc in gold), batch_size=BATCH_SIZE))
    scores = get_ner_prf([Example(p, g) for p, g in zip(predicted, gold)])
    return [doc_entities(doc) for doc in predicted], round(100 * scores["ents_f"], 2)


def chars_per_second(nlp: Any, texts: List[str], repeats: int) -> int:
    """``nlp.pipe(texts, batch_size=256)``: chars/s of the best of ``repeats``, after a warm-up."""
    list(nlp.pipe(texts[:BATCH_SIZE], batch_size=BATCH_SIZE))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        list(nlp.pipe(texts, batch_size=BATCH_SIZE))
        best = min(best, time.perf_counter() - start)
    return round(sum(len(t) for t in texts) / best)


def load(model: Path, mixed_precision: bool = False) -> Any:
    """``spacy.load`` on the current device; ``mixed_precision`` set on the network."""
    import spacy

    config = {f"components.{PIPE}.model.mixed_precision": True} if mixed_precision else {}
    return spacy.load(model, config=config)


def same_weights(model: Path, dev: Path, on_gpu: bool, repeats: int, dev_limit: int = 0) -> Dict[str, Any]:
    """Tag dev with ``model`` on the CPU, then on the GPU (in float32 and mixed precision).

    The CPU comes first: once spaCy uses the GPU, new pipelines load there.
    model (Path): A trained pipeline (the GPU run's ``model-last``).
    dev (Path): Dev DocBin.
    on_gpu (bool): Use GPU 0; False in a test run (the CPU stands in, no mixed precision).
    repeats (int): Timed runs per measure.
    dev_limit (int): First N dev docs; 0 for all.
    RETURNS (Dict[str, Any]): dev F1, identical share and chars/s.
    """
    import spacy
    import torch
    from spacy.tokens import DocBin

    spacy.require_cpu()
    nlp_cpu = load(model)
    gold = list(DocBin().from_disk(dev).get_docs(nlp_cpu.vocab))[: dev_limit or None]
    texts = [doc.text for doc in gold]
    ents_cpu, f1_cpu = tag_dev(nlp_cpu, gold)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cps_cpu = chars_per_second(nlp_cpu, texts, repeats)
    finally:
        torch.set_num_threads(threads)
    del nlp_cpu
    if on_gpu:
        spacy.require_gpu(0)
    nlp_gpu = load(model)
    ents_gpu, f1_gpu = tag_dev(nlp_gpu, gold)
    cps_gpu = chars_per_second(nlp_gpu, texts, repeats)
    del nlp_gpu
    result: Dict[str, Any] = {
        "dev_f1": {"gpu": f1_gpu, "cpu": f1_cpu},
        "entities_identical_share": round(identical_share(ents_gpu, ents_cpu), 4),
        "dev_texts": len(texts),
        "dev_chars": sum(len(t) for t in texts),
        "chars_per_second": {"gpu_fp32": cps_gpu, "gpu_mixed_precision": None, "cpu_1_thread": cps_cpu},
    }
    if not on_gpu:
        result["mixed_precision"] = "not measured: a CPU test run (mixed precision autocasts on CUDA only)"
        return result
    try:
        nlp_mixed = load(model, mixed_precision=True)
        ents_mixed, f1_mixed = tag_dev(nlp_mixed, gold)
        result["chars_per_second"]["gpu_mixed_precision"] = chars_per_second(nlp_mixed, texts, repeats)
    except Exception as err:  # recorded, not hidden: the other results still count
        result["mixed_precision"] = f"failed: {type(err).__name__}: {err}"
        print(f"WARNING: mixed precision failed ({err}); recorded in the results", file=sys.stderr)
        return result
    result["mixed_precision"] = {
        "dev_f1": f1_mixed,
        "entities_identical_share_vs_fp32": round(identical_share(ents_mixed, ents_gpu), 4),
    }
    return result


# -- the run --------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the check (see the module's docstring); RETURNS (Dict[str, Any]): what was written."""
    args = parse_args(argv)
    device = check_device(args.allow_cpu)  # first: nothing heavy runs without a GPU
    on_gpu = device != CPU_TEST_DEVICE
    check_cpu_steps(args.steps, args.cpu_steps)
    start = time.perf_counter()
    sys.path.insert(0, str(BENCHMARKS))
    from cluener_accuracy import _versions, convert

    work = args.work.resolve()
    corpus = convert(args.data.resolve(), work)
    # In a test run the "gpu" run is on the CPU too; its name stays, the device says so.
    runs = {"gpu": (args.steps, on_gpu), "cpu": (args.cpu_steps, False)}
    cmds = {name: train_command(corpus, work / name, steps, args.steps, args.seed, args.limit, gpu, args.dev_limit)
            for name, (steps, gpu) in runs.items()}  # fmt: skip
    seconds, threads = train_both(cmds, work)
    curves = {name: read_loss_curve(work / name / "loss.jsonl") for name in runs}
    comparison = compare_curves(curves["gpu"], curves["cpu"])
    final = comparison["final_rel_diff"]
    tagging = same_weights(work / "gpu" / "model-last", corpus["dev"], on_gpu, args.repeats, args.dev_limit)
    result: Dict[str, Any] = {
        "device": device,
        "versions": {**_versions(), "python": platform.python_version()},
        "cuda": _cuda_version(),
        "steps": {"gpu": args.steps, "cpu": args.cpu_steps},
        "seed": args.seed,
        "train_docs_limit": args.limit or None,
        "dev_docs_limit": args.dev_limit or None,
        "loss_curves": {name: [[step, round(loss, 4)] for step, loss in curve] for name, curve in curves.items()},
        "loss_rel_diff": [[step, diff] for step, diff in zip(comparison["steps"], comparison["rel_diff"])],
        "loss_max_rel_diff": comparison["max_rel_diff"],
        "loss_final_rel_diff": final,
        "loss_final_within_tolerance": None if final is None else final <= args.loss_tolerance,
        "loss_tolerance": args.loss_tolerance,
        "train_seconds": seconds,
        "train_threads": threads,
        "trained_concurrently": True,
        **tagging,
        "seconds_total": None,
    }
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    print_summary(result, args.out)
    return result


def _cuda_version() -> Optional[str]:
    import torch

    return torch.version.cuda


def print_summary(result: Dict[str, Any], out: Path) -> None:
    """Print the measures that matter, and a warning where the losses drift apart."""
    print(f"device: {result['device']}")
    print(f"loss max rel. diff GPU/CPU: {result['loss_max_rel_diff']}, final: {result['loss_final_rel_diff']}")
    if result["loss_final_within_tolerance"] is False:
        print(f"WARNING: final losses differ by more than {result['loss_tolerance']:.0%}", file=sys.stderr)
    print(f"dev F1 GPU {result['dev_f1']['gpu']} / CPU {result['dev_f1']['cpu']}, "
          f"identical entities in {result['entities_identical_share']:.2%} of dev texts")  # fmt: skip
    print(f"chars/s: {result['chars_per_second']}")
    print(f"{result['seconds_total']:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
