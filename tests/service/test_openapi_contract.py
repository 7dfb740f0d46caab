"""The OpenAPI contract as schemathesis's own CLI checks it, against `dvolver serve --closed-reads`.

Every check (`--checks all`): documented status codes and bodies, schema-valid requests accepted,
schema-invalid ones refused, authentication enforced, Allow headers. The repository's
schemathesis.toml is read as it would be by a user running `st` from the repository root.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_up

ROOT = Path(__file__).resolve().parents[2]
ST = Path(sys.executable).parent / "st"  # installed by the dev extra beside this interpreter


def _dvolver(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvolver", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


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
        wait_up(f"{url}/healthz", serve)
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
