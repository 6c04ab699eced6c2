"""Issue 13: nothing lost, nothing silently wrong. Each test turns a fault found by trying the
product as users do into the behaviour that must hold (bad clips skipped per clip, results never
deleted, settings protected, one-line errors)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import eval as eval_cli
from avlegrad.audio import create_audio_encoder
from avlegrad.audio.base import waveform_problem
from avlegrad.data.record import SkippedClip, skip_kind
from avlegrad.data.synthetic import generate_synthetic
from avlegrad.world_clip import AUDIO_FILE, WORLD_CHECKPOINTS

REPO = Path(__file__).resolve().parents[1]
WORLD_AUDIO = WORLD_CHECKPOINTS / AUDIO_FILE
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    base = tmp_path_factory.mktemp("bench13")
    root = generate_synthetic(base / "synthetic", num_clips=6, seed=11)
    config = base / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return root, config


def text_argv(bench, out, *extra):
    root, config = bench
    return ["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
            "--workers", "0", "--batch-size", "4", "--out", str(out), *extra]


def rows_of(out):
    return [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# 1. per-clip audio problems: found per clip, before batching, with every encoder's own minimum
# ------------------------------------------------------------------------------------------------
def _encoders():
    yield "timm", create_audio_encoder("timm", backbone="test_convnext", embed_dim=16,
                                       frontend={"n_fft": 512, "n_mels": 32})
    yield "imagebind", create_audio_encoder("imagebind", pretrained=False, embed_dim=16, width=32, depth=1,
                                            heads=2, drop_path=0.0)
    yield "wav2clip", create_audio_encoder("wav2clip", pretrained=False)


@pytest.mark.parametrize("name", ["timm", "imagebind", "wav2clip"])
def test_every_encoder_declares_the_minimum_it_really_needs(name):
    enc = dict(_encoders())[name] if False else next(e for n, e in _encoders() if n == name)
    rng = np.random.default_rng(0)
    n = enc.min_samples
    assert n > 1
    ok = (0.3 * rng.standard_normal(n)).astype(np.float32)
    assert enc.check_waveform(ok) is None
    with torch.no_grad():
        assert torch.isfinite(enc(torch.from_numpy(ok)[None])).all()  # the minimum itself embeds
        short = torch.from_numpy(ok[:-1])[None]
        with pytest.raises(ValueError, match="needs at least"):
            enc(short)
    reason = enc.check_waveform(ok[:-1])
    assert reason.startswith("audio too short") and f"{n - 1} samples" in reason and str(n) in reason
    bad = ok.copy()
    bad[3] = np.nan
    assert "NaN" in enc.check_waveform(bad)
    assert enc.check_waveform(np.zeros(2 * n, np.float32)).startswith("silent audio")


def test_waveform_problem_kinds():
    assert waveform_problem(np.ones(10, np.float32), min_samples=10) is None
    assert skip_kind(waveform_problem(np.ones(9, np.float32), min_samples=10)) == "audio too short"
    assert skip_kind(waveform_problem(np.full(10, np.inf, np.float32))) == "non-finite audio"
    assert skip_kind(waveform_problem(np.zeros(10, np.float32))) == "silent audio"


@pytest.mark.skipif(not WORLD_AUDIO.is_file(), reason="the shipped world audio encoder is absent")
def test_short_audio_clip_is_skipped_and_its_batch_mates_scored(bench, tmp_path):
    root = tmp_path / "syn"
    generate_synthetic(root, num_clips=6, seed=11)
    ids = [line for line in (root / "vggss_test.csv").read_text().splitlines() if line]
    (root / "audio").mkdir()
    rng = np.random.default_rng(1)
    sf.write(root / "audio" / f"{ids[1]}.wav", 0.5 * rng.standard_normal(80).astype(np.float32), 16000)  # 5 ms
    nan = 0.5 * rng.standard_normal(16000).astype(np.float32)
    nan[100:] = np.nan
    sf.write(root / "audio" / f"{ids[2]}.wav", nan, 16000, subtype="FLOAT")
    out = tmp_path / "run"
    argv = ["--dataset", "synthetic", "--root", str(root), "--audio-encoder", str(WORLD_AUDIO), "--workers", "0",
            "--batch-size", "6", "--out", str(out)]
    assert eval_cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 4
    skipped = {s["clip_id"]: s["reason"] for s in summary["skipped"]["clips"]}
    assert set(skipped) == {ids[1], ids[2]}
    assert "80 samples" in skipped[ids[1]] and "needs at least" in skipped[ids[1]]
    assert summary["skipped"]["reasons"] == {"audio too short": 1, "non-finite audio": 1}
    scored = {r["clip_id"] for r in rows_of(out) if "ciou" in r}
    assert scored == set(ids) - {ids[1], ids[2]}


def test_skip_reasons_are_grouped_under_readable_kinds():
    cases = {
        "missing: no frame, audio or video file under /data": "missing files",
        "file not found (/data/videos/x.mp4)": "missing files",
        "clip x: no audio file and no video file": "no audio",
        "has no audio stream (/data/x.mp4)": "no audio",
        "clip x: no frame image and no video file": "no frame",
        "cannot decode video with PyAV (bad data) (/data/x.mp4)": "unreadable media",
        "silent audio (peak 0 < 0.0001)": "silent audio",
        "audio holds NaN or infinite samples": "non-finite audio",
        "no entry in /data/vggss.json": "no box annotation",
    }
    for reason, kind in cases.items():
        assert skip_kind(reason) == kind, reason
        assert SkippedClip("x", reason).kind == kind
    assert SkippedClip("x", "anything", kind="custom").kind == "custom"
