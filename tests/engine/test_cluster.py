"""A real multi-node Ray cluster on this machine: a head and two worker nodes started with `ray start`
as separate processes, joined by `dvolver search --ray-address`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dvolver import data, run_search
from dvolver.spec import SearchSpec
from tests.helpers import TINY, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")
# Ray authenticates every node and driver with a shared token (as a real cluster should): one for
# this test's cluster, given to each process it starts.
TOKEN_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _ports() -> list[str]:
    """Each node on one host needs its own agent and metrics ports: Ray's defaults would collide."""
    names = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port")
    return [part for name in names for part in (name, str(free_port()))]


def _node(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats", *_ports(), *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=os.environ | TOKEN_ENV)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head with no CPUs and two nodes with one each: two evaluations at once must run on two nodes."""
    folder = tmp_path_factory.mktemp("cluster")
    port, client_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "0",
                    "--include-dashboard", "false", "--ray-client-server-port", str(client_port)],
                   folder / "head.log")]
    try:
        _wait_for_port(port, nodes[0], folder / "head.log")
        for cpus, name in enumerate(("a", "b"), start=1):  # one at a time: each binds its own ports
            nodes.append(_node(["--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                "--resources", json.dumps({f"node_{name}": 1})], folder / f"node-{name}.log"))
            _wait_for_cpus(address, cpus, folder)
        yield {"address": address, "client": f"ray://127.0.0.1:{client_port}"}
    finally:
        for node in reversed(nodes):  # `ray start --block` stops its node's processes on SIGTERM
            node.terminate()
        for node in nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()


def _wait_for_port(port: int, head: subprocess.Popen, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the Ray head did not listen in 90 s:\n{log.read_text()[-3000:]}")


def _wait_for_cpus(address: str, cpus: int, folder: Path) -> None:
    """Asks the cluster from another process: this one may already hold a local Ray."""
    probe = ("import ray, time, sys\n"
             f"ray.init(address={address!r}, log_to_driver=False)\n"
             "deadline = time.monotonic() + 90\n"
             f"while ray.cluster_resources().get('CPU', 0) < {cpus} and time.monotonic() < deadline:\n"
             "    time.sleep(0.5)\n"
             "print(ray.cluster_resources().get('CPU', 0))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=150,
                          env=os.environ | TOKEN_ENV)
    if done.returncode != 0 or float(done.stdout.split()[-1]) < cpus:
        logs = "\n".join(p.read_text()[-1500:] for p in folder.glob("*.log"))
        raise RuntimeError(f"the nodes did not join: {done.stdout}{done.stderr}\n{logs}")


def _client_server_logs() -> str:
    """Why a Ray Client server the head started for a driver failed, if one did: the head writes it
    only to its session's logs."""
    logs = sorted(Path("/tmp/ray").glob("session_*/logs/ray_client_server_*.err"), key=lambda p: p.stat().st_mtime)
    return "".join(f"\n--- {log}:\n{log.read_text()[-2000:]}" for log in logs[-2:])


@pytest.mark.parametrize("how", ["address", "client"], ids=["head-address", "ray-client"])
def test_a_search_through_ray_address_runs_on_more_than_one_node(cluster, tmp_path, how):
    """A HOST:PORT address joins from a machine that is a node; ray:// (Ray Client) from anywhere."""
    db = tmp_path / "dvolver.db"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY | {"evaluations": 6, "population": 4, "batch": 2, "seed": 4}))
    done = subprocess.run([sys.executable, "-m", "dvolver", "search", "--spec", str(spec), "--db", str(db),
                           "--ray-address", cluster[how], "--plot", str(tmp_path / "front.png")],
                          capture_output=True, text=True, timeout=600, env=os.environ | TOKEN_ENV)
    assert done.returncode == 0, done.stderr[-3000:] + _client_server_logs()
    assert "6 evaluations (6 run now" in done.stderr

    from dvolver.store import Store

    candidates = Store(str(db)).candidates(1)
    assert [c.status for c in candidates] == ["finished"] * 6
    nodes = {c.metrics["ray_node"] for c in candidates}
    assert len(nodes) == 2, nodes  # both one-CPU nodes trained candidates; the CPU-less head none
    assert Store(str(db)).get_search(1).stats["workers"] == 2  # the cluster's CPUs, not --workers


def test_workers_get_the_data_from_the_object_store_not_from_the_drivers_files(ray_local, tmp_path):
    """The driver loads the dataset and sends it; a worker never opens the driver's path (on a
    cluster, that file may exist only on the driver's machine)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "private" / "digits.npz"
    path.parent.mkdir()
    np.savez(path, x_train=digits.images[:1400], y_train=digits.target[:1400], x_test=digits.images[1400:],
             y_test=digits.target[1400:])
    spec = SearchSpec.from_dict(TINY | {"dataset": str(path), "evaluations": 4})
    data.load(str(path))  # in this process's cache: the driver has the data
    shutil.rmtree(path.parent)  # and no worker can read it from disk
    result = run_search(spec, db=str(tmp_path / "dvolver.db"), executor="ray", workers=2)
    assert [c.status for c in result.candidates] == ["finished"] * 4, [c.error for c in result.candidates]
    assert result.front
