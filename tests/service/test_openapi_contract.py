"""The OpenAPI contract as schemathesis's own CLI checks it, against `dvolver serve --closed-reads`.

Every check (`--checks all`): documented status codes and bodies, schema-valid requests accepted,
schema-invalid ones refused, authentication enforced, Allow headers. The repository's
schemathesis.toml is read as it would be by a user running `st` from the repository root.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ST = Path(sys.executable).parent / "st"  # installed by the dev extra beside this interpreter


def _dvolver(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvolver", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _wait_until_up(url: str, serve: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and serve.poll() is None, "the service did not start"
        time.sleep(0.2)


def test_schemathesis_finds_no_failure(nb201_table, tmp_path):
    db = str(tmp_path / "dvolver.db")
    # A finished search, so that the result routes serve real fronts and candidates, not only 404s.
    _dvolver("search", "--space", "nb201", "--table", str(nb201_table), "--evaluations", "30", "--db", db)
    token = _dvolver("token", "create", "fuzzer", "--db", db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "-m", "dvolver", "serve", "--port", str(port), "--db", db,
                              "--closed-reads", "--runners", "0", "--data-root", str(nb201_table.parent)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_until_up(url, serve)
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        operations = sum(len(methods) for methods in paths.values())
        st = subprocess.run([str(ST), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "5",
                             "--seed", "1", "--request-timeout", "5", "--continue-on-failure",
                             "-H", f"Authorization: Bearer {token}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)
    report = st.stdout + st.stderr
    assert st.returncode == 0, report[-6000:]
    assert "Failures:" not in report and "Errors:" not in report, report[-6000:]
    assert f"Tested: {operations}" in report, report[-3000:]  # every operation, none dropped as unsupported
