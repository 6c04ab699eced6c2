#!/usr/bin/env python
"""Download DenseAV's ADE20K Sound-Prompted / Speech-Prompted benchmarks and unpack them.

    python data/download_denseav.py                     # both archives into ./datasets (or $AVLEGRAD_DATA)
    python data/download_denseav.py --sound --out /data # only ADE20KSoundPrompted.zip
    python data/download_denseav.py --sha256 sound=<hex> --sha256 speech=<hex>   # verify known digests
    python data/download_denseav.py --base-url http://mirror/path                 # <base-url>/<zip name>

The archives are the ones DenseAV's README (github.com/mhamilton723/DenseAV, "Speech and Sound
Prompted ADE20K") points to on its public blob store. A download is resumable: the bytes go to
``<out>/<name>.zip.part`` and an interrupted run continues from there (HTTP Range), then the
archive's sha256 is printed (no digest is published; pass ``--sha256`` to verify one you trust,
a mismatch keeps nothing) and the zip is unpacked into ``<out>/ADE20KSoundPrompted/`` (the folder
holding ``prompted_segmentation.csv``, ``frames/``, ``annotations/``, ``audio/``), which is the
``--root`` of ``eval.py --dataset ade20k-sound`` (the default root when ``<out>`` is the default).
Unpacking goes to a staging folder first and is renamed when complete, so a half-unpacked folder
is never taken for the dataset.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

if __package__ in (None, ""):  # run as a script from a checkout: make `avlegrad` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad.cli import run_command  # noqa: E402
from avlegrad.download import CHUNK, TIMEOUT_S, DownloadError, sha256_file  # noqa: E402

DENSEAV_DATASETS = "https://marhamilresearch4.blob.core.windows.net/denseav-public/datasets"
DONE_MARKER = ".avlegrad-extracted"  # written into an unpacked folder once it is complete


@dataclass(frozen=True)
class Archive:
    key: str  # "sound" | "speech"
    name: str  # the zip's file name
    folder: str  # the dataset folder it unpacks to
    sha256: str | None  # None: not published; the computed digest is printed instead


ARCHIVES = {
    "sound": Archive("sound", "ADE20KSoundPrompted.zip", "ADE20KSoundPrompted", None),
    "speech": Archive("speech", "ADE20KSpeechPrompted.zip", "ADE20KSpeechPrompted", None),
}


def default_out() -> Path:
    """``$AVLEGRAD_DATA``, else ``./datasets``: where ``eval.py`` looks when ``--root`` is not given."""
    return Path(os.environ.get("AVLEGRAD_DATA", "datasets"))


def download_resumable(url: str, dest, sha256: str | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest``, continuing a previous partial download (``dest.part``).

    A server that ignores the Range request gets the file again from the start. The complete
    file is checked against ``sha256`` (when given) before it is renamed to ``dest``; a mismatch
    deletes it and raises :class:`DownloadError`. An existing ``dest`` that matches (or any, when
    no digest is given) is kept and nothing is fetched.
    """
    from tqdm import tqdm

    dest = Path(dest).expanduser()
    expected = sha256.lower() if sha256 else None
    if dest.is_file() and (expected is None or sha256_file(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "avlegrad"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the partial file is already whole
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        resume = f"; rerun to resume from {part}" if offset else ""
        raise DownloadError(f"{url}: download failed ({getattr(e, 'reason', e)}); is the machine offline?"
                            f"{resume}") from None
    if response is not None:
        with response:
            status = response.status
            if offset and status == 206:
                match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != offset:
                    raise DownloadError(f"{url}: the server resumed at the wrong place "
                                        f"({response.headers.get('Content-Range')!r}, wanted byte {offset}); "
                                        f"delete {part} and rerun")
                mode = "ab"
            else:  # 200: the whole file (a fresh download, or a server that ignores Range)
                offset, mode = 0, "wb"
            length = int(response.headers.get("Content-Length") or 0) or None
            total = offset + length if length else None
            try:
                with open(part, mode) as sink, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                    desc=dest.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        sink.write(chunk)
                        bar.update(len(chunk))
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                raise DownloadError(f"{url}: download interrupted ({getattr(e, 'reason', e)}); rerun to "
                                    f"resume from {part} ({part.stat().st_size} bytes kept)") from None
            if total is not None and part.stat().st_size != total:
                raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; rerun to resume")
    actual = sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink()
        raise DownloadError(f"{url}: sha256 mismatch: expected {expected}, got {actual}; "
                            f"the file was not saved to {dest}")
    os.replace(part, dest)
    return dest


def _member_path(name: str, folder: str) -> PurePosixPath | None:
    """Where a zip member goes inside the dataset folder; None for what is skipped."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    if path.is_absolute() or ".." in parts or re.match(r"^[A-Za-z]:", parts[0]):
        raise ValueError(f"unsafe path in the archive: {name!r}")
    if parts[0] == folder:  # the archive holds the dataset folder itself
        parts = parts[1:]
    return PurePosixPath(*parts) if parts else None


def extract_dataset(archive: Path, out: Path, folder: str, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``out/folder`` (staged, then renamed); returns the folder."""
    from tqdm import tqdm

    target = out / folder
    if (target / DONE_MARKER).is_file():
        return target
    staging = out / f".{folder}.unpacking"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with zipfile.ZipFile(archive) as z:
        members = [(info, _member_path(info.filename, folder)) for info in z.infolist() if not info.is_dir()]
        members = [(info, rel) for info, rel in members if rel is not None]
        with tqdm(total=sum(i.file_size for i, _ in members), unit="B", unit_scale=True,
                  desc=f"unpack {archive.name}", disable=not progress) as bar:
            for info, rel in members:
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dest, "wb") as sink:
                    shutil.copyfileobj(src, sink, CHUNK)
                bar.update(info.file_size)
    if not (staging / "prompted_segmentation.csv").is_file():
        found = sorted(p.name for p in staging.iterdir())[:10]
        shutil.rmtree(staging)
        raise ValueError(f"{archive}: no prompted_segmentation.csv at the top of the dataset folder "
                         f"(found {found}); is this DenseAV's {folder} archive?")
    (staging / DONE_MARKER).write_text(f"{archive.name} sha256 {sha256_file(archive)}\n")
    if target.exists():  # an earlier, incomplete copy
        shutil.rmtree(target)
    staging.rename(target)
    return target


def download_denseav(keys=("sound", "speech"), out=None, *, base_url: str | None = None,
                     sha256: dict | None = None, extract: bool = True, remove_zip: bool = False,
                     progress: bool = True) -> dict[str, Path]:
    """Fetch (and unpack) the archives ``keys``; returns key -> dataset folder (or zip)."""
    out = Path(out).expanduser() if out else default_out()
    sha256 = sha256 or {}
    paths = {}
    for key in keys:
        archive = ARCHIVES[key]
        url = f"{base_url.rstrip('/')}/{archive.name}" if base_url else f"{DENSEAV_DATASETS}/{archive.name}"
        target = out / archive.folder
        if extract and (target / DONE_MARKER).is_file():
            print(f"{archive.folder}: already unpacked in {target}")
            paths[key] = target
            continue
        expected = sha256.get(key) or archive.sha256
        zip_path = download_resumable(url, out / archive.name, sha256=expected, progress=progress)
        digest = sha256_file(zip_path)
        print(f"{archive.name}: sha256 {digest}" + (" (verified)" if expected else " (no published checksum)"))
        if not extract:
            paths[key] = zip_path
            continue
        paths[key] = extract_dataset(zip_path, out, archive.folder, progress=progress)
        if remove_zip:
            zip_path.unlink()
        print(f"{archive.folder}: {paths[key]}")
    return paths


def _parse_sha(values) -> dict:
    out = {}
    for value in values or ():
        key, _, digest = value.partition("=")
        if key not in ARCHIVES or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise argparse.ArgumentTypeError(f"--sha256 wants sound=<64 hex> or speech=<64 hex>, got {value!r}")
        out[key] = digest.lower()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sound", action="store_true", help="ADE20KSoundPrompted.zip")
    parser.add_argument("--speech", action="store_true", help="ADE20KSpeechPrompted.zip")
    parser.add_argument("--out", type=Path, default=None, help=f"destination (default {default_out()})")
    parser.add_argument("--base-url", default=None, help="fetch <base-url>/<zip name> instead")
    parser.add_argument("--sha256", action="append", metavar="KEY=HEX", help="expected digest of an archive")
    parser.add_argument("--no-extract", action="store_true", help="only download the zip files")
    parser.add_argument("--remove-zip", action="store_true", help="delete each zip once unpacked")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    keys = [k for k in ("sound", "speech") if getattr(args, k)] or ["sound", "speech"]
    try:
        digests = _parse_sha(args.sha256)
        download_denseav(keys, args.out, base_url=args.base_url, sha256=digests, extract=not args.no_extract,
                         remove_zip=args.remove_zip, progress=not args.quiet)
    except (DownloadError, ValueError, argparse.ArgumentTypeError, zipfile.BadZipFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, name="download_denseav.py", interrupted="interrupted; rerun to finish"))
