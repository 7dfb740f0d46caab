"""CI's DVOLVER_REQUIRE_* switches turn a missing dependency into a failure: the same test skips
without its switch, as on a developer's machine that lacks the dependency, and fails with it, as in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(test: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize(("switch", "hidden", "test"), [
    ("DVOLVER_REQUIRE_DATA", {"DVOLVER_TEST_DATA": "/nonexistent/shared/data"},
     "tests/test_spec.py::test_table_searches_only_use_what_the_table_has"),
    ("DVOLVER_REQUIRE_BROWSER", {"DVOLVER_TEST_CHROMIUM": "/nonexistent/chromium"},
     "tests/service/test_dashboard.py::test_the_list_shows_every_search_with_its_progress"),
], ids=["data", "browser"])
def test_a_missing_dependency_skips_without_its_switch_and_fails_with_it(switch, hidden, test):
    base = {k: v for k, v in os.environ.items() if not k.startswith("DVOLVER_REQUIRE_")} | hidden
    skipped = _pytest(test, base)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout[-2000:]
    failed = _pytest(test, base | {switch: "1"})
    assert failed.returncode == 1 and f"{switch}=1 but" in failed.stdout, failed.stdout[-2000:]
