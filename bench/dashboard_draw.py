"""Times the dashboard drawing the Pareto front of a search with 10,000 candidates.

Builds a store holding one finished NASNet search (acc, flops, params) of 10,000 candidates with
realistic-looking objectives and a front that improves generation by generation (inserted in bulk,
nothing trained), serves it with the real service on a loopback port, opens `#/searches/ID` in
headless Chromium and reads `window.dvolverFrontDrawnAt`: milliseconds from navigation start to the
first paint after plotly has drawn the front plot. Reported for first visits (a fresh browser
context each time: no HTTP cache, plotly fetched and compiled) and for reloads (cached), after one
untimed visit per bundle that warms the service's per-search cache.

The peer is the same dashboard with plotly.js's full bundle (the Python plotly package's 4.8 MB
plotly.min.js, what the service served before it vendored the 1.2 MB basic bundle): a second
service over the same store answers the bundle's URL with that file, the rest is the same. The two
take turns visit by visit, so a change in the machine's load falls on both alike.

    python bench/dashboard_draw.py [--candidates 10000] [--repeat 5] [--bundles basic,full]
                                   [--chromium /usr/bin/chromium]

Needs playwright (the Python package only; no browser download), a Chromium binary, and for the
peer the plotly Python package (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse
from playwright.sync_api import sync_playwright

from service.app import create_app
from service.routes.dashboard import PLOTLY
from service.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from large_search import fill  # noqa: E402
from live import serving  # noqa: E402
from machine import header  # noqa: E402

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUNDLE_URL = "/static/plotly-basic.min.js"


def full_bundle() -> Path:
    from importlib import resources

    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def app_with(bundle: str, db: str) -> FastAPI:
    """The real service, its plotly URL answering with `bundle` with the route's own headers. Both
    bundles go through the same middleware, so that the two services differ in the file alone."""
    app = create_app(Settings(db=db, open_reads=True))
    path = full_bundle() if bundle == "full" else PLOTLY

    @app.middleware("http")
    async def serve_bundle(request: Request, call_next):
        if request.url.path == BUNDLE_URL:
            return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})
        return await call_next(request)

    return app


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
    parser.add_argument("--bundles", default="basic,full", help="basic (the service's), full (the peer), or both")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    bundles = args.bundles.split(",")
    sizes = {"basic": PLOTLY.stat().st_size} | ({"full": full_bundle().stat().st_size} if "full" in bundles else {})
    print(header())

    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        t0 = time.perf_counter()
        search_id = fill(db, args.candidates)
        print(f"store: {args.candidates} candidates in {time.perf_counter() - t0:.1f} s")
        with ExitStack() as stack:
            servers = {bundle: stack.enter_context(serving(app_with(bundle, db))) for bundle in bundles}
            base = servers[bundles[0]]
            t0 = time.perf_counter()
            points = httpx.get(f"{base}/searches/{search_id}/points?x=flops&y=acc", timeout=60).json()
            cold_api = time.perf_counter() - t0
            t0 = time.perf_counter()
            httpx.get(f"{base}/searches/{search_id}/points?x=flops&y=acc", timeout=60).raise_for_status()
            warm_api = time.perf_counter() - t0
            print(f"GET /points: {len(points['front'])} front + {points['dominated_shown']} of "
                  f"{points['dominated_total']} dominated points; first {cold_api * 1000:.0f} ms "
                  f"(builds the service's cache), then {warm_api * 1000:.0f} ms")
            first: dict[str, list[float]] = {b: [] for b in bundles}
            reload: dict[str, list[float]] = {b: [] for b in bundles}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=LAUNCH_ARGS)
                chromium = browser.version
                for i in range(args.repeat + 1):
                    for bundle in bundles:  # in turns, so that the machine's load falls on both alike
                        context = browser.new_context(viewport={"width": 1400, "height": 1000})
                        page = context.new_page()
                        ms = draw_time(page, f"{servers[bundle]}/#/searches/{search_id}")
                        if i:  # the first visit of each is a warm-up
                            first[bundle].append(ms)
                            reload[bundle].append(reload_time(page))
                        context.close()
                browser.close()

    print(f"Chromium {chromium} ({args.chromium}), {platform.machine()}, python {platform.python_version()}")
    for bundle in bundles:
        print(f"{bundle} bundle ({sizes[bundle] / 1e6:.2f} MB):")
        for name, times in (("  first visit (no HTTP cache)", first[bundle]),
                            ("  reload (cached plotly)", reload[bundle])):
            print(f"{name}: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms, "
                  f"runs {', '.join(f'{t:.0f}' for t in times)}")
    if len(bundles) == 2:
        ratio = statistics.median(first[bundles[0]]) / statistics.median(first[bundles[1]])
        print(f"first visit, median {bundles[0]} / median {bundles[1]}: {ratio:.2f}")


if __name__ == "__main__":
    main()
