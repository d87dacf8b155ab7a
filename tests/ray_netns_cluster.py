"""Driver for tests/test_annotate_ray_cluster.py, run inside a private network namespace.

The test starts this script under `unshare -n`, after putting loopback up with a TEST-NET
address on it and a default route through it. Ray's address discovery then finds that
address, so the head and the second raylet form a real two-node cluster whose traffic
never leaves the namespace (Ray resolves even 127.0.0.1 to the machine's outward address,
and refuses a multi-node cluster on loopback).

The script starts the cluster as the README's cluster steps do (a head with a token, a
second raylet joined with `ray start --address` and the token), runs `annotate --engine
ray --address` once without the token and once with it, writes what it saw to a JSON
file, and stops the cluster's processes by id (never `ray stop`, which would stop every
Ray on the machine). It uses the standard library only: the test asserts on its report.

tests/test_annotate_ray.py uses `offline_ray_home` from here too.

Usage: python ray_netns_cluster.py ROOT MODEL_DIR SOURCE OUTPUT REPORT
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> List[int]:
    """Ports free on loopback now (in the namespace this script runs in).

    n (int): How many.
    RETURNS (List[int]): The ports.
    """
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
    """Fixed ports for one node's agents, so that two nodes on one host do not collide."""
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    return [arg for name, port in zip(names, free_ports(len(names))) for arg in (name, str(port))]


def cmdline(pid: int) -> str:
    """A process's command line, or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf8", "replace")
    except OSError:
        return ""


def ancestors() -> List[int]:
    """This process and its parents: a shell that started it may hold the marker too."""
    pids, pid = [], os.getpid()
    while pid > 1:
        pids.append(pid)
        try:
            # The parent id is the second field after the ")" that ends the command name.
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def processes_of(marker: str) -> List[int]:
    """The ids of the processes whose command line holds `marker` (a test's temp dir).

    marker (str): The text to look for.
    RETURNS (List[int]): The process ids, this process and its parents left out.
    """
    own = set(ancestors())
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if pid not in own and marker in cmdline(pid)]


def stop_processes(marker: str, grace: float = 15.0) -> None:
    """SIGTERM the processes of `marker`, then SIGKILL the ones still there.

    marker (str): The text their command lines hold (a test's temp dir).
    grace (float): Seconds to wait after SIGTERM.
    """
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


def offline_ray_home(home: Path) -> Path:
    """Make `home` a HOME in which a Ray head does not look for a cloud.

    A head's dashboard asks the cloud metadata addresses (169.254.169.254,
    metadata.google.internal) which cloud it runs on, usage stats off or not, unless
    ~/ray_bootstrap_config.yaml names the provider, as a cluster launched by
    `ray up` has. Naming "local" keeps a test's Ray off the network.

    home (Path): The directory to use as HOME; made if missing.
    RETURNS (Path): `home`.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray_bootstrap_config.yaml").write_text("provider:\n  type: local\n")
    return home


class Cluster:
    """A head and a second raylet on this host, with token authentication on.

    root (Path): A short temp dir: on every Ray command line, so its processes can be found.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.head_home = root / "head_home"
        self.node_home = root / "node_home"
        offline_ray_home(self.head_home)
        offline_ray_home(self.node_home)
        self.port = free_ports(1)[0]
        # What a user passes; Ray itself resolves 127.0.0.1 to the node's address.
        self.address = f"127.0.0.1:{self.port}"
        self.token = self.head_home / ".ray" / "auth_token"

    def env(self, home: Path, token: bool) -> Dict[str, str]:
        """The environment for a Ray command or a driver, without the caller's RAY_* settings.

        home (Path): HOME, where Ray looks for ~/.ray/auth_token.
        token (bool): Whether to pass the head's token, as the README says to.
        RETURNS (Dict[str, str]): The environment.
        """
        # RAY_* left out: among them the test session's RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
        # which would refuse the second node.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
        return env

    def ray(self, args: List[str], env: Dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)

    def start(self) -> None:
        """Start the head (a token made first turns authentication on) and join the second raylet."""
        head_env = self.env(self.head_home, token=False)
        made = self.ray(["get-auth-token", "--generate"], head_env)
        if made.returncode != 0 or not self.token.exists():
            raise RuntimeError(f"ray get-auth-token failed: {made.stdout}{made.stderr}")
        common = ["--num-cpus", "1", "--disable-usage-stats", "--temp-dir", str(self.root / "ray")]
        head = self.ray(["start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                         *common, *node_ports()], head_env)
        if head.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {head.stdout}{head.stderr}")
        node = self.ray(["start", "--address", self.address, *common, *node_ports()],
                        self.env(self.node_home, token=True))
        if node.returncode != 0:
            raise RuntimeError(f"ray start --address failed: {node.stdout}{node.stderr}")

    def raylets(self) -> int:
        """How many raylets of this cluster are running."""
        return sum(1 for pid in processes_of(str(self.root)) if "raylet/raylet" in cmdline(pid))


def annotate_cli(args: List[str], env: Dict[str, str]) -> Dict[str, object]:
    """Run `annotate` as a user would; its exit status and output."""
    command = [sys.executable, "-m", "spacy_bilstm_crf", "annotate", *args, "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def node_addresses() -> List[str]:
    """The addresses Ray's nodes listen on, as `ss` shows them in this namespace."""
    listening = subprocess.run(["ss", "-tlnH"], capture_output=True, text=True).stdout
    return sorted({line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines() if line.strip()})


def main(root: Path, model: str, source: str, output: str, report: Path) -> None:
    cluster = Cluster(root)
    result: Dict[str, object] = {"address": cluster.address}
    try:
        cluster.start()
        result["raylets"] = cluster.raylets()
        result["listening"] = node_addresses()
        args = [model, source, output, "--engine", "ray", "--address", cluster.address,
                "--num-workers", "2", "--shard-size", "10", "--batch-size", "4"]
        result["refused"] = annotate_cli(args, cluster.env(cluster.node_home, token=False))
        result["done"] = annotate_cli(args + ["--overwrite"], cluster.env(cluster.node_home, token=True))
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        result["error"] = str(err)
    finally:
        stop_processes(str(root))
        report.write_text(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]))
