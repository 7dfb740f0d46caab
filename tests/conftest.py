from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NB201_TABLE = SHARED_DATA / "nb201_cifar10.csv"
CIFAR_NPZ = SHARED_DATA / "cifar10_subset.npz"

# A tiny proxy: enough to exercise every code path in well under a second per candidate.
TINY = {
    "space_options": {"filters": 4, "cells_per_stage": 1},
    "training": {"epochs": 1, "train_limit": 300},
    "population": 4,
    "evaluations": 8,
}


@pytest.fixture
def nb201_table() -> Path:
    if not NB201_TABLE.is_file():
        pytest.skip(f"NAS-Bench-201 table not found at {NB201_TABLE} (../shared/data beside the project)")
    return NB201_TABLE


@pytest.fixture
def cifar_npz() -> Path:
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"CIFAR-10 subset not found at {CIFAR_NPZ} (../shared/data beside the project)")
    return CIFAR_NPZ


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "dvolver.db")


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session, with 2 worker CPUs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
