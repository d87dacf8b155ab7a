"""The ray engine on a cluster started with `ray start`, as the README's cluster steps
do: a head, a second raylet joined with `ray start --address`, and `annotate --engine
ray --address` against it, with token authentication on (a token exists on the head,
so Ray >= 2.59 turns it on). The output must be the local engine's, byte for byte.

Every Ray process is started with this test's temp dir on its command line and is
stopped by its process id (not `ray stop`, which would stop every Ray on the machine).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from spacy.language import Language

from spacy_bilstm_crf.annotate import annotate

from .conftest import TRAIN_DATA

pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = [
    pytest.mark.slow,  # two raylets and a driver: a minute or more on a 2-core machine
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds its Ray processes in /proc"),
]

RAY = str(Path(sys.executable).with_name("ray"))
TEXTS = [text for text, _ in TRAIN_DATA] * 3 + ["".join(t for t, _ in TRAIN_DATA) * 8, ""]


def free_ports(n: int) -> List[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def node_ports() -> List[str]:
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    return [arg for name, port in zip(names, free_ports(len(names))) for arg in (name, str(port))]


def cmdline(pid: int) -> str:
    """A process's command line, or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf8", "replace")
    except OSError:
        return ""


def processes_of(marker: str) -> List[int]:
    """The ids of the processes whose command line holds `marker` (this test's temp dir)."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and marker in cmdline(pid)]


def stop_processes(marker: str, grace: float = 15.0) -> None:
    """SIGTERM the processes of `marker`, then SIGKILL the ones still there."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = processes_of(marker)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.5)
            pids = processes_of(marker)
        if not pids:
            return


class Cluster:
    """A head and a second raylet on this machine, with token authentication on."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.head_home = root / "head_home"
        self.node_home = root / "node_home"
        self.head_home.mkdir()
        self.node_home.mkdir()
        self.port = free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"
        self.token = self.head_home / ".ray" / "auth_token"

    def env(self, home: Path, token: bool) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
        if token:  # what the README says to do on every other node and on the driver
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
        return env

    def ray(self, args: List[str], env: Dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        head_env = self.env(self.head_home, token=False)
        # A token on the head (here made on purpose; any local ray.init leaves one in ~/.ray):
        # `ray start --head` then turns token authentication on by itself.
        made = self.ray(["get-auth-token", "--generate"], head_env)
        assert made.returncode == 0 and self.token.exists(), made.stderr
        head = self.ray(
            ["start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--num-cpus", "1",
             "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(self.root / "ray"),
             *node_ports()],
            head_env,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        node = self.ray(
            ["start", "--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
             "--disable-usage-stats", "--temp-dir", str(self.root / "ray"), *node_ports()],
            self.env(self.node_home, token=True),
        )
        assert node.returncode == 0, node.stdout + node.stderr

    def raylets(self) -> int:
        return sum(1 for pid in processes_of(str(self.root)) if "raylet/raylet" in cmdline(pid))

    def stop(self) -> None:
        stop_processes(str(self.root))


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="rh2", dir="/tmp"))
    started = Cluster(root)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray_cluster") / "model"
    trained_nlp.to_disk(path)
    return path


def annotate_cli(args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "spacy_bilstm_crf", "annotate", *args, "--no-progress"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)


def test_annotate_on_a_started_two_node_cluster_with_token_auth(
    cluster: Cluster, model_dir: Path, tmp_path: Path
) -> None:
    assert cluster.raylets() == 2
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))
    annotate(model_dir, source, tmp_path / "local", shard_size=10, batch_size=4)
    args = [str(model_dir), str(source), str(tmp_path / "ray"), "--engine", "ray", "--address", cluster.address,
            "--num-workers", "2", "--shard-size", "10", "--batch-size", "4"]

    # Without the token the cluster refuses the driver: a clear message, no traceback.
    refused = annotate_cli(args, cluster.env(cluster.node_home, token=False))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"Cannot join the Ray cluster at {cluster.address}" in refused.stdout
    assert "authentication" in refused.stdout.lower()  # Ray's reason, kept in the message
    assert "RAY_AUTH_MODE=token" in refused.stdout and "Traceback" not in refused.stdout + refused.stderr

    done = annotate_cli(args + ["--overwrite"], cluster.env(cluster.node_home, token=True))
    assert done.returncode == 0, done.stdout + done.stderr
    names = ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl", "_rejects.jsonl"]
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
