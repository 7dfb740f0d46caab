"""Times the dashboard drawing the Pareto front of a search with 10,000 candidates.

Builds a store holding one finished NASNet search (acc, flops, params) of 10,000 candidates with
realistic-looking objectives and a front that improves generation by generation (inserted in bulk,
nothing trained), serves it with the real service on a loopback port, opens `#/searches/ID` in
headless Chromium and reads `window.dvolverFrontDrawnAt`: milliseconds from navigation start to the
first paint after plotly has drawn the front plot. Reported for first visits (a fresh browser
context each time: no HTTP cache, plotly.min.js fetched and parsed) and for reloads (cached), after
one untimed visit that warms the service's per-search cache.

    python bench/dashboard_draw.py [--candidates 10000] [--repeat 5] [--chromium /usr/bin/chromium]

Needs playwright (the Python package only; no browser download) and a Chromium binary.
"""

from __future__ import annotations

import argparse
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from service.app import create_app
from service.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_search import fill  # noqa: E402

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
def serve(db: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(db=db, open_reads=True)), log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://{host}:{port}"


def draw_time(page, url: str) -> float:
    page.goto(url)
    page.wait_for_function("window.dvolverFrontDrawnAt !== undefined", timeout=60_000)
    return page.evaluate("window.dvolverFrontDrawnAt")


def reload_time(page) -> float:
    page.reload()
    page.wait_for_function("window.dvolverFrontDrawnAt !== undefined", timeout=60_000)
    return page.evaluate("window.dvolverFrontDrawnAt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        t0 = time.perf_counter()
        search_id = fill(db, args.candidates)
        print(f"store: {args.candidates} candidates in {time.perf_counter() - t0:.1f} s")
        server, thread, base = serve(db)
        try:
            url = f"{base}/#/searches/{search_id}"
            t0 = time.perf_counter()
            points = httpx.get(f"{base}/searches/{search_id}/points?x=flops&y=acc", timeout=60).json()
            cold_api = time.perf_counter() - t0
            t0 = time.perf_counter()
            httpx.get(f"{base}/searches/{search_id}/points?x=flops&y=acc", timeout=60).raise_for_status()
            warm_api = time.perf_counter() - t0
            print(f"GET /points: {len(points['front'])} front + {points['dominated_shown']} of "
                  f"{points['dominated_total']} dominated points; first {cold_api * 1000:.0f} ms "
                  f"(builds the service's cache), then {warm_api * 1000:.0f} ms")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
                first, reload = [], []
                for i in range(args.repeat + 1):
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    ms = draw_time(page, url)
                    if i:  # the first visit is a warm-up
                        first.append(ms)
                        reload.append(reload_time(page))
                    context.close()
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    print(f"machine: {platform.machine()}, {platform.python_version()}, Chromium {args.chromium}")
    for name, times in (("first visit (no HTTP cache)", first), ("reload (cached plotly.min.js)", reload)):
        print(f"{name}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms, "
              f"runs {', '.join(f'{t:.0f}' for t in times)}")


if __name__ == "__main__":
    main()
