"""The header line every benchmark prints: machines with the same core count differ, so each figure names its CPU."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import date


def cpu_model() -> str:
    """`lscpu`'s model name."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                platform.processor() or "unknown CPU")


def header() -> str:
    return (f"# {date.today()}  {cpu_model()}  {platform.machine()}  {os.cpu_count()} cores  "
            f"python {platform.python_version()}")
