"""Datasets: the bundled digits, `.npz` files and CIFAR-10 python-format folders.

Every dataset has a train, a validation and a test split. Search selects on validation accuracy
only; test accuracy is reported beside it and never optimised. Splits are fixed by a seed that is
part of the dataset, not of the search, so every search on a dataset sees the same split.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import DatasetError

SPLIT_SEED = 0
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # float32, N x C x H x W, normalised with train statistics
    y_train: torch.Tensor  # int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def check_source(source: str) -> None:
    """Cheap validation at the edge: the dataset exists and has the expected parts."""
    if source == "digits":
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {source!r} does not exist: give 'digits', an .npz file or a CIFAR-10 folder")
    if path.is_dir():
        missing = [f for f in CIFAR_FILES if not (path / f).is_file()]
        if missing:
            raise DatasetError(
                f"dataset folder {source!r} is not CIFAR-10 python format: missing {', '.join(missing)}"
            )
        return
    if path.suffix != ".npz":
        raise DatasetError(f"dataset {source!r} is neither 'digits', an .npz file nor a folder")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(f"dataset {source!r} lacks the array(s) {', '.join(missing)}; "
                                   f"an .npz needs {', '.join(NPZ_KEYS)}")
            for split in ("train", "test"):
                _check_arrays(source, split, npz[f"x_{split}"], npz[f"y_{split}"])
    except DatasetError:
        raise
    except Exception as exc:  # numpy raises several types for a corrupt archive
        raise DatasetError(f"dataset {source!r} cannot be read as .npz: {exc}") from exc


def _check_arrays(source: str, split: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim not in (3, 4) or len(x) != len(y) or len(x) == 0:
        raise DatasetError(f"dataset {source!r}: x_{split} must be N x H x W (x C) images with one label each in "
                           f"y_{split}; got shapes {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DatasetError(f"dataset {source!r}: y_{split} must hold class numbers 0, 1, 2, ...; "
                           f"got {y.dtype} from {y.min()} to {y.max()}")


@lru_cache(maxsize=4)
def load(source: str, val_fraction: float = 0.1) -> Dataset:
    """Loads once per process: Ray workers evaluate many candidates on the same data."""
    check_source(source)
    if source == "digits":
        x, y = _digits()
        x_rest, y_rest, x_test, y_test = _stratified_split(x, y, 0.2)
        x_train, y_train, x_val, y_val = _stratified_split(x_rest, y_rest, 0.25)
    else:
        path = Path(source).expanduser()
        x_train, y_train, x_test, y_test = _cifar_folder(path) if path.is_dir() else _npz(path)
        x_train, y_train, x_val, y_val = _stratified_split(x_train, y_train, val_fraction)
    return _finish(source, x_train, y_train, x_val, y_val, x_test, y_test)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images[:, None, :, :] / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _npz(path: Path) -> tuple[np.ndarray, ...]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = [npz[k] for k in NPZ_KEYS]
    x_train, y_train, x_test, y_test = arrays
    return _to_nchw(x_train), y_train.astype(np.int64).ravel(), _to_nchw(x_test), y_test.astype(np.int64).ravel()


def _to_nchw(x: np.ndarray) -> np.ndarray:
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    if x.ndim == 3:
        return x[:, None]
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _cifar_folder(path: Path) -> tuple[np.ndarray, ...]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        with (path / name).open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(batch[b"labels"], dtype=np.int64)

    parts = [read(f) for f in CIFAR_FILES[:-1]]
    x_test, y_test = read(CIFAR_FILES[-1])
    x_train = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test.astype(np.float32) / 255.0, y_test


def _stratified_split(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(SPLIT_SEED)
    held = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        held[rng.choice(idx, size=max(1, round(len(idx) * fraction)), replace=False)] = True
    return x[~held], y[~held], x[held], y[held]


def _finish(name: str, *arrays: np.ndarray) -> Dataset:
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    # Shuffled once, with the split's seed, so that `train_limit` takes a random subset even of a
    # file sorted by class.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y_train))
    x_train, y_train = x_train[order], y_train[order]
    arrays = (x_train, y_train, x_val, y_val, x_test, y_test)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())

    def norm(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) / std).astype(np.float32))

    num_classes = int(max(y_train.max(), y_val.max(), y_test.max())) + 1
    return Dataset(
        name, norm(x_train), torch.from_numpy(y_train), norm(x_val), torch.from_numpy(y_val),
        norm(x_test), torch.from_numpy(y_test), num_classes, digest.hexdigest()[:16],
    )
