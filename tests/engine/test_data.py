import pickle

import numpy as np
import pytest
import torch

from dvolver import data
from dvolver.errors import DatasetError
from dvolver.training import crop_flip


def test_digits_split_is_fixed_disjoint_and_stratified():
    d = data.load("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 1797
    assert len(d.x_test) == pytest.approx(1797 * 0.2, abs=10)
    assert len(d.x_val) == pytest.approx(1797 * 0.2, abs=10)
    flat = lambda x: {tuple(row) for row in x.reshape(len(x), -1).numpy().round(4)}  # noqa: E731
    assert not flat(d.x_val) & flat(d.x_test)
    assert set(d.y_test.tolist()) == set(range(10))
    data.load.cache_clear()
    again = data.load("digits")
    assert again.fingerprint == d.fingerprint and torch.equal(again.y_val, d.y_val)


def test_npz_images_become_nchw_with_a_validation_split(cifar_npz):
    d = data.load(str(cifar_npz))
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (9000, 1000, 2000)
    assert abs(float(d.x_train.mean())) < 1e-3  # normalised with train statistics


def test_npz_without_the_expected_arrays_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 8, 8)), labels=np.zeros(2))
    with pytest.raises(DatasetError, match="lacks the array\\(s\\) x_train, y_train, x_test, y_test"):
        data.check_source(str(path))


def test_missing_dataset_path_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        data.check_source(str(tmp_path / "nope.npz"))


def test_cifar10_python_folder(tmp_path, cifar_npz):
    """Writes the real CIFAR-10 python format (pickled batches) from the shared subset and reads it back."""
    with np.load(cifar_npz) as npz:
        x, y, xt, yt = npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]
    for i, chunk in enumerate(np.array_split(np.arange(1000), 5), start=1):
        batch = {b"data": x[chunk].transpose(0, 3, 1, 2).reshape(len(chunk), -1), b"labels": y[chunk].tolist()}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {b"data": xt[:200].transpose(0, 3, 1, 2).reshape(200, -1), b"labels": yt[:200].tolist()}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(test))
    d = data.load(str(tmp_path))
    assert d.input_shape == (3, 32, 32)
    assert len(d.x_train) + len(d.x_val) == 1000 and len(d.x_test) == 200


def test_cifar_folder_missing_batches_is_refused(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(DatasetError, match="missing data_batch_2"):
        data.check_source(str(tmp_path))


def test_crop_flip_is_seeded_and_keeps_shape():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    a = crop_flip(x, torch.Generator().manual_seed(0))
    b = crop_flip(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)


def test_labels_must_be_class_numbers(tmp_path):
    path = tmp_path / "neg.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8)), y_train=np.array([0, 1, -1, 2]), x_test=np.zeros((2, 8, 8)),
             y_test=np.array([0, 1]))
    with pytest.raises(DatasetError, match="y_train must hold class numbers 0, 1, 2"):
        data.check_source(str(path))


def test_train_limit_takes_every_class_even_from_a_sorted_file(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.argsort(digits.target, kind="stable")
    path = tmp_path / "sorted.npz"
    np.savez(path, x_train=digits.images[order], y_train=digits.target[order], x_test=digits.images[:50],
             y_test=digits.target[:50])
    d = data.load(str(path))
    assert set(d.y_train[:100].tolist()) == set(range(10))
