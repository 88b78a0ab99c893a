"""Datasets, the IDX reader and batch transforms."""

from distill.data.datasets import DataSplits, load_dataset, load_mnist_arrays
from distill.data.idx import IDXFormatError, read_idx, write_idx
from distill.data.transforms import random_shift

__all__ = [
    "DataSplits",
    "IDXFormatError",
    "load_dataset",
    "load_mnist_arrays",
    "random_shift",
    "read_idx",
    "write_idx",
]
