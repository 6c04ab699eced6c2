"""The one atomic-write helper: complete files only, nothing left behind, every writer uses it."""
import re
from pathlib import Path

import pytest

from avlegrad.fileio import atomic_path, temporary_name, write_bytes_atomic, write_text_atomic

PACKAGE = Path(__file__).resolve().parents[1] / "avlegrad"


def test_atomic_path_replaces_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".json"
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["result.json"]
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and not temporary_name(target).exists()


def test_no_hand_written_temp_file_and_replace_left():
    """Every temp-file + rename write goes through avlegrad.fileio (the streaming video writer,
    whose file outlives one call, and the resumable download keep their own)."""
    allowed = {"fileio.py", "localize.py", "download.py"}
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name not in allowed and re.search(r"os\.replace\(|\.replace\(\w*(sidecar|path|dest)\)",
                                                        p.read_text(encoding="utf-8"))]
    assert not offenders, f"hand-written atomic writes in {offenders}: use avlegrad.fileio"
