"""python -m avlegrad.localize end to end on generated mp4 files with tiny random models: frames,
durations and the audio track survive; the overlay sits where the maps are high; stride
interpolation; time alignment of the audio windows; odd sizes, rotation, variable frame rate;
failures reported without stopping the other inputs; bounded memory."""
import gc
import json
import os
import sys
import threading
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch

from avlegrad import localize
from avlegrad.audio import AudioEncoder, create_audio_encoder
from avlegrad.audio.factory import encoder_checkpoint, save_checkpoint_file
from avlegrad.data.media import write_video
from avlegrad.visualize import colorize, overlay
from conftest import count_live_frames, make_tiny_clip

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SR = 16000


# ----------------------------------------------------------------------------- media helpers
def moving_box_frames(n, width=98, height=64, background=20):
    """Dark frames with a bright box moving left to right."""
    frames = []
    for i in range(n):
        f = np.full((height, width, 3), background, np.uint8)
        x = int(i * (width - 24) / max(n - 1, 1))
        f[height // 4:height // 4 + 20, x:x + 20] = (230, 180, 40)
        frames.append(f)
    return frames


def tone(seconds, sr=SR, freq=440.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_custom(path, frames, fps=10, pts_ms=None, rotation=0, pix_fmt="yuv420p", audio=None):
    """An mp4 that media.write_video cannot make: odd sizes (yuv444p), irregular timestamps, rotation."""
    with av.open(str(path), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=fps)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = pix_fmt
        if pts_ms is not None:
            v.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            v.set_display_rotation(rotation)
        a = None
        if audio is not None:
            a = out.add_stream("aac", rate=SR)
            a.layout = "mono"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(v.encode(frame))
        out.mux(v.encode())
        if a is not None:
            for i in range(0, len(audio), 1024):
                frame = av.AudioFrame.from_ndarray(audio[None, i:i + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = SR, i
                out.mux(a.encode(frame))
            out.mux(a.encode())


def read_video(path):
    """(frames [N, H, W, 3] uint8, stream facts) of the first video stream, display rotation NOT applied."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
        facts = {"duration": float(s.duration * s.time_base), "fps": float(s.average_rate),
                 "has_audio": bool(c.streams.audio)}
    return frames, facts


def audio_length(path):
    """(decoded samples, stream duration in samples) of the first audio stream."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        decoded = sum(f.samples for f in c.decode(s))
        return decoded, s.duration * s.time_base * s.codec_context.sample_rate


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny audio encoder checkpoint paired with a tiny random tower, and that tower's config JSON."""
    base = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    enc = create_audio_encoder("timm", backbone="test_convnext", embed_dim=32,
                               frontend={"n_fft": 512, "n_mels": 32}, clip_model="tiny-clip",
                               clip_pretrained=None, clip_model_cfg=TINY_CLIP)
    ckpt = base / "encoder.pt"
    save_checkpoint_file(encoder_checkpoint(enc), ckpt)
    config = base / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return {"encoder": str(ckpt), "config": str(config)}


@pytest.fixture(scope="module")
def clip_with_sound(tmp_path_factory):
    """2 s, 25 fps, 98x64, with a 16 kHz tone."""
    path = tmp_path_factory.mktemp("clips") / "box.mp4"
    write_video(path, moving_box_frames(50), 25, audio=tone(2.0), sample_rate=SR)
    return path


def run(inputs, out, *extra):
    return localize.main([*map(str, inputs), "-o", str(out), "--quiet", *map(str, extra)])


# ----------------------------------------------------------------------------- tests
def test_heatmap_video_keeps_frames_duration_and_sound(models, clip_with_sound, tmp_path):
    out = tmp_path / "out"
    assert run([clip_with_sound], out, "--audio-encoder", models["encoder"], "--batch-size", 8, "--save-maps",
               "--contact-sheet", "--colormap", "inferno", "--alpha", 0.6) == 0
    result = out / "box_legrad.mp4"
    assert sorted(p.name for p in out.iterdir()) == ["box_legrad.mp4", "box_legrad_maps.npz", "box_legrad_sheet.png"]

    src, src_facts = read_video(clip_with_sound)
    dst, dst_facts = read_video(result)
    assert dst.shape == src.shape  # same number of frames, same size
    assert dst_facts["fps"] == pytest.approx(src_facts["fps"])
    assert abs(dst_facts["duration"] - src_facts["duration"]) <= 1 / src_facts["fps"]
    # the original sound, re-encoded: as long as the input's to within one AAC frame
    (src_decoded, src_dur), (dst_decoded, dst_dur) = audio_length(clip_with_sound), audio_length(result)
    assert abs(dst_decoded - src_decoded) <= 1024 and abs(dst_dur - src_dur) <= 1024

    saved = np.load(out / "box_legrad_maps.npz")
    maps = saved["maps"]
    assert maps.dtype == np.float16 and maps.shape == (50, 64, 64) and saved["explained"].all()
    assert float(saved["fps"]) == pytest.approx(25)
    assert np.allclose(saved["times"], np.arange(50) / 25, atol=1e-3)
    for k in (0, 17, 49):
        m = cv2.resize(maps[k].astype(np.float32), (98, 64), interpolation=cv2.INTER_LINEAR)
        diff = np.abs(dst[k].astype(np.float32) - src[k].astype(np.float32)).mean(-1)
        background = np.all(src[k] < 40, axis=-1)  # the dark background, away from the box
        high, low = background & (m > 0.7), background & (m < 0.3)
        assert high.sum() > 20 and low.sum() > 20
        assert diff[high].mean() > diff[low].mean() + 40  # inferno: bright where the map is high
        expected = overlay(src[k], maps[k].astype(np.float32), 0.6, "inferno")
        assert np.abs(dst[k].astype(np.float32) - expected).mean() < 6  # up to H.264 losses
    sheet = cv2.imread(str(out / "box_legrad_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 100 and sheet.shape[1] > 500
    # under the grid, the legend: a colour bar of the chosen colormap, then one line of text
    footer = cv2.cvtColor(sheet, cv2.COLOR_BGR2RGB)[-(4 + 10 + 4 + localize.ContactSheet.LINE + 4):]
    bar = colorize(np.tile(np.linspace(0, 1, 160), (10, 1)), "inferno")
    np.testing.assert_array_equal(footer[4:14, 44:204], bar)


def test_stride_interpolates_between_explained_frames(models, clip_with_sound, tmp_path):
    assert run([clip_with_sound], tmp_path / "k1", "--audio-encoder", models["encoder"], "--save-maps") == 0
    assert run([clip_with_sound], tmp_path / "k4", "--audio-encoder", models["encoder"], "--save-maps",
               "--stride", 4, "--batch-size", 3) == 0
    full = np.load(tmp_path / "k1" / "box_legrad_maps.npz")["maps"].astype(np.float32)
    saved = np.load(tmp_path / "k4" / "box_legrad_maps.npz")
    strided, explained = saved["maps"].astype(np.float32), saved["explained"]
    keys = sorted(set(range(0, 50, 4)) | {49})  # every 4th frame and the last one
    assert np.flatnonzero(explained).tolist() == keys and len(strided) == 50
    assert np.abs(strided[keys] - full[keys]).max() < 2e-3  # the same maps (float16 storage)
    for a, b in zip(keys, keys[1:]):
        for i in range(a + 1, b):
            w = (i - a) / (b - a)
            assert np.abs(strided[i] - ((1 - w) * strided[a] + w * strided[b])).max() < 2e-3


def test_model_input_is_image_tensor():
    # frames are resized in the decoding thread and normalised on the device: the same numbers as eval's
    from avlegrad.models import image_tensor

    rgb = np.random.default_rng(0).integers(0, 256, (65, 99, 3), dtype=np.uint8)
    cfg = {"size": 32, "mean": (0.1, 0.5, 0.9), "std": (0.2, 0.3, 0.25)}
    for interpolation in ("bicubic", "bilinear"):
        loc = localize.Localizer(make_tiny_clip(), {**cfg, "interpolation": interpolation},
                                 text_embedding=torch.ones(32), progress=False)
        batch = loc.to_model([loc.prepare(rgb), loc.prepare(rgb[::-1])])
        assert torch.equal(batch[0], image_tensor(rgb, loc.preprocess_cfg, 32))
        assert torch.equal(batch[1], image_tensor(np.ascontiguousarray(rgb[::-1]), loc.preprocess_cfg, 32))


class RecordingEncoder(AudioEncoder):
    """Any AudioEncoder works: this one, at 8 kHz, records the windows it is given."""

    def __init__(self, fail_after=None, keep=True):
        super().__init__(8000, 32, "tiny", None)
        self.keep = keep
        self.proj = torch.nn.Parameter(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)))
        self.bias = torch.nn.Parameter(torch.randn(32, generator=torch.Generator().manual_seed(1)))
        self.windows, self.fail_after = [], fail_after

    def encode(self, waveforms):
        if self.fail_after is not None and len(self.windows) >= self.fail_after:
            raise RuntimeError("encoder failed on purpose")
        self.windows.extend(waveforms.clone() if self.keep else [None] * len(waveforms))
        feats = torch.stack([waveforms.abs().mean(1), waveforms.std(1), waveforms[:, ::2].mean(1)], 1)
        return feats @ self.proj + self.bias


def test_audio_windows_are_centred_on_each_frame(tmp_path):
    # the unit: window [t - w/2, t + w/2] of the track, zero-padded beyond its ends
    track = localize.AudioTrack(np.arange(100, dtype=np.float32)[:, None] + 1, sample_rate=10, start=0.5)
    windows = localize.AudioWindows(track, sample_rate=10, seconds=1.0)
    assert windows.window(3.0).tolist() == list(range(21, 31))  # centre: sample (3.0 - 0.5) * 10 = 25
    assert windows.window(0.5).tolist() == [0] * 5 + [1, 2, 3, 4, 5]
    assert windows.window(10.3).tolist() == [94, 95, 96, 97, 98, 99, 100] + [0] * 3
    assert not windows.window(20.0).any()

    # end to end: frame i of a 10 fps clip gets the window centred on i / 10, batched
    path = tmp_path / "clip.mp4"
    write_video(path, moving_box_frames(12, 64, 64), 10, audio=tone(1.2, freq=300), sample_rate=SR)
    enc = RecordingEncoder()
    localizer = localize.Localizer(make_tiny_clip(), {"size": 32}, enc, window=0.5, batch_size=5, progress=False)
    localizer.localize(path, tmp_path / "out")
    expected = localize.AudioWindows(localize.read_audio_track(path), 8000, 0.5)
    assert len(enc.windows) == 12
    for i, got in enumerate(enc.windows):
        assert torch.equal(got, torch.from_numpy(expected.window(i / 10)))
    assert enc.windows[0][:2000].abs().max() == 0  # first frame: the half before the track is silence
    assert enc.windows[6].abs().min() < 0.01 < enc.windows[6].abs().max()  # mid-clip: sound all through


def test_odd_size_rotation_and_variable_frame_rate(models, tmp_path, caplog):
    odd = moving_box_frames(20, 99, 65, background=90)
    write_custom(tmp_path / "odd.mp4", odd, fps=10, pix_fmt="yuv444p", audio=tone(2.0))
    coded = np.zeros((32, 64, 3), np.uint8)
    coded[:8, :16] = 255  # top-left corner of the coded picture
    write_custom(tmp_path / "rotated.mp4", [coded] * 6, fps=10, rotation=90)
    pts = np.cumsum([0] + [40, 80, 40, 120] * 5)[:20]  # irregular frame intervals
    write_custom(tmp_path / "vfr.mp4", moving_box_frames(20), pts_ms=pts.tolist())

    caplog.set_level("INFO")
    out = tmp_path / "out"
    assert run([tmp_path], out, "--target-text", "a dog", "--model", models["config"], "--pretrained", "none",
               "--alpha", 0) == 0  # alpha 0: the output shows the frames themselves

    frames, facts = read_video(out / "odd_legrad.mp4")
    src, src_facts = read_video(tmp_path / "odd.mp4")
    assert frames.shape == (20, 66, 100, 3) and facts["has_audio"]
    assert np.abs(frames[:, :65, :99].astype(float) - src).mean() < 4  # padded by one edge pixel
    assert np.abs(frames[:, 65, :99].astype(float) - src[:, 64]).mean() < 6
    assert abs(audio_length(out / "odd_legrad.mp4")[1] - audio_length(tmp_path / "odd.mp4")[1]) <= 1024

    frames, _ = read_video(out / "rotated_legrad.mp4")
    assert frames.shape == (6, 64, 32, 3)  # turned upright: 90 degrees counter-clockwise
    assert frames[0, -8:, :8].mean() > 200 and frames[0, :8, :8].mean() < 50  # top-left went bottom-left
    with av.open(str(out / "rotated_legrad.mp4")) as c:
        assert next(c.decode(video=0)).rotation == 0  # no rotation left for a player to apply

    frames, facts = read_video(out / "vfr_legrad.mp4")
    src_frames, src_facts = read_video(tmp_path / "vfr.mp4")
    assert len(frames) == len(src_frames) == 20
    assert abs(facts["duration"] - src_facts["duration"]) <= 1 / src_facts["fps"]
    assert not facts["has_audio"]
    log = caplog.text
    assert "odd frame size 99x65: padded to 100x66" in log
    assert "display rotation applied" in log
    assert "vfr.mp4: variable frame rate" in log and "written at the average rate" in log


def test_failures_are_reported_and_the_rest_still_runs(models, clip_with_sound, tmp_path, caplog):
    silent = tmp_path / "in" / "silent.mp4"
    write_video(silent, moving_box_frames(10), 10)  # no audio track
    truncated = tmp_path / "in" / "truncated.mp4"
    data = clip_with_sound.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    short = tmp_path / "in" / "short.mp4"  # 0.4 s: shorter than the 2 s window, zero-padded
    write_video(short, moving_box_frames(8), 20, audio=tone(0.4), sample_rate=SR)

    out = tmp_path / "out"
    code = run([silent, truncated, tmp_path / "missing.mp4", short, clip_with_sound], out,
               "--audio-encoder", models["encoder"])
    assert code == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    assert len(failed) == 3
    assert any("silent.mp4" in m and "no audio track" in m for m in failed)
    assert any("truncated.mp4" in m and "unreadable or truncated" in m for m in failed)
    assert any("missing.mp4" in m and "no such file" in m for m in failed)
    assert all("\n" not in m for m in failed)  # one line each
    assert sorted(p.name for p in out.iterdir()) == ["box_legrad.mp4", "short_legrad.mp4"]  # no temp files
    frames, _ = read_video(out / "short_legrad.mp4")
    assert len(frames) == 8

    # with a text target, a video without sound works, and its output has no audio stream
    assert run([silent], out, "--target-text", "a guitar", "--model", models["config"], "--pretrained", "none",
               "--dtype", "bf16") == 0
    frames, facts = read_video(out / "silent_legrad.mp4")
    assert len(frames) == 10 and not facts["has_audio"]


def test_setup_errors(models, clip_with_sound, tmp_path, caplog):
    out = tmp_path / "out"
    assert run([clip_with_sound], out) == 2  # no target
    assert run([clip_with_sound], out, "--audio-encoder", models["encoder"], "--target-text", "a dog") == 2
    assert "not both nor neither" in caplog.text
    # the encoder lives in the tiny tower's space: another tower is refused before anything is built
    assert run([clip_with_sound], out, "--audio-encoder", models["encoder"], "--model", "ViT-B-32",
               "--pretrained", "openai") == 2
    assert "LeGrad needs the tower the audio encoder was trained against" in caplog.text
    assert run([clip_with_sound], out, "--audio-encoder", models["encoder"], "--image-size", 50) == 2
    assert not out.exists() or not any(out.iterdir())


def test_memory_is_bounded_and_a_failing_model_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "long.mp4"
    write_video(path, moving_box_frames(60, 64, 64), 25, audio=tone(2.4), sample_rate=SR)
    localizer = localize.Localizer(make_tiny_clip(), {"size": 32}, RecordingEncoder(), batch_size=4, stride=2,
                                   progress=False)
    alive = count_live_frames(localizer, monkeypatch)
    localizer.localize(path, tmp_path / "out")
    # at most batch * stride frames wait for the model, plus the decode and encode queues: never the whole video
    assert 0 < max(alive) <= 4 * 2 + 8 + 8 + 3 < 60

    failing = localize.Localizer(make_tiny_clip(), {"size": 32}, RecordingEncoder(fail_after=8), batch_size=4,
                                 progress=False)
    with pytest.raises(RuntimeError, match="on purpose"):
        failing.localize(path, tmp_path / "out2")
    assert list((tmp_path / "out2").iterdir()) == []  # the temporary output is gone
    assert not [t for t in threading.enumerate() if t.name.startswith("decode ")]  # the reader stopped


# ----------------------------------------------------------------------------- issue 13, item 7
def whole_track_windows(path, sample_rate, seconds, times):
    """Reference: the whole track decoded, mixed to mono, resampled at once, windows cut from it."""
    from avlegrad.data.media import load_audio, resample

    samples, sr = load_audio(path, mono=True)
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
    mono = resample(samples, sr, sample_rate)
    length = int(round(seconds * sample_rate))
    out = np.zeros((len(times), length), np.float32)
    for i, t in enumerate(times):
        lo = int(round((t - start) * sample_rate)) - length // 2
        for j in range(length):
            if 0 <= lo + j < len(mono):
                out[i, j] = mono[lo + j]
    return out


@pytest.mark.parametrize("rate,channels", [(48000, 2), (44100, 2), (16000, 1), (22050, 6)])
def test_streamed_audio_windows_equal_the_whole_track_resampled(tmp_path, rate, channels):
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(rate)
    seconds = 3.0
    audio = (0.3 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    if channels <= 2:
        write_video(path, moving_box_frames(10, 64, 64), 10, audio=audio, sample_rate=rate)
    else:  # 5.1: write_video does mono/stereo only
        with av.open(str(path), "w", format="mp4") as out:
            a = out.add_stream("aac", rate=rate)
            a.layout = "5.1"
            for i in range(0, len(audio), 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[i:i + 1024].T), format="fltp",
                                                   layout="5.1")
                frame.sample_rate, frame.pts = rate, i
                out.mux(a.encode(frame))
            out.mux(a.encode())
    track = localize.read_audio_track(path)
    windows = localize.AudioWindows(track, 16000, 0.75)
    # in batches, as the localizer asks: growing times, past both ends, then back to the start (restart)
    batches = [[-1.0, -0.2, 0.0, 0.1], [0.13, 0.5, 0.9], [1.0 + k / 30 for k in range(20)], [2.9, 3.2, 3.6, 9.0],
               [0.05, 0.4]]
    for times in batches:
        got = windows.batch(times).numpy()
        np.testing.assert_allclose(got, whole_track_windows(path, 16000, 0.75, times), atol=2e-6, rtol=0)
        assert len(windows._buf) < 2 * rate  # only the stretch these windows need is held


def test_audio_memory_does_not_grow_with_the_video(tmp_path):
    """The command held the whole track decoded several times over (117 MB a minute of 48 kHz stereo);
    now the peak of Python/numpy allocations is the same for a 4 s and a 16 s video."""
    import tracemalloc

    peaks = []
    localizer = localize.Localizer(make_tiny_clip(), {"size": 32}, RecordingEncoder(keep=False), window=0.5,
                                   batch_size=4, stride=2, progress=False)
    for seconds in (4, 16):
        path = tmp_path / f"clip{seconds}.mp4"
        t = np.arange(seconds * 48000) / 48000
        stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 550 * t)], 1)
        write_video(path, moving_box_frames(seconds * 4, 32, 32), 4, audio=stereo.astype(np.float32),
                    sample_rate=48000)
        gc.collect()
        tracemalloc.start()
        localizer.localize(path, tmp_path / "out")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 12 s more of 48 kHz stereo float32 is 4.6 MB per copy of the track; allow a fifth of one copy
    assert peaks[1] - peaks[0] < 1e6, peaks
    decoded, declared = audio_length(tmp_path / "out" / "clip16_legrad.mp4")
    assert abs(declared - 16 * 48000) <= 1024  # and all the sound is still muxed in


def test_truncated_file_writes_what_decodes_and_reports_the_damage(models, tmp_path, caplog):
    """A truncated mp4 whose index is at the front (as our outputs and most web videos have) used to
    fail whole ('cannot decode audio'); now the frames before the damage are written, with one line."""
    src = tmp_path / "full.mp4"
    t = np.arange(4 * 48000) / 48000
    track = localize.AudioTrack(np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1).astype(np.float32) * 0.3, 48000)
    writer = localize.VideoWriter(src, 64, 48, Fraction(25), track)  # movflags +faststart
    for f in moving_box_frames(100, 64, 48):
        writer.write(f)
    writer.finish()
    data = src.read_bytes()
    cut = tmp_path / "in" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.6)])

    caplog.set_level("INFO")
    assert run([src], tmp_path / "whole", "--audio-encoder", models["encoder"]) == 0
    assert "DAMAGED" not in caplog.text  # the complete file is not reported
    assert run([cut], tmp_path / "out", "--audio-encoder", models["encoder"]) == 0
    frames, _ = read_video(tmp_path / "out" / "cut_legrad.mp4")
    assert 30 <= len(frames) < 100
    damaged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DAMAGED")]
    assert len(damaged) == 1 and "\n" not in damaged[0]
    assert f"wrote {len(frames)} of the 100 frames the file announces" in damaged[0]
    assert "of 4.00 s" in damaged[0] and "stopped" in damaged[0]  # what failed


