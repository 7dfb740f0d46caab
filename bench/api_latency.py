"""Read latency of the service on a search with 10,000 stored candidates.

    .venv/bin/python bench/api_latency.py [--candidates 10000] [--requests 1000] [--peer-python PATH]

Starts `dvolver serve --runners 0` on a loopback port over a store holding one synthetic finished
search (bench/large_search.py), then times sequential GETs from one client: the first (cold:
the service reads the 10,000 rows) and then --requests more of each route (warm). Target: GET
front p99 <= 100 ms on 2 cores.

With --peer-python (a Python with optuna and optuna-dashboard installed), the same candidates'
(acc, FLOPs) values, in the same order, are stored as the trials of a two-objective Optuna study
(maximise acc, minimise FLOPs), and optuna-dashboard's data route, which its UI calls to draw the
study, is timed in the same run. (With params as a third objective, as the Dvolver search has,
optuna-dashboard was still busy, not answering, after 9 minutes, 2026-12-02.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_search import fill  # noqa: E402
from live import free_port, wait_up  # noqa: E402
from machine import header  # noqa: E402

ROUTES = {
    "front": "/searches/{id}/front",
    "front?knee": "/searches/{id}/front?knee=true",
    "points (plot data)": "/searches/{id}/points?x=flops&y=acc&max_dominated=2000",
    "search detail": "/searches/{id}",
    "candidates page (filtered)": "/searches/{id}/candidates?min_acc=90&limit=100",
    "history": "/searches/{id}/history",
}

PEER_SETUP = """
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
points, url = json.load(open(sys.argv[1])), sys.argv[2]
study = optuna.create_study(study_name="bench", storage=url, directions=["maximize", "minimize"])
dists = {"x": optuna.distributions.FloatDistribution(0, 1)}
trials = [optuna.trial.create_trial(params={"x": i / len(points)}, distributions=dists, values=values)
          for i, values in enumerate(points)]
study.add_trials(trials)
"""


def timed(client: httpx.Client, path: str, n: int) -> dict[str, float]:
    start = time.perf_counter()
    first = client.get(path)
    cold = time.perf_counter() - start
    first.raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        client.get(path).raise_for_status()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {"cold_ms": round(cold * 1000, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
            "bytes": len(first.content)}


def stored_points(db: str, search_id: int, path: Path) -> Path:
    """The search's (acc, FLOPs) per candidate, in id order, for the peer to store the same."""
    from dvolver.store import Store

    points = [[c.objectives["acc"], c.objectives["flops"]] for c in Store(db).candidates(search_id)]
    path.write_text(json.dumps(points))
    return path


def measure_dvolver(db: str, search_id: int, requests: int) -> dict[str, dict[str, float]]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "dvolver", "serve", "--db", db, "--port", str(port),
                               "--runners", "0"], stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/healthz", server)
        with httpx.Client(base_url=base, timeout=60) as client:
            return {name: timed(client, path.format(id=search_id), requests) for name, path in ROUTES.items()}
    finally:
        server.terminate()
        server.wait(30)


def measure_peer(folder: Path, python: str, points: Path, requests: int) -> dict[str, dict[str, float]]:
    url = f"sqlite:///{folder / 'optuna.db'}"
    subprocess.run([python, "-c", PEER_SETUP, str(points), url], check=True)
    port = free_port()
    dashboard = str(Path(python).parent / "optuna-dashboard")
    server = subprocess.Popen([dashboard, url, "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/api/studies", server)
        with httpx.Client(base_url=base, timeout=120) as client:
            study_id = client.get("/api/studies").json()["study_summaries"][0]["study_id"]
            # What its UI fetches to draw a study (every trial, which it then filters for the front).
            return {"optuna-dashboard study data (all trials)": timed(client, f"/api/studies/{study_id}?after=0",
                                                                       max(requests // 10, 10))}
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--peer-python", help="a Python with optuna and optuna-dashboard, to time them too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "dvolver.db")
        search_id = fill(db, args.candidates)
        results = {"dvolver": measure_dvolver(db, search_id, args.requests)}
        if args.peer_python:
            points = stored_points(db, search_id, Path(tmp) / "points.json")
            results["optuna-dashboard"] = measure_peer(Path(tmp), args.peer_python, points, args.requests)
    print(header() + f"  {args.candidates} candidates, {args.requests} warm requests per route")
    print(f"{'route':<45} {'cold ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}")
    for system, routes in results.items():
        for name, r in routes.items():
            print(f"{system + ': ' + name:<45} {r['cold_ms']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} "
                  f"{r['bytes']:>9}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
