"""The dashboard's final trainings (issue 19) in a real Chromium, against the real service and real trainings.

A tiny digits NASNet search is run by a real runner; two of its finished candidates and NASNet-A are queued
for final training through the API, and the search page is watched while another runner trains them: the panel
follows the training events, then the plot holds a final point per finished training and the panel the
numbers the API gives. Screenshots go to /tmp/dashboard_trainings*.png.
"""

from __future__ import annotations

import math
import threading
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest

from tests.helpers import CHROMIUM, TINY, live_service, missing

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")  # a dev dependency: installed wherever the tests are

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000
SHOTS = Path("/tmp")
# 2 epochs of 160 digits at a tiny scale: about a second each on a 2-core CPU (as test_trainings_service.py).
RECIPE = {"epochs": 2, "batch_size": 32, "train_limit": 160, "device": "cpu",
          "scale": {"nasnet": {"cells": 1, "filters": 4}}}
MARKERS = "#front-plot path.point[data-training-id]"
ROWS = "#trainings-table tbody tr"


def _shown(value: float, places: int) -> str:
    """A number as the page's toFixed writes it: the double's exact value, halves rounded up."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{_shown(value, 2)} %"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from dvolver.tokens import create_token
    from service.runner import Runner
    from service.settings import Settings

    db = str(tmp_path_factory.mktemp("dashboard_trainings") / "dvolver.db")
    with live_service(Settings(db=db, open_reads=True)) as (url, app):
        token = create_token(app.state.store, "alice")
        http = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        created = http.post("/searches", json=TINY | {"name": "retrained", "evaluations": 4, "population": 2})
        assert created.status_code == 201, created.text
        Runner(db, "search-runner", executor="inline").serve(once=True)
        yield {"url": url, "db": db, "http": http, "search": created.json()["id"]}
        http.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        missing("DVOLVER_REQUIRE_BROWSER", f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.errors = errors
    yield page
    context.close()


def _open(page, service) -> None:
    page.goto(f"{service['url']}/#/searches/{service['search']}")
    page.wait_for_function("window.dvolverFrontDrawnAt !== undefined")


def test_the_search_page_follows_its_final_trainings_and_shows_them_in_the_plot_and_panel(page, service):
    from service.runner import Runner

    http, sid = service["http"], service["search"]
    # No training yet: nothing of them on the page.
    _open(page, service)
    page.wait_for_timeout(300)
    assert page.locator("#trainings").is_hidden() and page.locator(MARKERS).count() == 0

    finished = http.get(f"/searches/{sid}/candidates", params={"status": "finished"}).json()["items"]
    chosen = [c["id"] for c in finished[:2]]
    assert len(chosen) == 2
    queued = http.post(f"/searches/{sid}/trainings", json={"candidates": chosen, "recipe": RECIPE})
    reference = http.post(f"/searches/{sid}/trainings", json={"genome": "nasnet-a", "recipe": RECIPE})
    assert queued.status_code == reference.status_code == 201, (queued.text, reference.text)
    ids = [t["id"] for t in queued.json() + reference.json()]
    [reference_id] = [t["id"] for t in reference.json()]

    # Queued: the panel lists them before any has trained, and follows the runner's events to the end.
    page.reload()
    page.locator(ROWS).nth(2).wait_for()
    assert [page.locator(ROWS).nth(i).get_attribute("data-status") for i in range(3)] == ["queued"] * 3
    assert page.locator("#rank-correlation").count() == 0  # no rank survival before one has finished
    runner = threading.Thread(target=Runner(service["db"], "trainer", executor="inline").serve,
                              kwargs={"once": True})
    runner.start()
    try:
        page.wait_for_function(f"document.querySelectorAll('{ROWS}[data-status=finished]').length === 3",
                               timeout=60_000)
    finally:
        runner.join(timeout=120)
    page.wait_for_function(f"document.querySelectorAll('{MARKERS}').length === 3")
    page.locator("#rank-correlation").wait_for()
    shot = SHOTS / "dashboard_trainings.png"
    page.screenshot(path=str(shot), full_page=True)  # before the checks: what was seen
    print(f"screenshot: {shot}")

    trainings = {t["id"]: t for t in http.get("/trainings", params={"search_id": sid}).json()["items"]}
    assert sorted(trainings) == sorted(ids) and all(t["status"] == "finished" for t in trainings.values())
    survival = http.get(f"/searches/{sid}/survival").json()

    # The plot: one marker per finished training, each the training's own, at its final test accuracy and
    # final-scale cost; a dotted line from each retrained candidate's proxy point; the reference labelled.
    tagged = page.eval_on_selector_all(MARKERS, "(ps) => ps.map((p) => Number(p.dataset.trainingId))")
    assert sorted(tagged) == sorted(ids)
    traces = page.evaluate("""() => document.getElementById('front-plot').data.map((t) => (
      {name: t.name, x: t.x, y: t.y, text: t.text, meta: t.meta}))""")
    final = next(t for t in traces if t["name"].startswith("final training"))
    assert "test accuracy" in final["name"] and "at final scale" in final["name"]
    for tid, x, y in zip(final["meta"]["trainings"], final["x"], final["y"], strict=True):
        assert (x, y) == (trainings[tid]["flops"], trainings[tid]["test_acc"])
    ref = next(t for t in traces if t["name"].startswith("reference"))
    assert ref["meta"]["trainings"] == [reference_id] and ref["text"] == ["NASNet-A (reference)"]
    link = next(t for t in traces if t["name"].startswith("proxy"))
    assert len(link["x"]) == 3 * 2  # proxy point, final point, gap: per retrained candidate
    legend = page.eval_on_selector("#front-plot g.legend", "(g) => g.textContent")
    assert "final training" in legend and "reference" in legend
    # A real hover on the reference's star says what its coordinates are.
    star = page.locator(f'{MARKERS}[data-training-id="{reference_id}"]').bounding_box()
    page.mouse.move(star["x"] + star["width"] / 2, star["y"] + star["height"] / 2)
    hover = page.locator("#front-plot .hoverlayer .hovertext")
    hover.first.wait_for()
    said = hover.first.text_content()
    assert f"training #{reference_id}" in said and "NASNet-A (reference)" in said, said
    assert "test accuracy" in said and "FLOPs at final scale" in said, said

    # The panel: every training with the API's numbers, the reference by name, the rank correlation.
    for tid, t in trainings.items():
        row = page.locator(f'{ROWS}[data-training-id="{tid}"]')
        assert row.locator('[data-col="test"]').inner_text() == _pct(t["test_acc"])
        assert row.locator('[data-col="val"]').inner_text() == _pct(t["val_acc"])
        mflops = float(row.locator('[data-col="mflops"]').inner_text())
        assert math.isclose(mflops, t["flops"] / 1e6, rel_tol=5e-3)
        network = row.locator("td").nth(1).inner_text()
        if t["candidate_id"] is None:
            assert network.startswith("NASNet-A (reference)")
            assert row.locator('[data-col="proxy"]').inner_text() == "—"
        else:
            assert network.startswith(f"candidate #{t['candidate_id']}")
            proxy = http.get(f"/searches/{sid}/candidates/{t['candidate_id']}").json()["objectives"]["acc"]
            assert row.locator('[data-col="proxy"]').inner_text() == _pct(proxy)
        assert row.get_by_role("link", name=f"onnx of training #{tid}").count() == 1
    line = page.locator("#rank-correlation").inner_text()
    if survival["kendall_tau_test"] is None:
        assert "at least two finished retrained candidates" in line or "undefined" in line
    else:
        assert line.startswith(f"Kendall tau (proxy vs final test): {_shown(survival['kendall_tau_test'], 3)}, "
                               f"Spearman rho: {_shown(survival['spearman_rho_test'], 3)} over 2 retrained "
                               "candidates")
    fell_off = page.locator("#fell-off").inner_text()
    for cid in survival["fell_off"]:
        assert f"candidate #{cid}" in fell_off
    if not survival["fell_off"]:
        assert "Fell off" not in fell_off

    # The final weights download from the link the panel shows.
    some = ids[0]
    href = page.get_by_role("link", name=f"state_dict of training #{some}").get_attribute("href")
    weights = httpx.get(href, timeout=60)
    assert weights.status_code == 200 and weights.content, weights.text
    assert page.errors == []


def test_the_trainings_panel_fits_beside_an_open_candidate(page, service):
    """At a laptop's width, with the candidate panel open, nothing sticks out or overlaps (test_dashboard's checks)."""
    from tests.service.test_dashboard import LAYOUT_PROBLEMS, _problems

    trainings = service["http"].get("/trainings", params={"search_id": service["search"]}).json()["items"]
    if not any(t["status"] == "finished" for t in trainings):
        pytest.skip("needs the trainings of the test above")
    candidate = next(t["candidate_id"] for t in trainings if t["candidate_id"] is not None)
    page.set_viewport_size({"width": 1024, "height": 900})
    page.goto(f"{service['url']}/#/searches/{service['search']}?candidate={candidate}")
    page.locator("#candidate-panel svg.cell-drawing").first.wait_for()
    page.wait_for_function(f"document.querySelectorAll('{MARKERS}').length > 0")
    shot = SHOTS / "dashboard_trainings_1024.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert _problems(page, LAYOUT_PROBLEMS) == []
    # The candidate's own row: its button opens it, and it is named as the panel is.
    page.locator(f"{ROWS} button", has_text=f"candidate #{candidate}").first.click()
    page.locator("#candidate-panel h2", has_text=f"Candidate #{candidate}").wait_for()
    assert page.errors == []
