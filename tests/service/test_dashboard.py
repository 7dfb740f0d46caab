"""The dashboard in a real Chromium against the real service and real searches.

The store holds two finished NAS-Bench-201 table searches of one problem (seconds, no training) and
a tiny digits NASNet search (two cells to draw). Screenshots go to tests/artifacts/, and those of
the layout tests under pytest's tmp_path.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import CHROMIUM, NB201_TABLE, TINY, data_file, live_service, missing

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")  # a dev dependency: installed wherever the tests are
uvicorn = pytest.importorskip("uvicorn")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # tests/artifacts
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000

# Where point i of a plot's trace is drawn, in page pixels (plotly's own axis conversion).
POINT_POSITION = """([plot, trace, i]) => {
  const gd = document.getElementById(plot);
  const t = gd.data[trace];
  const box = gd.getBoundingClientRect();
  const layout = gd._fullLayout;
  return {x: box.left + layout._size.l + layout.xaxis.d2p(t.x[i]),
          y: box.top + layout._size.t + layout.yaxis.d2p(t.y[i])};
}"""
FRONT_TRACE = """() => {
  const t = document.getElementById("front-plot").data.find((d) => d.name === "Pareto front");
  return {ids: t.customdata, x: t.x, y: t.y, type: t.type};
}"""


@dataclass
class Service:
    url: str
    nb201: int
    nasnet: int
    db: str
    nb201_short: int  # a shorter random search of nb201's problem: the two share a hypervolume reference

    def get(self, path: str) -> dict:
        response = httpx.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()


@dataclass
class Watched:
    """A page, and what it did that a test may object to."""

    page: object
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextmanager
def _serving(db: str, open_reads: bool) -> Iterator[str]:
    from service.settings import Settings

    with live_service(Settings(db=f"sqlite:///{db}", open_reads=open_reads)) as (url, _):
        yield url


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    data_file(NB201_TABLE)
    from dvolver.api import run_search

    db = str(tmp_path_factory.mktemp("dashboard") / "dvolver.db")
    # Three objectives: the plotted front (flops, acc) is the front over all three, seen from one side.
    problem = {"space": "nb201", "space_options": {"table": str(NB201_TABLE)}, "objectives": ["acc", "flops", "params"]}
    nb201 = run_search(problem | {"name": "nb201 table", "evaluations": 120, "population": 20},
                       db=db, executor="inline")
    nasnet = run_search(TINY | {"name": "tiny digits"}, db=db, executor="inline")
    short = run_search(problem | {"name": "nb201 random", "algorithm": "random", "evaluations": 30,
                                  "population": 10}, db=db, executor="inline")
    with _serving(db, open_reads=True) as url:
        yield Service(url, nb201.search_id, nasnet.search_id, db, short.search_id)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        missing("DVOLVER_REQUIRE_BROWSER", f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def watched(browser, service) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = Watched(page)

    def route(r):
        # Anything beyond this machine is recorded and refused, so the test never depends on a network.
        seen.requests.append(r.request.url)
        host = urlsplit(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            r.continue_()
        else:
            seen.foreign_requests.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and seen.console_errors.append(m.text))
    page.on("pageerror", lambda e: seen.console_errors.append(f"uncaught: {e}"))
    yield seen
    context.close()


def _open_search(page, service: Service, search_id: int) -> dict:
    page.goto(f"{service.url}/#/searches/{search_id}")
    page.wait_for_function("window.dvolverFrontDrawnAt !== undefined")
    return page.evaluate(FRONT_TRACE)


ALL_POSITIONS = """(plot) => {
  const gd = document.getElementById(plot);
  const box = gd.getBoundingClientRect();
  const layout = gd._fullLayout;
  return gd.data.map((t) => (t.x || []).map((x, i) => (
    {x: box.left + layout._size.l + layout.xaxis.d2p(x), y: box.top + layout._size.t + layout.yaxis.d2p(t.y[i])})));
}"""


# True when every drawn plot lies inside its card and clear of the candidate panel, in page pixels.
PLOTS_FIT = """() => {
  const panel = document.getElementById('candidate-panel');
  const side = panel && panel.offsetParent ? panel.getBoundingClientRect() : null;
  return [...document.querySelectorAll('.js-plotly-plot')].every((plot) => {
    const card = plot.closest('.card').getBoundingClientRect();
    const svg = plot.querySelector('.main-svg').getBoundingClientRect();
    const inside = svg.left >= card.left - 1 && svg.right <= card.right + 1;
    const clear = !side || svg.right <= side.left + 1 || svg.left >= side.right - 1;
    return svg.width > 0 && inside && clear;
  });
}"""


# Pairs of a cell drawing's edge labels, or of a label and a node box, that overlap on screen (by more
# than half a pixel, what rounding can leave): text drawn over text cannot be read.
LABEL_CLASHES = """(drawing) => {
  const boxes = [...drawing.querySelectorAll('text.edge-label')].map((t) => ['label ' + t.textContent, t.getBBox()]);
  const nodes = [...drawing.querySelectorAll('g.node rect')].map((r) => ['node', r.getBBox()]);
  const hit = (a, b) => a.x + 0.5 < b.x + b.width && b.x + 0.5 < a.x + a.width &&
                        a.y + 0.5 < b.y + b.height && b.y + 0.5 < a.y + a.height;
  const clashes = [];
  boxes.forEach(([name, box], i) => {
    for (const [other, obox] of [...boxes.slice(i + 1), ...nodes]) {
      if (hit(box, obox)) clashes.push(name + ' / ' + other);
    }
  });
  return clashes;
}"""


# What a user would see as broken, as sentences: the page scrolling sideways; anything sticking out of
# its card (what scrolls in a box of its own is checked as that box); cards overlapping one another or
# the candidate panel; a plot's legend over its plot area, or its text cut off at the plot's edge.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  // Not rendered, hidden, or in a closed <details>, whose content keeps its boxes but is not painted.
  const shown = (n) => n.checkVisibility({visibilityProperty: true});
  const name = (n) => n.id ? '#' + n.id : n.tagName.toLowerCase() +
    (typeof n.className === 'string' && n.className.trim() ? '.' + n.className.trim().split(/\\s+/).join('.') : '');
  const hit = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
                        Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const outside = (r, box, sideways) => r.width > 0 && r.height > 0 && (r.left < box.left - 1 ||
    r.right > box.right + 1 || (!sideways && (r.top < box.top - 1 || r.bottom > box.bottom + 1)));
  const scrolls = (n) => getComputedStyle(n).overflowX !== 'visible';
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) problems.push('the page scrolls sideways: ' + root.scrollWidth + ' px');
  const cards = [...document.querySelectorAll('.card')].filter(shown);
  for (const card of cards) {
    const box = card.getBoundingClientRect();
    const sideways = scrolls(card);  // a card that scrolls (the candidate panel) may be taller than its box
    const walk = (node) => {
      for (const child of node.children) {
        if (!shown(child)) continue;
        if (outside(child.getBoundingClientRect(), box, sideways)) {
          problems.push(name(child) + ' sticks out of ' + name(card));
        }
        if (!(child instanceof SVGElement) && !scrolls(child)) walk(child);
      }
    };
    walk(card);
  }
  cards.forEach((a, i) => cards.slice(i + 1).forEach((b) => {
    if (!a.contains(b) && !b.contains(a) && hit(a.getBoundingClientRect(), b.getBoundingClientRect())) {
      problems.push(name(a) + ' overlaps ' + name(b));
    }
  }));
  for (const gd of [...document.querySelectorAll('.js-plotly-plot')].filter(shown)) {
    const svg = gd.querySelector('.main-svg').getBoundingClientRect();
    const area = gd.querySelector('.nsewdrag');
    const legend = gd.querySelector('g.legend');
    if (legend && area && hit(legend.getBoundingClientRect(), area.getBoundingClientRect())) {
      problems.push(name(gd) + ': the legend lies over the plot area');
    }
    for (const text of gd.querySelector('.main-svg').querySelectorAll('text')) {
      if (text.textContent.trim() && outside(text.getBoundingClientRect(), svg, false)) {
        problems.push(name(gd) + ': "' + text.textContent + '" is cut off');
      }
    }
  }
  return problems;
}"""

