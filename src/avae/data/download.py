"""Download full MNIST (60,000 training and 10,000 test digits), verified by SHA-256.

Mirrors are tried in order. Set ``AVAE_MNIST_URL`` to one or more base URLs (comma-separated)
to use other mirrors, e.g. a copy on a local server; the files must still match the digests.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from avae.errors import AvaeError

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# SHA-256 of the canonical gzip archives. Test files: ../shared/data/mnist/SHA256SUMS. Training
# files: the same digests appear in torchvision's prototype MNIST dataset (_CHECKSUMS), the
# tensorflow-haskell MNIST fetcher (nix fileInfos) and several other independent loaders, each of
# which also lists the test digests above.
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
TIMEOUT_S = 60
_CHUNK = 1 << 16


def download_mnist(cache_dir, *, base_urls=None, checksums=None, progress: bool = True) -> Path:
    """Make sure ``cache_dir`` holds the four MNIST .gz files with the right checksums.

    A file already there with the right digest is kept. Each download goes to a temporary file
    in ``cache_dir`` and is renamed into place only once its digest matches, so an interrupted
    or corrupted download leaves nothing behind. ``base_urls`` defaults to ``AVAE_MNIST_URL``,
    else :data:`MIRRORS`; ``checksums`` (file name -> SHA-256) to :data:`SHA256`.
    Returns ``cache_dir`` as a Path.
    """
    cache_dir = Path(cache_dir).expanduser()
    base_urls = list(base_urls or _mirrors_from_env() or MIRRORS)
    checksums = SHA256 if checksums is None else checksums
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AvaeError(f"{cache_dir}: cannot create the MNIST cache folder ({err})") from None
    for name, digest in checksums.items():
        target = cache_dir / name
        if target.is_file() and _sha256(target) == digest:
            continue
        _download_verified(name, digest, base_urls, target, progress)
    return cache_dir


def _mirrors_from_env() -> list[str]:
    return [url.strip() for url in os.environ.get("AVAE_MNIST_URL", "").split(",") if url.strip()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_verified(name: str, expected: str, base_urls: list[str], target: Path, progress: bool) -> None:
    failures = []
    for base in base_urls:
        url = base.rstrip("/") + "/" + name
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
        except OSError as err:
            raise AvaeError(f"{target.parent}: cannot write the MNIST cache folder ({err})") from None
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _fetch(url, out, name, progress)
            if actual != expected:
                raise AvaeError(
                    f"{target}: checksum mismatch for {url}: expected SHA-256 {expected}, got {actual}; "
                    f"nothing was saved"
                )
            os.replace(tmp, target)
            return
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            failures.append(f"{url} ({getattr(err, 'reason', err)})")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise AvaeError(
        f"{target}: could not download {name} from any mirror: {'; '.join(failures)}. "
        f"Check the internet connection, set AVAE_MNIST_URL to a mirror, or put the file there yourself"
    )


def _fetch(url: str, out, name: str, progress: bool) -> str:
    """Stream ``url`` into ``out``; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None if progress else True, leave=False) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()
