"""The ray engine on a cluster started with `ray start`, as the README's cluster steps
do: a head, a second raylet joined with `ray start --address`, and `annotate --engine
ray --address` against it, with token authentication on (a token exists on the head,
so Ray >= 2.59 turns it on). The output must be the local engine's, byte for byte.

The cluster runs in a private network namespace (`unshare -n`, which needs root; the test
is skipped without it): Ray resolves even 127.0.0.1 to the machine's outward address and
refuses a multi-node cluster on loopback, so in the namespace loopback gets a TEST-NET
address and a default route, and the cluster's traffic never leaves it. The model and
the input are made here; tests/ray_netns_cluster.py starts the cluster in the namespace,
runs annotate there and reports. Every Ray process has this test's temp dir on its
command line and is stopped by its process id (not `ray stop`, which would stop every
Ray on the machine).
"""
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from spacy.language import Language

from spacy_bilstm_crf.annotate import annotate

from .conftest import TRAIN_DATA
from .ray_netns_cluster import stop_processes

pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = [
    pytest.mark.slow,  # two raylets and a driver: a minute or more on a 2-core machine
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux network namespaces and /proc"),
]

DRIVER = Path(__file__).with_name("ray_netns_cluster.py")
TEXTS = [text for text, _ in TRAIN_DATA] * 3 + ["".join(t for t, _ in TRAIN_DATA) * 8, ""]
# Exists only inside the namespace. TEST-NET-1 (RFC 5737): never routed anywhere.
NODE_ADDRESS = "192.0.2.77"
# Loopback up, the node address on it, and a default route through it, so that Ray's
# address discovery (the source address of a route to a public address) finds NODE_ADDRESS.
NETNS_SETUP = (
    f"ip link set lo up && ip addr add {NODE_ADDRESS}/32 dev lo && ip route add default dev lo src {NODE_ADDRESS}"
)


def in_private_network(command: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a shell command in a new network namespace set up with NETNS_SETUP."""
    script = f"set -e; {NETNS_SETUP}; {command}"
    return subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def private_network() -> None:
    """Skip the module, with the reason, where a network namespace cannot be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) to run the cluster in its own network namespace")
    try:
        probe = in_private_network("true", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot make a network namespace for the cluster: {err}")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace for the cluster (needs root): {probe.stderr.strip()}")


@pytest.fixture()
def cluster_root() -> Iterator[Path]:
    # Short: Ray's socket paths under the temp dir must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="rh2", dir="/tmp"))
    try:
        yield root
    finally:
        # The driver stops the cluster; this catches what a killed driver left. The
        # namespace shares /proc with this one, so its processes are found here too.
        stop_processes(str(root))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(trained_nlp: Language, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray_cluster") / "model"
    trained_nlp.to_disk(path)
    return path


def run_on_cluster(root: Path, model_dir: Path, source: Path, output: Path) -> Dict[str, Any]:
    """Start the cluster in a private network, annotate there, and return the driver's report."""
    report = root / "report.json"
    command = shlex.join(str(arg) for arg in [sys.executable, DRIVER, root, model_dir, source, output, report])
    done = in_private_network(f"exec {command}", timeout=900)
    assert done.returncode == 0 and report.exists(), done.stdout + done.stderr
    result = json.loads(report.read_text())
    assert "error" not in result, result["error"]
    return result


def test_annotate_on_a_started_two_node_cluster_with_token_auth(
    private_network: None, cluster_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)))
    annotate(model_dir, source, tmp_path / "local", shard_size=10, batch_size=4)
    result = run_on_cluster(cluster_root, model_dir, source, tmp_path / "ray")
    assert result["raylets"] == 2, result
    # The nodes listen on the namespace's own address, not on this machine's interfaces.
    assert f"{NODE_ADDRESS}" in " ".join(result["listening"]), result["listening"]

    # Without the token the cluster refuses the driver: a clear message, no traceback.
    refused = result["refused"]
    assert refused["returncode"] == 1, refused["stdout"] + refused["stderr"]
    assert f"Cannot join the Ray cluster at {result['address']}" in refused["stdout"]
    assert "authentication" in refused["stdout"].lower()  # Ray's reason, kept in the message
    assert "RAY_AUTH_MODE=token" in refused["stdout"] and "Traceback" not in refused["stdout"] + refused["stderr"]

    done = result["done"]
    assert done["returncode"] == 0, done["stdout"] + done["stderr"]
    names = ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl", "_rejects.jsonl"]
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