# Rendered things outside the candidate panel that lie under it: covered by it, they cannot be seen.
UNDER_THE_PANEL = """() => {
  const panel = document.getElementById('candidate-panel');
  if (!panel || !panel.offsetParent) return ['no candidate panel is open'];
  const side = panel.getBoundingClientRect();
  const hit = (r) => Math.min(r.right, side.right) - Math.max(r.left, side.left) > 1 &&
                     Math.min(r.bottom, side.bottom) - Math.max(r.top, side.top) > 1;
  return [...document.querySelectorAll('#view *')]
    .filter((n) => !panel.contains(n) && !n.contains(panel) && n.checkVisibility({visibilityProperty: true}) &&
                   hit(n.getBoundingClientRect()))
    .map((n) => n.id ? '#' + n.id : n.tagName.toLowerCase());
}"""


def _click_front_point(page, ids: list[int]) -> int:
    """A real mouse click on the front point farthest on screen from every other plotted point (plotly
    picks the nearest point of any trace, and a search puts many candidates close to its front); its id."""
    trace = page.evaluate("document.getElementById('front-plot').data.findIndex((t) => t.name === 'Pareto front')")
    positions = page.evaluate(ALL_POSITIONS, "front-plot")
    others = [(t, i) for t, points in enumerate(positions) for i in range(len(points))]

    def clearance(index: int) -> float:
        here = positions[trace][index]
        return min((math.dist((here["x"], here["y"]), (positions[t][i]["x"], positions[t][i]["y"]))
                    for t, i in others if (t, i) != (trace, index)), default=math.inf)

    index = max(range(len(ids)), key=clearance)
    _click(page, positions[trace][index])
    return ids[index]


