"""Times the README's main job, `dvolver search --objectives acc,flops`, on the bundled digits.

Acceptance (issue 2): it finishes in 3 minutes or less on 2 cores once installed, its front holds
at least 3 candidates and the most accurate reaches >= 90 % test accuracy.

    python bench/default_search.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from machine import header

from dvolver.run_stats import RunStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    print(header())
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "bench.db")
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "dvolver", "search", "--objectives", "acc,flops", "--db", db],
                                 cwd=tmp, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if out.returncode != 0:
                sys.exit(f"search failed:\n{out.stderr}")
            front = json.loads(subprocess.run([sys.executable, "-m", "dvolver", "front", "1", "--format", "json",
                                               "--db", db], capture_output=True, text=True, check=True).stdout)
            shown = json.loads(subprocess.run([sys.executable, "-m", "dvolver", "show", "1", "--db", db],
                                              capture_output=True, text=True, check=True).stdout)
        best = max(front, key=lambda r: r["acc_pct"])
        stats = RunStats.from_dict(shown["stats"])
        ok = wall <= 180 and len(front) >= 3 and best["test_acc_pct"] >= 90
        print(f"run {run + 1}: wall {wall:.1f} s (search loop {stats.wall_seconds:.1f} s), "
              f"front {len(front)}, best val {best['acc_pct']:.2f} % / test {best['test_acc_pct']:.2f} % "
              f"at {best['flops'] / 1e6:.2f} MFLOPs ({best['macs'] / 1e6:.2f} MMACs), "
              f"utilisation {stats.utilisation:.2f} over {stats.workers} workers, driver CPU "
              f"{stats.driver_cpu_seconds:.1f} s ({stats.driver_cpu_seconds_per_evaluation:.3f} s per eval.) "
              f"-> {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
