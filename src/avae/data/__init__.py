"""Datasets for avae: MNIST and user files as (N, C, H, W) float32 images in [0, 1], plus
seeded perturbations that also return the pose applied to each image.

>>> train = load("mnist-embedded", split="train")          # 4,500 digits, padded to 40x40
>>> test = load("mnist", split="test", data_dir="../shared/data/mnist")
>>> x, truth = rotated(test, degrees=120, seed=0)

Named datasets are listed in :data:`DATASETS`; any other name is a path to an IDX folder, a
.npy/.npz array or a folder of PNG images. Errors a user can fix raise
:class:`avae.errors.AvaeError`.
"""
from avae.data.color import COLOR_NAMES, ColorMNIST, color_mnist, recolor
from avae.data.download import download_mnist
from avae.data.idx import read_idx, write_idx
from avae.data.perturb import ASYMMETRIC_DIGITS, Perturbation, random_affine, rotated
from avae.data.sources import (DATASETS, MNIST_TEST_SD3, Dataset, borrow_test_writers, embedded_rows, load,
                               reproduction_splits, require_training_files)

__all__ = [
    "ASYMMETRIC_DIGITS",
    "COLOR_NAMES",
    "ColorMNIST",
    "DATASETS",
    "MNIST_TEST_SD3",
    "Dataset",
    "Perturbation",
    "borrow_test_writers",
    "color_mnist",
    "recolor",
    "download_mnist",
    "embedded_rows",
    "load",
    "random_affine",
    "read_idx",
    "reproduction_splits",
    "require_training_files",
    "rotated",
    "write_idx",
]
