"""bench/gpu_proof.py rehearsed end to end on the CPU (--smoke), as on the GPU machine: no Ray, local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_gpu_proof_runs_every_section_in_its_smoke_sizes(cifar_npz, tmp_path):
    out = tmp_path / "proof"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_proof.py"), "--smoke",
                           "--data", str(cifar_npz), "--out", str(out)], capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_proof.json").read_text())
    s = report["sections"]
    assert report["smoke"] and list(s) == ["environment", "digits_search", "determinism", "cifar_search",
                                           "precision", "mask_learning"]
    for search in (s["digits_search"]["gpu"], s["digits_search"]["cpu"], s["cifar_search"]):
        assert search["finished"] == search["evaluations"] > 0 and not search["failed"]
        assert search["devices"] == ["cpu"] and search["precisions"] == ["float32"]  # no GPU here
        assert search["front"] and 0 < search["utilisation"] <= 1
    assert s["environment"]["executor"] == "processes"  # as on the GPU machine, which has no Ray
    assert s["digits_search"]["cpu_over_gpu_wall"] > 0
    assert s["determinism"]["same_candidates"] and s["determinism"]["same_front"]
    assert s["cifar_search"]["train_images_per_s"]["median"] > 0
    assert s["precision"]["runs"]["autocast"]["precision"] == "float32"  # autocast never runs on a CPU
    mask = s["mask_learning"]
    assert len(mask["rows"]) == 12 and not mask["cut_by_deadline"]
    assert {(r["network"], r["method"], r["augment"]) for r in mask["rows"]} == {
        (n, m, a) for n in ("conv2", "conv4") for m in ("aslp", "edgepopup", "supermask") for a in (True, False)}
    for row in mask["rows"]:
        assert 0 < row["kept_fraction"] < 1 and row["steps"] == mask["plan"]["steps_max"]
        if row["method"] == "edgepopup":
            assert abs(row["kept_fraction"] - 0.5) < 0.01  # keep 0.5 per layer
    summary = (out / "gpu_proof.md").read_text()
    for heading in ("Digits NASNet search", "Determinism on CUDA", "CIFAR-10 subset NASNet search",
                    "Autocast vs float32", "Mask learning over frozen random weights"):
        assert f"## {heading}" in summary
    assert "mask-learning plan:" in proc.stdout
