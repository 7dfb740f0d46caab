"""`dvolver serve` as a user starts it: the API and its runner in their own processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

from tests.helpers import free_port, table_spec, wait_up


def test_serve_runs_submitted_searches_and_stops_its_runner_with_it(nb201_table, tmp_path):
    db = str(tmp_path / "dvolver.db")
    token = subprocess.run([sys.executable, "-m", "dvolver", "token", "create", "alice", "--db", db],
                           capture_output=True, text=True, check=True).stdout.strip()
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "dvolver", "serve", "--port", str(port), "--db", db,
                              "--data-root", str(nb201_table.parent)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        wait_up(f"http://127.0.0.1:{port}/healthz", serve)
        deadline = time.monotonic() + 120
        assert http.get("/whoami").json() == {"owner": "alice", "open_reads": True}  # loopback: reads open
        sid = http.post("/searches", json=table_spec(nb201_table)).json()["id"]
        while http.get(f"/searches/{sid}").json()["status"] != "finished":
            assert time.monotonic() < deadline, "the runner did not run the search"
            time.sleep(0.3)
        assert http.get(f"/searches/{sid}/front").json()["items"]
        assert "text/html" in http.get("/").headers["content-type"]
    finally:
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=60)
    assert serve.returncode == 0, stderr
    assert "1 runner(s)" in stderr
    leftovers = subprocess.run(["pgrep", "-f", f"dvolver runner --db sqlite:///{db}"], capture_output=True,
                               text=True).stdout
    assert leftovers.strip() == "", f"runner processes left behind: {leftovers}"
