"""Downloading files safely: to a temporary name, checksum verified, then renamed atomically.

Used for the benchmark annotations (``data/download_annotations.py``) and for model weights. A
file is never left half-written or unverified at its destination: a failed download or a bad
checksum deletes the temporary file and raises, so nothing is cached.
"""
from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from .fileio import write_text_atomic

RANDOM_WEIGHTS = (None, "", "none", "random")  # a `pretrained` value that means no weights to load

CHUNK = 1 << 20
TIMEOUT_S = 60


CACHE_ENV = "AVLEGRAD_CACHE"


def cache_root() -> Path:
    """The project's cache: ``$AVLEGRAD_CACHE``, else ``~/.cache/avlegrad`` (annotations/,
    targets/ of training runs, weights/)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "avlegrad"


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status) or its checksum did not match."""


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest, sha256: str | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` and return ``dest``.

    ``sha256``: the expected hex digest; a mismatch raises :class:`DownloadError` and leaves
    nothing at ``dest``. When ``dest`` already exists and matches (or no checksum is given) it is
    kept and nothing is fetched. ``progress`` shows a tqdm bar.
    """
    dest = Path(dest).expanduser()
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or sha256_file(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        actual = _fetch(url, tmp, progress, desc=dest.name)
        if expected is not None and actual != expected:
            raise DownloadError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; "
                                f"the file was not saved to {dest}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _fetch(url: str, tmp: Path, progress: bool, desc: str) -> str:
    """Stream ``url`` into ``tmp``; returns the sha256 of what was written."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "avlegrad"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: download failed ({reason}); is the machine offline?") from None
    return digest.hexdigest()


def weights_dir() -> Path:
    """Where pretrained weight files are cached: ``cache_root()/"weights"``."""
    return cache_root() / "weights"


def pretrained_weights_file(what: str, url: str, filename: str, sha256: str | None = None,
                            progress: bool = True) -> Path:
    """The cached weight file ``weights_dir()/filename``, downloading it from ``url`` if absent.

    The download goes through :func:`avlegrad.download.download_file` (temporary file, checksum
    checked when ``sha256`` is given, atomic rename: nothing is cached on failure). After a
    download, the file's sha256 is written next to it as ``filename.sha256`` (``sha256sum``
    format). Offline (or any download failure) raises :class:`DownloadError` saying which file
    to fetch from where and where to put it.
    """
    dest = weights_dir() / filename
    if dest.is_file() and sha256 is None:
        return dest
    existed = dest.is_file()
    try:
        download_file(url, dest, sha256=sha256, progress=progress)
    except DownloadError as e:
        raise DownloadError(
            f"could not fetch the {what} weights: {e}\n"
            f"Download {url} yourself and put it at {dest} (the cache is $AVLEGRAD_CACHE/weights, default "
            f"~/.cache/avlegrad/weights), or pass checkpoint=PATH to create_audio_encoder.") from None
    sidecar = dest.with_name(dest.name + ".sha256")
    if not existed or not sidecar.is_file():
        digest = sha256 or sha256_file(dest)
        write_text_atomic(sidecar, f"{digest}  {dest.name}\n")
    return dest


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers (always assumed behind a proxy). Where it does not, look
    in the local cache only: otherwise huggingface_hub retries for most of a minute before failing."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True
