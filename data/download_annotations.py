#!/usr/bin/env python
"""Download the official benchmark annotations into the cache (or ``--out DIR``).

    python data/download_annotations.py                 # VGG-SS json + id lists, Flickr csv, SSLalignment's
                                                        # IS3 / VPO / AVSBench boxes and the extended sets' pairs
    python data/download_annotations.py --flickr-xml    # also the Flickr-SoundNet XML boxes
    python data/download_annotations.py --out DIR --base-url http://mirror/path

Layout written (what ``avlegrad.data.annotations`` looks for): ``<out>/vggss/vggss.json``,
``<out>/vggss/vggss_{test,heard_test,unheard_test}.csv``, ``<out>/flickr/flickr_test.csv``,
``<out>/flickr/Annotations/<id>.xml``, ``<out>/sslalignment/{synthetic3240_bbox,vpo_ss_bbox,vpo_ms_bbox}.json``,
``<out>/sslalignment/{s4,ms3}_box.json``, ``<out>/sslalignment/{vggss,flickr}_test_plus_silent.csv``. The default ``<out>`` is ``~/.cache/avlegrad/annotations``
(``$AVLEGRAD_CACHE`` overrides it). Every file is checked against its sha256 before it is
cached; ``--base-url`` replaces every source URL's directory (``<base-url>/<file name>``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `avlegrad` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad.cli import run_command  # noqa: E402
from avlegrad.data.annotations import cache_dir  # noqa: E402
from avlegrad.download import download_file, sha256_file  # noqa: E402

EZVSL_METADATA = "https://raw.githubusercontent.com/stoneMo/EZ-VSL/main/metadata"
SSLALIGNMENT_METADATA = "https://raw.githubusercontent.com/kaistmm/SSLalignment/e7ae3c5518e5a4d911c49e034d906612cf922aff/metadata"
# The Flickr-SoundNet annotated set (5k image-sound pairs, one XML per id with the boxes of 3
# annotators), as the LVS README points to it: Senocak et al.'s Google Drive file
# (github.com/ardasnck/learning_to_localize_sound_source). Drive serves large files only with
# `confirm=t`; the archive's format and checksum could not be checked from here (no network).
FLICKR_XML_URL = ("https://drive.usercontent.google.com/download?"
                  "id=1P93CTiQV71YLZCmBbZA0FvdwFxreydLt&export=download&confirm=t")
FLICKR_XML_ARCHIVE = "flickr_soundnet_annotated.zip"  # its name under --base-url


@dataclass(frozen=True)
class AnnotationFile:
    dataset: str  # the sub-directory of <out>: "vggss" or "flickr"
    name: str
    url: str
    sha256: str | None  # None: not known; the computed hash is printed instead


# Checksums are those of the published copies in ../shared/data (the files EZ-VSL publishes).
FILES = (
    AnnotationFile("vggss", "vggss.json", f"{EZVSL_METADATA}/vggss.json",
                   "ae300b4a259267e6fe839970d495862edd70bfe3da63d925bcdb34054ed3b15e"),
    AnnotationFile("vggss", "vggss_test.csv", f"{EZVSL_METADATA}/vggss_test.csv",
                   "971081929d45caf21a148a6ca968822d96e8316331d0cc0bafb1783acb4d2c35"),
    AnnotationFile("vggss", "vggss_heard_test.csv", f"{EZVSL_METADATA}/vggss_heard_test.csv",
                   "70a01c6828e7b84531823616ebb2e32e75bbaf5e44c715fa366b61111ab33c4e"),
    AnnotationFile("vggss", "vggss_unheard_test.csv", f"{EZVSL_METADATA}/vggss_unheard_test.csv",
                   "11883813db359df63e1a28f69bb53e1ceef7f5b8d68e0149de5792540acb9e17"),
    AnnotationFile("flickr", "flickr_test.csv", f"{EZVSL_METADATA}/flickr_test.csv",
                   "faf5465bdb991cfb7506ccadef64dfea9e9bceb47e895d0e4dbdc2a0ca622871"),
    # the sound-following benchmarks (avlegrad.data.sslalignment): SSLalignment's metadata, commit
    # e7ae3c5; checksums of the copies in ../shared/data/sslalignment
    *(AnnotationFile("sslalignment", name, f"{SSLALIGNMENT_METADATA}/{name}", digest) for name, digest in (
        ("synthetic3240_bbox.json", "fb0314fcc42e8bfdcfb24115e4cbbbbdfa2e0a53d59ca424c5308c0147ecde34"),
        ("vpo_ss_bbox.json", "bb6e957d0da2034669e3a54ef91124a09c9b89034ddfa47a56de9d023d09c734"),
        ("vpo_ms_bbox.json", "7974e4c491b7216f3a0c0a3b773f58b33eada5b8c5b64b46a0e607ceeef3608d"),
        ("s4_box.json", "67da965929c03af6bf4709040d944b5d22daef489e0a7bb2ba3a486ac732b301"),
        ("ms3_box.json", "9453e0b0822c111cdfc2cde39d54b274cd9c08134a11815c9818bc199ea8d3e7"),
        ("vggss_test_plus_silent.csv", "905a009428e16d1108e5af112d8e682dbe1702a2ed897b3d56753ff587018e4e"),
        ("flickr_test_plus_silent.csv", "45a0d32b64a9ef9e567d3eaf4a4a29683cdb0f7f4e1924a0e26cde24fa298643"),
    )),
)
# No checksum is published for the archive, and its bytes could not be fetched from here.
FLICKR_XML = AnnotationFile("flickr", FLICKR_XML_ARCHIVE, FLICKR_XML_URL, None)
# Files with no known public URL: copy them into <out>/<dataset>/ by hand.
MANUAL_FILES = {
    ("flickr", "test_list_250.txt"): "690667197a2fdc3a685325ae7eb89d26027b9c7a938ee3efe18b3f5ec7b00f68",
}


def _url(entry: AnnotationFile, base_url: str | None) -> str:
    return f"{base_url.rstrip('/')}/{entry.name}" if base_url else entry.url


def extract_xml(archive: Path, dest: Path) -> int:
    """Copy every ``*.xml`` of a zip or tar archive into ``dest`` (flat, by file name)."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0

    def keep(name: str) -> str | None:
        base = Path(name).name
        skip = "__MACOSX" in name or base.startswith(".") or not base.lower().endswith(".xml")
        return None if skip else base  # the base name only: no path from the archive is trusted

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                base = keep(info.filename)
                if base and not info.is_dir():
                    (dest / base).write_bytes(z.read(info))
                    count += 1
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for member in t.getmembers():
                base = keep(member.name)
                if base and member.isfile():
                    (dest / base).write_bytes(t.extractfile(member).read())
                    count += 1
    else:
        raise ValueError(f"{archive}: neither a zip nor a tar archive; extract its XML files into "
                         f"{dest} by hand")
    return count