def _click(page, where: dict) -> None:
    page.mouse.move(where["x"], where["y"])  # plotly picks the point on hover, then reports the click
    page.mouse.click(where["x"], where["y"])


def test_the_list_shows_every_search_with_its_progress(watched, service):
    page = watched.page
    page.goto(service.url + "/")
    for search_id in (service.nb201, service.nasnet):
        row = page.locator(f'#search-list [data-search-id="{search_id}"]')
        row.wait_for()
        summary = service.get(f"/searches/{search_id}")
        assert "finished" in row.locator(".badge").inner_text()
        budget = summary["progress"]["budget"]
        assert f"{budget} / {budget}" in row.inner_text()
        assert row.locator("td").nth(8).inner_text() == str(summary["progress"]["front_size"])
    page.locator(f'[data-search-id="{service.nb201}"] a').first.click()
    page.wait_for_url(f"**/#/searches/{service.nb201}")
    page.locator("#front-plot .main-svg").first.wait_for()


def test_the_front_plot_shows_the_front_and_a_click_opens_the_candidate(watched, service):
    page = watched.page
    shown = _open_search(page, service, service.nb201)
    front = service.get(f"/searches/{service.nb201}/front")["items"]
    assert len(front) >= 3
    assert sorted(shown["ids"]) == sorted(c["id"] for c in front)
    assert page.locator("#front-count").inner_text() == str(len(front))
    layout = page.evaluate("() => document.getElementById('front-plot').layout")
    assert layout["xaxis"]["type"] == "log" and layout["yaxis"]["type"] == "linear"  # flops is a cost, acc is not

    chosen = _click_front_point(page, shown["ids"])
    panel = page.locator("#candidate-panel")
    panel.locator("h2", has_text=f"Candidate #{chosen}").wait_for()
    assert panel.is_visible()
    drawings = panel.locator("svg.cell-drawing")
    assert drawings.count() == 1 and drawings.get_attribute("data-cell") == "cell"
    detail = service.get(f"/searches/{service.nb201}/candidates/{chosen}")
    edges = detail["architecture"]["cell"]["edges"]
    assert drawings.locator("g.edge").count() == len(edges) == 6
    assert drawings.locator("g.edge.dead").count() == sum(not e["live"] for e in edges)
    assert drawings.first.evaluate(LABEL_CLASHES) == []
    metrics = page.locator("#candidate-metrics").inner_text()
    assert f"{detail['objectives']['acc']:.2f} %" in metrics and "FLOPs" in metrics
    for fmt in detail["exports"]:
        assert panel.get_by_role("link", name=fmt).count() == 1
    # The panel narrows the plots' column: every plot is redrawn to its card's new width, none clipped.
    page.wait_for_function(PLOTS_FIT, timeout=5000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    print(f"screenshot: {ARTIFACTS / 'dashboard.png'}")


def test_a_nasnet_candidate_shows_its_normal_and_reduction_cells(watched, service):
    page = watched.page
    shown = _open_search(page, service, service.nasnet)
    front = service.get(f"/searches/{service.nasnet}/front")["items"]
    assert page.locator("#front-count").inner_text() == str(len(front)) == str(len(shown["ids"]))
    chosen = _click_front_point(page, shown["ids"])
    panel = page.locator("#candidate-panel")
    panel.locator("h2", has_text=f"Candidate #{chosen}").wait_for()
    cells = panel.locator("svg.cell-drawing")
    assert [cells.nth(i).get_attribute("data-cell") for i in range(cells.count())] == ["normal", "reduction"]
    ARTIFACTS.mkdir(exist_ok=True)
    panel.screenshot(path=str(ARTIFACTS / "dashboard_nasnet_cells.png"))  # before the checks: what was seen
    architecture = service.get(f"/searches/{service.nasnet}/candidates/{chosen}")["architecture"]
    for i, name in enumerate(("normal", "reduction")):
        assert cells.nth(i).locator("g.edge").count() == len(architecture[name]["edges"])
        assert cells.nth(i).locator("g.node").count() == len(architecture[name]["nodes"])
        assert cells.nth(i).evaluate(LABEL_CLASHES) == [], name


def test_changing_an_axis_replots_and_the_history_slider_replays_generations(watched, service):
    page = watched.page
    _open_search(page, service, service.nb201)
    page.select_option("#x-axis", "params")
    page.wait_for_function("document.getElementById('front-plot').layout.xaxis.title.text.startsWith('parameters')")
    points = service.get(f"/searches/{service.nb201}/points?x=params&y=acc")
    shown = page.evaluate(FRONT_TRACE)
    assert shown["ids"] == [p["id"] for p in points["front"]]
    assert shown["x"] == [p["x"] for p in points["front"]]

    generations = service.get(f"/searches/{service.nb201}/history")["generations"]
    slider = page.locator("#history-slider")
    assert slider.get_attribute("max") == str(len(generations) - 1)
    slider.fill("0")
    page.wait_for_function("document.getElementById('history-label').textContent.startsWith('1 of')")
    drawn = page.evaluate("() => document.getElementById('history-plot').data[1].customdata")
    assert set(drawn) <= {m["id"] for m in generations[0]["front"]} and drawn


def test_compare_overlays_the_fronts_of_the_selected_searches(watched, service):
    page = watched.page
    page.goto(service.url + "/")
    for search_id in (service.nb201, service.nasnet):
        page.locator(f'[data-search-id="{search_id}"] input[type=checkbox]').check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_function("(document.getElementById('compare-plot')?.data || []).length === 4")
    shown = page.evaluate("""() => document.getElementById('compare-plot').data
      .filter((t) => t.meta !== undefined).map((t) => [t.meta, t.customdata])""")
    assert sorted(meta for meta, _ in shown) == sorted([service.nb201, service.nasnet])
    for search_id, ids in shown:
        assert sorted(ids) == sorted(c["id"] for c in service.get(f"/searches/{search_id}/front")["items"])
    # A click on a point opens that candidate in its own search.
    trace = page.evaluate("document.getElementById('compare-plot').data.findIndex((t) => t.meta !== undefined)")
    search_id, candidate_id = page.evaluate(
        "(i) => [document.getElementById('compare-plot').data[i].meta,"
        " document.getElementById('compare-plot').data[i].customdata[0]]", trace)
    _click(page, page.evaluate(POINT_POSITION, ["compare-plot", trace, 0]))
    page.wait_for_url(f"**/#/searches/{search_id}?candidate={candidate_id}")
    page.locator("#candidate-panel h2", has_text=f"Candidate #{candidate_id}").wait_for()


def test_pages_log_no_errors_and_request_only_this_machine(watched, service):
    page = watched.page
    page.goto(service.url + "/")
    page.locator("#search-list tbody tr").first.wait_for()
    shown = _open_search(page, service, service.nasnet)
    _click_front_point(page, shown["ids"])
    page.locator("#candidate-panel svg.cell-drawing").first.wait_for()
    page.goto(f"{service.url}/#/compare?ids={service.nb201},{service.nasnet}")
    page.wait_for_function("(document.getElementById('compare-plot')?.data || []).length === 4")
    page.wait_for_timeout(300)
    assert watched.console_errors == []
    assert watched.foreign_requests == []
    # plotly.js's basic bundle, vendored; the Python package's full 4.8 MB bundle is not served any more.
    assert any(url.endswith("/static/plotly-basic.min.js") for url in watched.requests)
    assert not any(url.endswith("/static/plotly.min.js") for url in watched.requests)


def test_a_running_search_updates_live_until_it_ends(watched, service):
    """The page follows the event stream while the real engine runs the search beside it."""
    from dvolver.api import versions
    from dvolver.engine import run
    from dvolver.executors import InlineExecutor
    from dvolver.spec import SearchSpec
    from dvolver.store import Store

    store = Store(service.db)
    spec = SearchSpec.from_dict({"name": "live", "space": "nb201", "space_options": {"table": str(NB201_TABLE)},
                                 "evaluations": 60, "population": 10, "seed": 3})
    search_id = store.create_search(spec.model_dump(mode="json"), versions())
    page = watched.page
    page.goto(f"{service.url}/#/searches/{search_id}")
    head = page.locator(".search-head")
    head.locator(".badge", has_text="queued").wait_for()
    # Table look-ups take microseconds: a pause per result leaves the page time to show the search midway.
    engine = threading.Thread(target=run, args=(store, search_id, InlineExecutor()),
                              kwargs={"on_progress": lambda _: time.sleep(0.05)})
    engine.start()
    try:
        head.locator(".badge", has_text="running").wait_for()
        page.wait_for_function("""() => {
          const m = document.querySelector('.search-head .progress').textContent.match(/(\\d+) \\/ 60/);
          return m && Number(m[1]) > 0 && Number(m[1]) < 60;
        }""")
    finally:
        engine.join(timeout=60)
    head.locator(".badge", has_text="finished").wait_for()
    front = service.get(f"/searches/{search_id}/front")["items"]
    page.wait_for_function(f"document.getElementById('front-count').textContent === '{len(front)}'")
    assert sorted(page.evaluate(FRONT_TRACE)["ids"]) == sorted(c["id"] for c in front)
    assert "60 / 60" in head.inner_text()
    assert watched.console_errors == []


def test_a_closed_service_asks_for_a_token_and_exports_with_it(watched, service):
    """Reads need a token: the page asks once, keeps it, sends it, and export links still download."""
    from dvolver.api import versions
    from dvolver.engine import run
    from dvolver.executors import InlineExecutor
    from dvolver.spec import SearchSpec
    from dvolver.store import Store
    from dvolver.tokens import create_token

    store = Store(service.db)
    token = create_token(store, "dashboard-test", owner="alice")
    spec = SearchSpec.from_dict({"name": "alice's", "space": "nb201", "space_options": {"table": str(NB201_TABLE)},
                                 "evaluations": 40, "population": 10})
    search_id = store.create_search(spec.model_dump(mode="json"), versions(), owner="alice")
    run(store, search_id, InlineExecutor())
    page = watched.page
    with _serving(service.db, open_reads=False) as url:
        page.goto(f"{url}/#/searches/{search_id}")
        page.locator("#token-dialog").wait_for(state="visible")
        page.fill("#token-input", token)
        page.get_by_role("button", name="Save").click()
        page.wait_for_function("window.dvolverFrontDrawnAt !== undefined")
        assert page.evaluate("localStorage.getItem('dvolver.token')") == token
        page.locator("#whoami", has_text="signed in as alice").wait_for()
        shown = page.evaluate(FRONT_TRACE)
        chosen = _click_front_point(page, shown["ids"])
        panel = page.locator("#candidate-panel")
        panel.locator("h2", has_text=f"Candidate #{chosen}").wait_for()
        with page.expect_download() as download:
            panel.get_by_role("link", name="genotype").click()
        saved = json.loads(Path(download.value.path()).read_text())
        genome = httpx.get(f"{url}/searches/{search_id}/candidates/{chosen}",
                           headers={"Authorization": f"Bearer {token}"}).json()["genome"]
        assert saved["genome"] == genome and download.value.suggested_filename.endswith(".json")
        # A reload goes straight in with the kept token.
        page.reload()
        page.wait_for_function("window.dvolverFrontDrawnAt !== undefined")
        assert not page.locator("#token-dialog").is_visible()
    assert watched.foreign_requests == []


def test_a_pruned_candidate_says_how_it_was_pruned_and_labels_its_costs_sparse(watched, service):
    from dvolver.api import run_search

    res = run_search({"name": "pruned conv2", "space": "conv2", "algorithm": "grid", "population": 2,
                      "evaluations": 2, "training": {"epochs": 1, "train_limit": 200},
                      "pruning": {"methods": ["magnitude"], "budgets": [0.3]}}, db=service.db, executor="inline")
    pruned = next(c for c in res.candidates if c.metrics.get("pruning"))
    page = watched.page
    page.goto(f"{service.url}/#/searches/{res.search_id}")
    page.wait_for_function("window.dvolverFrontDrawnAt !== undefined")
    shown = page.evaluate(FRONT_TRACE)
    if pruned.id not in shown["ids"]:
        pytest.fail(f"the pruned candidate is not on the plotted front {shown['ids']}")
    trace = page.evaluate("document.getElementById('front-plot').data.findIndex((t) => t.name === 'Pareto front')")
    _click(page, page.evaluate(POINT_POSITION, ["front-plot", trace, shown["ids"].index(pruned.id)]))
    panel = page.locator("#candidate-panel")
    panel.locator("h2", has_text=f"Candidate #{pruned.id}").wait_for()
    assert panel.locator("#candidate-pruning").inner_text() == \
        "Pruned by magnitude (budget 30.00 % kept), 30.00 % of the weights kept"
    metrics = panel.locator("#candidate-metrics").inner_text()
    assert "FLOPs (sparse)" in metrics or "flops (sparse)" in metrics.lower()
    assert panel.get_by_role("link", name="sparse").count() == 1
    assert watched.console_errors == [] and watched.foreign_requests == []


def test_the_list_and_compare_show_each_search_s_hypervolume_on_the_shared_reference(watched, service):
    page = watched.page
    pair = sorted((service.nb201, service.nb201_short))
    shared = {i: service.get(f"/searches/{i}")["shared_hypervolume"] for i in pair}
    assert all(s["searches"] == pair for s in shared.values())
    page.goto(service.url + "/")
    header = page.locator("#search-list thead th").nth(9)
    assert header.text_content() == "HV (shared ref.)" and "reference point shared" in header.get_attribute("title")
    for search_id in pair:
        cell = page.locator(f'#search-list [data-search-id="{search_id}"] td').nth(9)
        assert cell.inner_text() == f"{shared[search_id]['value']:.4f}"
        assert f"Shared by #{pair[0]}, #{pair[1]}." in cell.locator(".shared-hv").get_attribute("title")

    # The compare legend: each search's evaluations and its value on the reference the two share.
    page.goto(f"{service.url}/#/compare?ids={pair[0]},{pair[1]}")
    page.wait_for_function("(document.getElementById('compare-plot')?.data || []).length === 4")
    for search_id in pair:
        evaluations = service.get(f"/searches/{search_id}")["progress"]["evaluations"]
        legend = page.locator(f'.compare-legend [data-search-id="{search_id}"]').inner_text()
        assert f"{evaluations} evaluations" in legend
        assert f"HV (shared ref.) {shared[search_id]['value']:.4f}" in legend
    assert page.locator("#hv-not-comparable").count() == 0
    # Searches of different problems are each on their own reference, and the page says so.
    page.goto(f"{service.url}/#/compare?ids={service.nb201},{service.nasnet}")
    page.locator("#hv-not-comparable").wait_for()
    assert watched.console_errors == []


def _list_page(page, service: Service) -> None:
    page.goto(service.url + "/")
    for search_id in (service.nb201, service.nasnet, service.nb201_short):
        page.locator(f'#search-list [data-search-id="{search_id}"]').wait_for()


def _search_page(page, service: Service) -> None:
    _open_search(page, service, service.nb201)
    page.locator("#history-plot .main-svg").first.wait_for()
    page.locator("#hv-plot .main-svg").first.wait_for()


def _candidate_page(page, service: Service) -> None:
    """The NASNet search's first front member open: the panel with the most to hold (two cells)."""
    first = service.get(f"/searches/{service.nasnet}/front")["items"][0]["id"]
    page.goto(f"{service.url}/#/searches/{service.nasnet}?candidate={first}")
    page.locator("#candidate-panel svg.cell-drawing").nth(1).wait_for()
    page.locator("#history-plot .main-svg").first.wait_for()


def _compare_page(page, service: Service) -> None:
    page.goto(f"{service.url}/#/compare?ids={service.nb201},{service.nb201_short},{service.nasnet}")
    page.wait_for_function("(document.getElementById('compare-plot')?.data || []).length === 6")


PAGES = {"list": _list_page, "search": _search_page, "candidate": _candidate_page, "compare": _compare_page}


def _problems(page, check: str) -> list[str]:
    """What `check` finds once the page has settled: plots redraw a frame or two after a resize."""
    with suppress(sync_api.TimeoutError):
        page.wait_for_function(f"() => ({check})().length === 0", timeout=3000)
    return page.evaluate(check)


@pytest.mark.parametrize("width", [1400, 1024])
@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_fits_its_cards_and_nothing_lies_under_the_candidate_panel(watched, service, tmp_path, name,
                                                                             width):
    page = watched.page
    page.set_viewport_size({"width": width, "height": 1000})
    PAGES[name](page, service)
    page.wait_for_function(PLOTS_FIT, timeout=5000)
    shot = tmp_path / f"{name}-{width}.png"
    page.screenshot(path=str(shot), full_page=True)  # before the checks: what was seen
    print(f"screenshot: {shot}")
    assert _problems(page, LAYOUT_PROBLEMS) == []
    if name == "candidate":
        assert _problems(page, UNDER_THE_PANEL) == []
        drawings = page.locator("#candidate-panel svg.cell-drawing")
        assert [drawings.nth(i).evaluate(LABEL_CLASHES) for i in range(drawings.count())] == [[], []]
    assert watched.console_errors == []


def test_a_stopped_candidate_shows_its_rung_and_the_search_its_epochs(browser, tmp_path):
    import csv

    from bench.synthetic_tables import learning_curve_table
    from dvolver.api import run_search

    table = tmp_path / "curves.csv"
    rows = learning_curve_table(7)
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    db = str(tmp_path / "es.db")
    result = run_search({"space": "nb201", "space_options": {"table": str(table)}, "evaluations": 40,
                         "population": 12, "early_stopping": {"method": "sha"}}, db=db, executor="inline")
    stopped = next(c for c in result.candidates if c.status == "stopped")
    stats = result.stats
    with _serving(db, open_reads=True) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/#/searches/{result.search_id}?candidate={stopped.id}")
        rung = page.locator("#candidate-rung")
        epochs = stopped.metrics["epochs"]
        assert rung.inner_text() == (f"Rung {stopped.metrics['rung']} of 4 ({epochs} epoch{'' if epochs == 1 else 's'})"
                                     ": stopped early, so it is not on the front")
        first_epochs, first_acc = stopped.metrics["rungs"][0]
        assert page.locator("#candidate-curve").inner_text().startswith(
            f"Validation accuracy: {first_acc:.2f} % after {first_epochs} epoch")
        assert page.locator("#candidate-panel .badge.status-stopped").inner_text() == "stopped"
        fact = page.locator("dl.facts div", has_text="Training epochs").locator("dd").inner_text()
        share = round(100 * stats.training_epochs / stats.full_fidelity_epochs)
        assert fact == f"{stats.training_epochs:,} of {stats.full_fidelity_epochs:,} at full fidelity ({share} %)"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "early_stopping.png"), full_page=True)
        page.close()
