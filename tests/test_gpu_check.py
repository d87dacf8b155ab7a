"""benchmarks/gpu_check.py: refuses cleanly without a GPU; its argument rules and helpers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402


def run_without_gpu(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The script in a subprocess that sees no CUDA device, on a valid (tiny) CLUENER dir."""
    data = tmp_path / "cluener"
    data.mkdir()
    record = {"text": "浙商银行企业信贷部叶老桂博士", "label": {"name": {"叶老桂": [[9, 11]]}}}
    for split in ("train", "dev"):
        (data / f"{split}.json").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf8")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--work", str(tmp_path / "work"),
           "--out", str(tmp_path / "results" / "gpu.json"), *extra]  # fmt: skip
    # The timeout only stops a run that went on to convert and train; no timing is asserted.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_refuses_without_gpu(tmp_path):
    result = run_without_gpu(tmp_path)
    assert result.returncode == gpu_check.EXIT_NO_GPU == 2
    assert "No CUDA GPU: this check needs one; run it on a GPU machine" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was converted, trained or written.
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "results").exists()


def test_refusal_comes_before_reading_data(tmp_path):
    """A missing data dir is not even looked at: the device is checked first."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, str(SCRIPT), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "gpu.json"),
           "--work", str(tmp_path / "work")]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == gpu_check.EXIT_NO_GPU
    assert "No CUDA GPU" in result.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "gpu.json").exists()


def test_check_device_exits_with_message(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.check_device(allow_cpu=False)
    assert exit_info.value.code == gpu_check.EXIT_NO_GPU
    assert "No CUDA GPU" in capsys.readouterr().err
    assert gpu_check.check_device(allow_cpu=True) == gpu_check.CPU_TEST_DEVICE


def test_check_device_needs_cupy(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.check_device(allow_cpu=False)
    assert exit_info.value.code == gpu_check.EXIT_NO_CUPY
    assert "CuPy is not installed" in capsys.readouterr().err


def test_cpu_test_run_never_writes_the_gpu_results(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--allow-cpu"])
    assert "--allow-cpu needs --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--allow-cpu", "--out", str(gpu_check.DEFAULT_OUT)])
    args = gpu_check.parse_args(["--allow-cpu", "--out", str(tmp_path / "x.json")])
    assert args.out == tmp_path / "x.json"
    assert gpu_check.parse_args([]).out == gpu_check.DEFAULT_OUT


def test_cpu_steps_default_and_bounds(capsys):
    args = gpu_check.parse_args(["--steps", "300"])
    assert args.cpu_steps == 300
    assert gpu_check.parse_args(["--steps", "300", "--cpu-steps", "100"]).cpu_steps == 100
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "100", "--cpu-steps", "200"])


def test_train_command_keeps_the_schedule(tmp_path):
    corpus = {"train": tmp_path / "train.spacy", "dev": tmp_path / "dev.spacy"}
    gpu = gpu_check.train_command(corpus, tmp_path / "gpu", 300, 300, 0, 0, gpu=True)
    cpu = gpu_check.train_command(corpus, tmp_path / "cpu", 100, 300, 0, 50, gpu=False)

    def value(cmd, flag):
        return cmd[cmd.index(flag) + 1]

    assert value(gpu, "--gpu-id") == "0" and "--gpu-id" not in cpu
    assert value(gpu, "--training.max_steps") == "300" and value(cpu, "--training.max_steps") == "100"
    for flag in ("--training.eval_frequency", "--training.optimizer.learn_rate.period", "--system.seed"):
        assert value(gpu, flag) == value(cpu, flag)
    assert value(cpu, "--corpora.train.limit") == "50" and "--corpora.train.limit" not in gpu


def test_read_loss_curve(tmp_path):
    path = tmp_path / "loss.jsonl"
    lines = [{"epoch": 0, "step": 0, "losses": {"bilstm_crf_ner": 120.5}, "scores": {}, "score": 0.0},
             {"epoch": 0, "step": 50, "losses": {"bilstm_crf_ner": 900.0}, "scores": {}, "score": 0.1}]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert gpu_check.read_loss_curve(path) == [(0, 120.5), (50, 900.0)]
    path.write_text('{"step": 3, "losses": {}}\n')
    with pytest.raises(ValueError, match="line 1"):
        gpu_check.read_loss_curve(path)


def test_compare_curves_on_common_steps():
    gpu = [(0, 110.0), (50, 95.0), (100, 50.0)]
    cpu = [(0, 100.0), (50, 100.0)]
    comparison = gpu_check.compare_curves(gpu, cpu)
    assert comparison["steps"] == [0, 50]
    assert comparison["max_rel_diff"] == pytest.approx(0.1, abs=1e-5)
    assert comparison["final_rel_diff"] == pytest.approx(0.05, abs=1e-5)
    assert gpu_check.compare_curves(gpu, [(7, 1.0)])["max_rel_diff"] is None


def test_identical_share():
    a = [[(0, 2, "name")], [], [(1, 3, "game")]]
    b = [[(0, 2, "name")], [(0, 1, "name")], [(1, 3, "book")]]
    assert gpu_check.identical_share(a, a) == 1.0
    assert gpu_check.identical_share(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        gpu_check.identical_share(a, b[:2])


def test_cpu_steps_must_end_on_an_evaluation():
    assert gpu_check.eval_frequency(300) == 50
    gpu_check.check_cpu_steps(300, 150)  # on an evaluation: no exit
    with pytest.raises(SystemExit, match="multiple of the evaluation interval, 50 steps.*--cpu-steps 100"):
        gpu_check.check_cpu_steps(300, 120)


def test_train_threads_split_the_cores():
    assert gpu_check.train_threads(16) == {"gpu": 2, "cpu": 14}
    assert gpu_check.train_threads(2) == {"gpu": 1, "cpu": 1}
    assert gpu_check.train_threads(1) == {"gpu": 1, "cpu": 1}


def test_mixed_precision_load_reaches_the_component(trained_nlp, tmp_path):
    """The timing of mixed precision loads with the component's own setting: on the CPU the
    component says it runs in float32, which shows that the setting reached it."""
    trained_nlp.to_disk(tmp_path / "model")
    with pytest.warns(UserWarning, match="mixed_precision = true needs a CUDA GPU"):
        nlp = gpu_check.load(tmp_path / "model", mixed_precision=True)
    assert nlp.config["components"]["bilstm_crf_ner"]["model"]["mixed_precision"] is True
    plain = gpu_check.load(tmp_path / "model")
    assert plain.config["components"]["bilstm_crf_ner"]["model"]["mixed_precision"] is False