def download_flickr_xml(out: Path, base_url: str | None = None, progress: bool = True) -> Path:
    """Fetch the Flickr-SoundNet archive and install its XML files as ``<out>/flickr/Annotations``."""
    target = out / "flickr" / "Annotations"
    if target.is_dir() and any(target.glob("*.xml")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".annotations-") as tmp:
        archive = download_file(_url(FLICKR_XML, base_url), Path(tmp) / FLICKR_XML.name,
                                sha256=FLICKR_XML.sha256, progress=progress)
        if FLICKR_XML.sha256 is None:
            print(f"{FLICKR_XML.name}: no published checksum; sha256 of the download is "
                  f"{sha256_file(archive)}")
        staged = Path(tmp) / "Annotations"
        count = extract_xml(archive, staged)
        if count == 0:
            raise ValueError(f"{_url(FLICKR_XML, base_url)}: the archive holds no XML annotation")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)  # same file system: the finished folder appears at once
    print(f"{count} Flickr-SoundNet XML annotations in {target}")
    return target


def download_annotations(out=None, *, base_url: str | None = None, flickr_xml: bool = False,
                         progress: bool = True) -> dict[str, Path]:
    """Download every annotation file into ``out`` (default: the cache); returns name -> path.

    Raises ``avlegrad.download.DownloadError`` on a failed download or a checksum mismatch (the
    bad file is not kept).
    """
    out = Path(out).expanduser() if out else cache_dir()
    paths = {}
    for entry in FILES:
        dest = out / entry.dataset / entry.name
        paths[entry.name] = download_file(_url(entry, base_url), dest, sha256=entry.sha256,
                                          progress=progress)
        if entry.sha256 is None:
            print(f"{entry.name}: no known checksum; sha256 is {sha256_file(dest)}")
    if flickr_xml:
        paths["Annotations"] = download_flickr_xml(out, base_url, progress)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"destination (default {cache_dir()})")
    parser.add_argument("--base-url", default=None, help="fetch every file from <base-url>/<name>")
    parser.add_argument("--flickr-xml", action="store_true",
                        help="also fetch the Flickr-SoundNet XML boxes (a large archive)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from avlegrad.download import DownloadError

    try:
        paths = download_annotations(args.out, base_url=args.base_url, flickr_xml=args.flickr_xml,
                                     progress=not args.quiet)
    except (DownloadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    out = args.out or cache_dir()
    for (dataset, name), digest in MANUAL_FILES.items():
        if not (out / dataset / name).is_file():
            print(f"note: {name} has no known public URL; copy it into {out / dataset}/ yourself "
                  f"(sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, name="download_annotations.py",
                         interrupted="interrupted; files already verified are kept, no partial file is: rerun to finish"))
