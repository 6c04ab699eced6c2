"""data/download_annotations.py against a local HTTP server, and data/prepare_clips.py."""
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from avlegrad.data import write_video
from avlegrad.download import DownloadError, download_file, sha256_file
from conftest import serve_directory

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server(tmp_path):
    """A local http.server on 127.0.0.1 serving ``served`` (yields (served dir, base url))."""
    served = tmp_path / "served"
    served.mkdir()
    with serve_directory(served) as url:
        yield served, url


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# download_file
# ---------------------------------------------------------------------------------------------

def test_download_file_verifies_and_is_atomic(server, tmp_path):
    served, base = server
    (served / "w.bin").write_bytes(b"weights" * 1000)
    dest = tmp_path / "cache" / "w.bin"
    assert download_file(f"{base}/w.bin", dest, sha256=sha(b"weights" * 1000), progress=False) == dest
    assert dest.read_bytes() == b"weights" * 1000 and sha256_file(dest) == sha(b"weights" * 1000)

    bad = tmp_path / "cache" / "bad.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch") as info:
        download_file(f"{base}/w.bin", bad, sha256="0" * 64, progress=False)
    assert "0" * 64 in str(info.value)
    assert not bad.exists() and sorted(p.name for p in bad.parent.iterdir()) == ["w.bin"]  # no temp left

    with pytest.raises(DownloadError, match="404"):
        download_file(f"{base}/absent.bin", tmp_path / "cache" / "absent.bin", progress=False)
    assert not (tmp_path / "cache" / "absent.bin").exists()

    (served / "w.bin").write_bytes(b"changed")  # a good cached copy is not fetched again
    download_file(f"{base}/w.bin", dest, sha256=sha(b"weights" * 1000), progress=False)
    assert dest.read_bytes() == b"weights" * 1000


def test_download_file_offline_message(tmp_path):
    with pytest.raises(DownloadError, match="offline"):
        download_file("http://127.0.0.1:9/nothing", tmp_path / "x", progress=False)


# ---------------------------------------------------------------------------------------------
# download_annotations.py
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def annotations_script(server, shared_data_or_fake, monkeypatch):
    """The script module, with the served directory holding every annotation file."""
    served, base = server
    module = load_script("download_annotations")
    sources = shared_data_or_fake
    for entry in module.FILES:
        (served / entry.name).write_bytes(sources[entry.name])
    if SHARED_DATA.is_dir():  # the published copies: the hard-coded checksums must match them
        assert all(sha(sources[e.name]) == e.sha256 for e in module.FILES)
    else:  # stand-ins: expect their hashes instead
        monkeypatch.setattr(module, "FILES", tuple(
            module.AnnotationFile(e.dataset, e.name, e.url, sha(sources[e.name])) for e in module.FILES))
    return module, served, base


@pytest.fixture
def shared_data_or_fake():
    """The published files when ../shared/data is here (so their hard-coded checksums are
    checked too), else small stand-ins."""
    names = {"vggss.json": "vggss", "vggss_test.csv": "vggss", "vggss_heard_test.csv": "vggss",
             "vggss_unheard_test.csv": "vggss", "flickr_test.csv": "flickr",
             **{name: "sslalignment" for name in ("synthetic3240_bbox.json", "vpo_ss_bbox.json", "vpo_ms_bbox.json",
                                                  "s4_box.json", "ms3_box.json", "vggss_test_plus_silent.csv",
                                                  "flickr_test_plus_silent.csv")}}
    if SHARED_DATA.is_dir():
        return {name: (SHARED_DATA / sub / name).read_bytes() for name, sub in names.items()}
    return {name: f"stand-in for {name}\n".encode() for name in names}


def test_download_annotations_into_out(annotations_script, tmp_path):
    module, _, base = annotations_script
    out = tmp_path / "out"
    assert module.main(["--out", str(out), "--base-url", base, "--quiet"]) == 0
    for entry in module.FILES:
        path = out / entry.dataset / entry.name
        assert path.is_file() and sha256_file(path) == entry.sha256


