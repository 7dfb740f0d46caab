"""bench/final_training.py end to end at its --quick sizes: a proxy search on the CIFAR-10 subset, its front
and NASNet-A retrained at a larger scale, and the report a reader pastes into bench/RESULTS.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_quick_run_reports_every_retrained_network_the_rank_correlation_and_the_verdict(cifar_npz):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "final_training.py"), "--quick", "--data",
                           str(cifar_npz)], capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    rows = re.findall(r"^\| (candidate \d+|NASNet-A \(reference\)) \| (front|layer \d+|-) \| ([-\d.]+) \| ([\d.]+) \| "
                      r"([\d.]+) \| ([\d.]+) \| ([\d,]+) \|$", out, re.M)
    assert rows and rows[-1][0] == "NASNet-A (reference)", out
    # four to six found networks, the proxy front first and any filler from the next layers after it
    layers = [where for _, where, *_ in rows[:-1]]
    assert 4 <= len(layers) <= 6 and layers[0] == "front", out
    assert layers == sorted(layers, key=lambda w: 1 if w == "front" else int(w.split()[1])), out
    for _, _, proxy, val, test, mflops, params in rows:
        assert all(0 <= float(v) <= 100 for v in (val, test) + ((proxy,) if proxy != "-" else ()))
        assert float(mflops) > 0 and int(params.replace(",", "")) > 0
    assert "statuses: {" in out and "failed" not in out.split("statuses:")[1].splitlines()[0]
    tau = re.search(r"Kendall tau-b proxy vs final: validation (\S+), test (\S+);", out)
    assert tau, out
    for value in tau.groups():
        assert value == "undefined" or -1 <= float(value) <= 1
    assert re.search(r"final front dominates NASNet-A \(test split, FLOPs at final scale\): (yes|no): ", out)
