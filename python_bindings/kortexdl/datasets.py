"""Readers for the data formats the examples use, returning numpy arrays.

Every reader checks sizes before allocating and reports malformed input with
kortexdl.FormatError (kortexdl.IoError when a file cannot be opened); the
reading runs with the GIL released.
"""

import os
from typing import Tuple, Union

import numpy as np
import numpy.typing as npt

from ._core import datasets as _impl

PathLike = Union[str, bytes, "os.PathLike[str]"]
Arrays = Tuple[npt.NDArray[np.float32], npt.NDArray[Union[np.int32, np.float32]]]

__all__ = ["fashion_mnist", "read_idx", "read_csv"]


def fashion_mnist(directory: PathLike = "/usr/share/datasets/fashion-mnist") -> Tuple[Arrays, Arrays]:
    """Fashion-MNIST from Debian's dataset-fashion-mnist package (or `directory`):
    ((x_train, y_train), (x_test, y_test)); x is float32 (rows, 784) in [0, 1],
    y int32 class labels."""
    return _impl.fashion_mnist(directory)


def read_idx(images_path: PathLike, labels_path: PathLike, scale: float = 1.0 / 255.0) -> Arrays:
    """An IDX images file (gzip or plain) and its labels file: (x float32
    (rows, features) scaled by `scale`, y int32)."""
    return _impl.read_idx(images_path, labels_path, scale)


def read_csv(path: PathLike, label_column: int = -1, regression: bool = False) -> Arrays:
    """A CSV of numbers with an optional header line: (x float32 (rows,
    features), y). y holds the int32 class labels of `label_column` (negative
    counts from the end), or with regression=True float32 targets (rows, 1)."""
    return _impl.read_csv(path, label_column, regression)
