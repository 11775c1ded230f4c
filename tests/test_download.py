"""download_mnist against a local HTTP server on 127.0.0.1: never the internet."""
import collections
import functools
import hashlib
import http.server
import socket
import threading

import pytest
import torch

from avae.data import download, download_mnist, load
from avae.errors import AvaeError


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Keep the real mirrors and any proxy out of reach, whatever a test forgets to pass."""
    monkeypatch.setattr(download, "MIRRORS", (closed_port_url(),))
    monkeypatch.delenv("AVAE_MNIST_URL", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def mirror(tmp_path, write_fake_mnist):
    """Serve small fake MNIST .gz files; yields (base URL, {file: SHA-256}, Counter of GET paths)."""
    served = tmp_path / "served"
    sums = write_fake_mnist(served)
    requests = collections.Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests[self.path.lstrip("/")] += 1
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", sums, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_verifies_and_places_files(tmp_path, mirror):
    url, sums, requests = mirror
    cache = tmp_path / "cache"
    assert download_mnist(cache, base_urls=[url], checksums=sums, progress=True) == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)
    for name in sums:
        assert (cache / name).read_bytes() == (tmp_path / "served" / name).read_bytes()
    assert sum(requests.values()) == 4


def test_second_call_does_not_download_again(tmp_path, mirror):
    url, sums, requests = mirror
    download_mnist(tmp_path / "cache", base_urls=[url], checksums=sums, progress=False)
    download_mnist(tmp_path / "cache", base_urls=[url], checksums=sums, progress=False)
    assert sum(requests.values()) == 4


def test_damaged_cached_file_is_fetched_again(tmp_path, mirror):
    url, sums, requests = mirror
    cache = tmp_path / "cache"
    download_mnist(cache, base_urls=[url], checksums=sums, progress=False)
    name = "t10k-labels-idx1-ubyte.gz"
    (cache / name).write_bytes(b"damaged")
    download_mnist(cache, base_urls=[url], checksums=sums, progress=False)
    assert requests[name] == 2 and sum(requests.values()) == 5
    assert (cache / name).read_bytes() == (tmp_path / "served" / name).read_bytes()


def test_wrong_checksum_raises_and_leaves_nothing(tmp_path, mirror):
    url, sums, _ = mirror
    cache = tmp_path / "cache"
    actual = sums["train-images-idx3-ubyte.gz"]
    wrong = {"train-images-idx3-ubyte.gz": "0" * 64}
    with pytest.raises(AvaeError) as err:
        download_mnist(cache, base_urls=[url], checksums=wrong, progress=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "0" * 64 in message and actual in message
    assert list(cache.iterdir()) == []


def test_falls_back_to_the_next_mirror(tmp_path, mirror):
    url, sums, requests = mirror
    cache = tmp_path / "cache"
    download_mnist(cache, base_urls=[closed_port_url(), url + "missing/", url], checksums=sums, progress=False)
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)
    assert requests["missing/t10k-images-idx3-ubyte.gz"] == 1  # the 404 mirror was tried first


def test_all_mirrors_down(tmp_path):
    dead = [closed_port_url(), closed_port_url()]
    cache = tmp_path / "cache"
    with pytest.raises(AvaeError, match="could not download train-images-idx3-ubyte.gz from any mirror") as err:
        download_mnist(cache, base_urls=dead, progress=False)
    assert all(url in str(err.value) for url in dead)
    assert list(cache.iterdir()) == []


def test_shipped_digests_match_the_real_test_files(mnist_test_dir, tmp_path):
    test_files = {name: digest for name, digest in download.SHA256.items() if name.startswith("t10k")}
    for name, digest in test_files.items():
        assert hashlib.sha256((mnist_test_dir / name).read_bytes()).hexdigest() == digest
        (tmp_path / name).symlink_to(mnist_test_dir / name)
    # verified in place, so nothing is fetched (the only mirror is a closed port)
    download_mnist(tmp_path, checksums=test_files, progress=False)


def test_load_mnist_full_through_env_mirror(tmp_path, mirror, monkeypatch):
    url, sums, requests = mirror
    monkeypatch.setenv("AVAE_MNIST_URL", f"{closed_port_url()},{url}")
    monkeypatch.setattr(download, "SHA256", sums)
    test = load("mnist-full", "test", cache_dir=tmp_path / "cache", progress=False)
    assert test.images.shape == (20, 1, 40, 40) and test.name == "mnist-full"
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(sums)
    train = load("mnist-full", "train", cache_dir=tmp_path / "cache", progress=False)
    assert torch.bincount(train.labels).tolist() == [5] * 10
    assert sum(requests.values()) == 4