def test_temporary_files_of_killed_runs_are_removed(models, clip_with_sound, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process that has ended
    out = tmp_path / "out"
    out.mkdir()
    stale = [f".box_legrad.tmp{dead}.mp4", f".other_legrad.tmp{dead}.mp4", f".box_legrad_maps.npz.tmp{dead}",
             f".box_legrad_sheet.png.tmp{dead}"]
    kept = [f".box_legrad.tmp{os.getppid()}.mp4",  # a run still going (this test's parent process)
            f".notes.tmp{dead}.txt", "box_legrad.tmp1.mp4"]  # not ours: other naming, not hidden
    for name in stale + kept:
        (out / name).write_bytes(b"partial")
    assert run([clip_with_sound], out, "--audio-encoder", models["encoder"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(kept + ["box_legrad.mp4"])


def test_the_usage_names_the_command_it_was_run_as(monkeypatch):
    """Installed, the console script's usage says avlegrad-localize; run as a module, python -m ..."""
    monkeypatch.setattr(sys, "argv", ["/venv/bin/avlegrad-localize"])
    assert localize.build_parser().prog == "avlegrad-localize"
    monkeypatch.setattr(sys, "argv", ["/x/avlegrad/localize.py"])
    assert localize.build_parser().prog == "python -m avlegrad.localize"
