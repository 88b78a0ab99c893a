"""The IDX reader on files the test writes, the dataset loaders, and the jitter transform."""

from __future__ import annotations

import gzip
import random
import struct

import numpy as np
import pytest
import torch

from distill.data import IDXFormatError, load_dataset, random_shift, read_idx, write_idx
from tests.conftest import SHARED_DATA


def _write_raw_idx(path, array: np.ndarray, type_code: int) -> None:
    """An IDX file assembled byte by byte, independently of write_idx."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", size) for size in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as stream:
        stream.write(payload)


def test_read_idx_images_and_labels(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], dtype=np.uint8)
    _write_raw_idx(tmp_path / "images.idx3-ubyte.gz", images, 0x08)
    _write_raw_idx(tmp_path / "labels.idx1-ubyte", labels, 0x08)
    assert np.array_equal(read_idx(tmp_path / "images.idx3-ubyte.gz"), images)
    assert np.array_equal(read_idx(tmp_path / "labels.idx1-ubyte"), labels)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([[1, -2, 70000]], dtype=np.int32)
    _write_raw_idx(tmp_path / "values.idx", values, 0x0C)
    assert read_idx(tmp_path / "values.idx").tolist() == [[1, -2, 70000]]


def test_write_then_read_roundtrip(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, size=(5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), array)


def test_bad_magic_and_truncated_files_are_reported(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(IDXFormatError, match=r"bad\.idx"):
        read_idx(tmp_path / "bad.idx")
    _write_raw_idx(tmp_path / "short.idx", np.zeros((4,), dtype=np.uint8), 0x08)
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-2])
    with pytest.raises(IDXFormatError):
        read_idx(tmp_path / "short.idx")


def test_mnist_loader_reads_a_folder_of_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, count in (("train", 30), ("t10k", 10)):
        _write_raw_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, size=(count, 28, 28)).astype(np.uint8),
            0x08,
        )
        _write_raw_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8) % 10, 0x08)
    splits = load_dataset("mnist", str(tmp_path))
    images, labels = splits.train.tensors
    assert images.shape == (30, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert len(splits.test) == 10 and splits.num_classes == 10


def test_missing_mnist_files_name_the_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", str(tmp_path))


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'digits'"):
        load_dataset("digit")


def test_digits_split_is_fixed_and_validation_is_held_out(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.test.tensors[0], again.test.tensors[0])
    with_val = load_dataset("digits", val_size=100, train_subset=500)
    assert len(with_val.val) == 100 and len(with_val.train) == 500
    assert with_val.eval_split[0] == "val" and digits.eval_split[0] == "test"


def test_real_mnist_counts():
    splits = load_dataset("mnist", str(SHARED_DATA / "mnist"))
    assert len(splits.train) == 60_000 and len(splits.test) == 10_000


def test_random_shift_moves_each_image_within_bounds():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    batch = image.repeat(200, 1, 1, 1)
    shifted = random_shift(batch, 2)
    positions = shifted.flatten(1).argmax(dim=1)
    rows, cols = positions // 5, positions % 5
    assert shifted.sum(dim=(1, 2, 3)).eq(1).all()  # the pixel moved, never vanished (|shift| <= 2 from centre)
    assert set(rows.tolist()) == {0, 1, 2, 3, 4} and set(cols.tolist()) == {0, 1, 2, 3, 4}
    assert torch.equal(random_shift(batch, 0), batch)


def test_mnist1d_shapes_classes_and_labels():
    splits = load_dataset("mnist1d")
    images, labels = splits.train.tensors
    assert images.shape == (4000, 1, 40) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert splits.test.tensors[0].shape == (1000, 1, 40) and splits.input_shape == (1, 40)
    assert splits.num_classes == 10 and splits.num_train == 4000
    assert torch.equal(splits.train_labels, labels)


def test_mnist1d_is_the_same_every_call_and_leaves_global_rngs_alone():
    from distill.data.datasets import _mnist1d_arrays

    _mnist1d_arrays.cache_clear()  # generate for real, not from the cache
    random.seed(123)
    np.random.seed(123)
    first = load_dataset("mnist1d")
    assert random.random() == random.Random(123).random()
    assert np.random.rand() == np.random.RandomState(123).rand()
    _mnist1d_arrays.cache_clear()
    second = load_dataset("mnist1d")
    for split in ("train", "test"):
        for a, b in zip(getattr(first, split).tensors, getattr(second, split).tensors, strict=True):
            assert torch.equal(a, b)
    first.train.tensors[0].zero_()  # a caller's in-place edit must not reach the cache
    assert not torch.equal(load_dataset("mnist1d").train.tensors[0], first.train.tensors[0])


def test_mnist1d_validation_split():
    splits = load_dataset("mnist1d", val_size=500, train_subset=1000)
    assert len(splits.val) == 500 and len(splits.train) == 1000 and splits.num_train == 1000
    assert splits.eval_split[0] == "val" and len(splits.test) == 1000
    assert torch.bincount(splits.val.tensors[1], minlength=10).min() >= 45  # stratified