def test_download_annotations_refuses_a_bad_checksum(annotations_script, tmp_path, monkeypatch, capsys):
    module, served, base = annotations_script
    (served / "vggss.json").write_bytes(b'[{"file": "tampered", "class": "x", "bbox": []}]')
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVLEGRAD_CACHE", str(cache))
    assert module.main(["--base-url", base, "--quiet"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (cache / "annotations" / "vggss" / "vggss.json").exists()
    assert not any(p.name.startswith(".vggss.json") for p in cache.rglob("*"))  # no temp file either
    with pytest.raises(DownloadError, match="vggss.json"):
        module.download_annotations(cache, base_url=base, progress=False)


def test_download_flickr_xml_archive(annotations_script, tmp_path):
    module, served, base = annotations_script
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("Data/Annotations/1001.xml", "<annotation/>")
        z.writestr("Data/Annotations/1002.xml", "<annotation/>")
        z.writestr("__MACOSX/Data/Annotations/._1001.xml", "junk")
        z.writestr("Data/readme.txt", "not xml")
    (served / module.FLICKR_XML.name).write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    paths = module.download_annotations(out, base_url=base, flickr_xml=True, progress=False)
    assert paths["Annotations"] == out / "flickr" / "Annotations"
    assert sorted(p.name for p in paths["Annotations"].iterdir()) == ["1001.xml", "1002.xml"]
    assert sorted(p.name for p in (out / "flickr").iterdir()) == ["Annotations", "flickr_test.csv"]


# ---------------------------------------------------------------------------------------------
# prepare_clips.py
# ---------------------------------------------------------------------------------------------

def make_videos(src):
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    frames = [np.full((32, 48, 3), 30 * i, dtype=np.uint8) for i in range(5)]
    for clip_id in ("good0000001_000010", "good0000002_000020"):
        write_video(src / f"{clip_id}.mp4", frames, fps=5, audio=tone, sample_rate=16000)
    write_video(src / "nested" / "good0000003_000030.mp4", frames, fps=5, audio=tone, sample_rate=16000)
    write_video(src / "noaudio0004_000040.mp4", frames, fps=5)
    (src / "corrupt0005_000050.mp4").write_bytes(b"\x00\x01 definitely not an mp4" * 50)


def test_prepare_clips_resumes_and_reports(tmp_path):
    module = load_script("prepare_clips")
    src, out = tmp_path / "videos", tmp_path / "prepared"
    make_videos(src)
    summary = module.prepare_clips(src, out, workers=1, progress=False)
    assert summary["total"] == 5 and summary["done"] == 3 and summary["skipped_existing"] == 0
    failed = {f["clip_id"]: f["reason"] for f in summary["failed"]}
    assert set(failed) == {"noaudio0004_000040", "corrupt0005_000050"}
    assert "no audio stream" in failed["noaudio0004_000040"]
    assert json.loads((out / "prepare_failures.json").read_text()) == summary
    for clip_id in ("good0000001_000010", "good0000002_000020", "good0000003_000030"):
        from avlegrad.data import load_audio, load_image

        assert load_image(out / "frames" / f"{clip_id}.jpg").shape == (32, 48, 3)
        audio, sr = load_audio(out / "audio" / f"{clip_id}.wav")
        assert sr == 16000 and abs(len(audio) - 16000) < 800
    assert not [p for p in out.rglob(".*")]  # no temporary files left

    (out / "audio" / "good0000002_000020.wav").unlink()  # an interrupted clip is redone
    again = module.prepare_clips(src, out, workers=1, progress=False)
    assert again["done"] == 1 and again["skipped_existing"] == 2 and len(again["failed"]) == 2


def test_prepare_clips_script_parallel_with_ids(tmp_path):
    src, out = tmp_path / "videos", tmp_path / "prepared"
    make_videos(src)
    ids = tmp_path / "ids.txt"
    ids.write_text("good0000001_000010\ncorrupt0005_000050\nnotthere000_000060\n")
    failures = tmp_path / "report" / "failures.json"
    result = subprocess.run([sys.executable, str(REPO / "data" / "prepare_clips.py"), str(src), "--out", str(out),
                             "--workers", "2", "--ids", str(ids), "--failures", str(failures), "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 prepared, 0 already done, 2 failed (of 3)" in result.stdout
    summary = json.loads(failures.read_text())
    reasons = {f["clip_id"]: f["reason"] for f in summary["failed"]}
    assert set(reasons) == {"corrupt0005_000050", "notthere000_000060"}
    assert "no video file" in reasons["notthere000_000060"] and "corrupt0005_000050" in reasons["corrupt0005_000050"]
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["good0000001_000010.jpg"]
