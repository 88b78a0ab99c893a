"""Built-in datasets as in-memory tensors: scikit-learn digits, the IDX MNIST family and MNIST-1D.

Images are float32 in [0, 1] with shape (N, 1, H, W); MNIST-1D signals are float32, standardised
(mean 0, std 1 over the whole dataset), with shape (N, 1, 40). Labels are int64. The test split is
fixed (it never depends on the training seed), so every run of a benchmark sees the same one.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from distill.data.idx import read_idx
from distill.names import unknown_name_message

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass
class DataSplits:
    """Train / optional validation / test tensors of one dataset."""

    name: str
    train: TensorDataset
    test: TensorDataset
    val: TensorDataset | None
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def train_labels(self) -> torch.Tensor:
        """The int64 labels of the training split, in dataset order (index i is example i)."""
        return self.train.tensors[1]

    @property
    def num_train(self) -> int:
        """How many training examples there are (after ``val_size`` and ``train_subset``)."""
        return len(self.train)

    @property
    def eval_split(self) -> tuple[str, TensorDataset]:
        """The split evaluated every epoch: validation when there is one, else test (logged, never selected on)."""
        return ("val", self.val) if self.val is not None else ("test", self.test)


def _as_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        torch.from_numpy(labels.astype(np.int64)),
    )


def load_mnist_arrays(data_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four MNIST-format IDX .gz files of ``data_dir`` as arrays (images scaled to [0, 1])."""
    folder = Path(data_dir)
    missing = [name for name in MNIST_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"data folder {str(folder)!r} (resolved from {os.getcwd()!r}) lacks {', '.join(missing)}; "
            "point data.data_dir (or --data-dir) at a folder holding the four MNIST IDX .gz files, "
            "e.g. ../shared/data/mnist from the project root"
        )
    arrays = {key: read_idx(folder / name) for key, name in MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not pair up")
        arrays[f"{split}_images"] = images[:, None, :, :].astype(np.float32) / 255.0
    return arrays


def _mnist_like(data_dir: str | None, name: str) -> tuple[TensorDataset, TensorDataset, int]:
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data.data_dir (or --data-dir): a folder with the four IDX .gz files")
    arrays = load_mnist_arrays(data_dir)
    train = _as_dataset(arrays["train_images"], arrays["train_labels"])
    test = _as_dataset(arrays["test_images"], arrays["test_labels"])
    return train, test, 10


def _digits(data_dir: str | None, name: str) -> tuple[TensorDataset, TensorDataset, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images[:, None, :, :].astype(np.float32) / 16.0
    # A fixed, stratified 70/30 split: the test set is the same for every seed and run.
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.3, stratify=digits.target, random_state=0
    )
    return _as_dataset(train_x, train_y), _as_dataset(test_x, test_y), 10


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D generated with the package's default arguments: 4000 train / 1000 test signals of length 40.

    ``make_dataset`` seeds the global ``random`` and ``np.random`` generators with ``args.seed`` (42)
    itself, so the data is the same on every call; those generators are restored afterwards so that
    generating the data never changes the draws of a seeded run. Generation takes a few seconds, hence
    the per-process cache; the arrays are read-only and copied into each dataset.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    arrays = (
        data["x"][:, None, :].astype(np.float32),
        data["y"].astype(np.int64),
        data["x_test"][:, None, :].astype(np.float32),
        data["y_test"].astype(np.int64),
    )
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _mnist1d(data_dir: str | None, name: str) -> tuple[TensorDataset, TensorDataset, int]:
    train_x, train_y, test_x, test_y = _mnist1d_arrays()
    # Copy the signals (the labels' astype copies already): a tensor must not share memory with the cache.
    return _as_dataset(train_x.copy(), train_y), _as_dataset(test_x.copy(), test_y), 10


LOADERS: dict[str, Callable[[str | None, str], tuple[TensorDataset, TensorDataset, int]]] = {
    "digits": _digits,
    "mnist": _mnist_like,
    "fashion-mnist": _mnist_like,
    "mnist1d": _mnist1d,
}


def _take(dataset: TensorDataset, indices: np.ndarray) -> TensorDataset:
    index = torch.from_numpy(np.sort(indices))
    return TensorDataset(*(tensor[index] for tensor in dataset.tensors))


def _stratified_split(labels: np.ndarray, first_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    first, rest = train_test_split(indices, train_size=first_size, stratify=labels, random_state=seed)
    return first, rest


def load_dataset(
    name: str,
    data_dir: str | None = None,
    val_size: int = 0,
    train_subset: int | None = None,
    split_seed: int = 0,
) -> DataSplits:
    """Load a built-in dataset; ``val_size`` examples are held out of train, then ``train_subset`` kept.

    Both draws are stratified and use ``split_seed`` (not the training seed), so every student
    of a comparison sees the same examples.
    """
    if name not in LOADERS:
        raise ValueError(unknown_name_message("dataset", name, sorted(LOADERS)))
    train, test, num_classes = LOADERS[name](data_dir, name)
    val = None
    if val_size >= len(train):
        raise ValueError(
            f"data.val_size is {val_size} but dataset {name!r} has {len(train)} training examples, so none would be "
            f"left to train on; hold out fewer (e.g. data.val_size={len(train) // 5})"
        )
    if val_size:
        labels = train.tensors[1].numpy()
        val_idx, train_idx = _stratified_split(labels, val_size, split_seed)
        train, val = _take(train, train_idx), _take(train, val_idx)
    if train_subset is not None and train_subset < len(train):
        subset_idx, _ = _stratified_split(train.tensors[1].numpy(), train_subset, split_seed)
        train = _take(train, subset_idx)
    where = f"dataset {name!r}" + (f" (data.data_dir {data_dir})" if data_dir else "")
    if len(train) == 0:
        raise ValueError(
            f"{where}: the training split is empty after holding out data.val_size={val_size} examples"
            + (f" and keeping data.train_subset={train_subset}" if train_subset is not None else "")
            + "; lower val_size or point data_dir at files with training examples"
        )
    for split, dataset in (("train", train), ("validation", val), ("test", test)):
        if dataset is not None:
            check_tensor_split(dataset, num_classes, f"{where}, {split} split")
    input_shape = tuple(train.tensors[0].shape[1:])
    return DataSplits(name, train, test, val, num_classes, input_shape)


def check_tensor_split(dataset: TensorDataset, num_classes: int, where: str) -> None:
    """Refuse, before any training, labels outside 0..num_classes-1 and non-finite inputs (NaN or inf would
    train to a NaN loss, or evaluate to NaN every epoch)."""
    inputs, labels = dataset.tensors[0], dataset.tensors[1]
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        index = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"{where}: example {index} has label {int(labels[index])}, outside the {num_classes} classes "
            f"0..{num_classes - 1} ({int(outside.sum())} such examples); fix the labels file"
        )
    if inputs.is_floating_point():
        bad = ~torch.isfinite(inputs.flatten(1)).all(dim=1)
        if bad.any():
            index = int(bad.nonzero()[0, 0])
            value = inputs[index][~torch.isfinite(inputs[index])][0].item()
            raise ValueError(
                f"{where}: example {index} has a non-finite input value ({value}) ({int(bad.sum())} such examples); "
                "clean the data (replace or drop those examples) before training"
            )
