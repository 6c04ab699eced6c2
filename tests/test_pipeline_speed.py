"""Issue 20, the pipeline's speed: the stage timers of avlegrad.profiling (off by default, they time
named stages from several threads; eval and localize mark their stages without changing what they
compute), and localize's queues, which hold a batch (so decoding and writing overlap the model)
within a memory bound."""
import threading
import time

import numpy as np
import pytest

from avlegrad import profiling
from avlegrad.profiling import STAGES, StageTimes


def test_stages_are_timed_only_when_turned_on():
    times = StageTimes()
    with times.stage("a"):
        time.sleep(0.01)
    assert list(times.iterate("b", range(3))) == [0, 1, 2]
    assert times.totals() == {} and times.calls() == {}

    times.enabled = True
    with times.stage("a"):
        time.sleep(0.02)
    with pytest.raises(KeyError):  # an error inside a stage still ends it (and propagates)
        with times.stage("a"):
            raise KeyError("x")

    def slow():
        for i in range(3):
            time.sleep(0.01)
            yield i

    assert list(times.iterate("wait", slow())) == [0, 1, 2]
    assert times.calls() == {"a": 2, "wait": 4}  # 3 items and the final StopIteration
    assert times.totals()["a"] >= 0.02 and times.totals()["wait"] >= 0.03

    def worker():
        for _ in range(50):
            with times.stage("thread"):
                pass

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert times.calls()["thread"] == 200  # no update lost between threads


def test_timing_starts_from_zero_and_turns_off_after():
    with profiling.timing() as times:
        assert times is STAGES and STAGES.enabled
        with STAGES.stage("x"):
            pass
    assert not STAGES.enabled and STAGES.calls() == {"x": 1}
    with profiling.timing():
        assert STAGES.calls() == {}
    with pytest.raises(ValueError), profiling.timing(sync=True):
        raise ValueError("boom")
    assert not STAGES.enabled and not STAGES.sync


TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_eval_marks_its_stages_and_computes_the_same(tmp_path):
    import json

    from avlegrad.data.synthetic import generate_synthetic
    from avlegrad.eval import EvalOptions, evaluate

    root = generate_synthetic(tmp_path / "synthetic", num_clips=4, seed=5)
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    opts = dict(dataset="synthetic", root=str(root), model=str(config), pretrained="none", workers=0, batch_size=3)
    plain = evaluate(EvalOptions(**opts, out=str(tmp_path / "plain")))
    with profiling.timing() as times:
        timed = evaluate(EvalOptions(**opts, out=str(tmp_path / "timed")))
    assert timed["methods"] == plain["methods"]
    calls, totals = times.calls(), times.totals()
    assert calls["eval: audio"] == calls["eval: explain"] == 2  # two batches (3 + 1 clips)
    assert calls["eval: wait for data"] == 3 and calls["eval: run"] == 1
    parts = totals["eval: wait for data"] + totals["eval: audio"] + totals["eval: explain"]
    assert 0 < parts <= totals["eval: run"]


def test_localize_marks_its_stages_and_writes_the_same_maps(tmp_path):
    import torch

    from avlegrad import localize
    from avlegrad.audio import create_audio_encoder
    from avlegrad.data.media import write_video
    from conftest import make_tiny_clip

    frames = [np.full((48, 64, 3), 20 + 8 * i, np.uint8) for i in range(12)]
    for i, f in enumerate(frames):
        f[10:30, 4 * i:4 * i + 16] = 230
    t = np.arange(16000) / 16000
    clip = tmp_path / "clip.mp4"
    write_video(clip, frames, 12, audio=0.3 * np.sin(2 * np.pi * 440 * t), sample_rate=16000)
    torch.manual_seed(0)
    encoder = create_audio_encoder("timm", backbone="test_convnext", embed_dim=32,
                                   frontend={"n_fft": 512, "n_mels": 32}, clip_model="tiny")
    loc = localize.Localizer(make_tiny_clip(), {"size": 32}, encoder, window=0.5, batch_size=5, save_maps=True,
                             progress=False)
    loc.localize(clip, tmp_path / "plain")
    with profiling.timing() as times:
        loc.localize(clip, tmp_path / "timed")
    calls = times.calls()
    for stage in ("reader: decode", "reader: to RGB", "reader: resize", "wait for frames", "audio windows", "audio",
                  "explain",
                  "wait for writer", "writer: overlay", "writer: encode"):
        assert calls.get(stage), stage
    assert calls["explain"] == calls["audio"] == 3 and calls["writer: encode"] == 12
    plain = np.load(tmp_path / "plain" / "clip_legrad_maps.npz")["maps"]
    timed = np.load(tmp_path / "timed" / "clip_legrad_maps.npz")["maps"]
    np.testing.assert_array_equal(plain, timed)


def test_localize_queues_hold_a_batch_within_a_memory_bound(tmp_path, monkeypatch):
    from avlegrad import localize
    from avlegrad.data.media import write_video

    path = tmp_path / "v.mp4"
    write_video(path, [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(30)], 10)
    with localize.FrameReader(path, queue_size=100) as reader:
        assert reader.queue_size == 100 and len(list(reader)) == 30
    with localize.FrameReader(path, queue_size=3) as reader:
        assert reader.queue_size == 3
    monkeypatch.setattr(localize, "QUEUE_BYTES", 20 * 48 * 64 * 3)  # room for 20 such frames
    with localize.FrameReader(path, queue_size=100) as reader:
        assert reader.queue_size == 20
    monkeypatch.setattr(localize, "QUEUE_BYTES", 0)  # never fewer than 8 (the queues' old size)
    with localize.FrameReader(path, queue_size=100) as reader:
        assert reader.queue_size == 8 and len(list(reader)) == 30


def test_localize_holds_at_most_a_batch_in_each_queue(tmp_path, monkeypatch):
    import torch

    from avlegrad import localize
    from avlegrad.data.media import write_video
    from conftest import count_live_frames, make_tiny_clip

    path = tmp_path / "long.mp4"
    write_video(path, [np.full((48, 64, 3), 3 * i, np.uint8) for i in range(80)], 25)
    loc = localize.Localizer(make_tiny_clip(), {"size": 32}, None, torch.ones(32), batch_size=10, progress=False)
    alive = count_live_frames(loc, monkeypatch)
    result = loc.localize(path, tmp_path / "out")
    assert result.frames == 80
    # a batch waiting for the model, a batch decoded ahead, a batch being written (and one in hand)
    assert 0 < max(alive) <= 3 * 10 + 3 < 80


@pytest.mark.parametrize("cuda,cores,expected", [(True, 16, 15), (True, 64, 16), (True, 1, 1), (False, 16, 4),
                                                 (False, 2, 2)])
def test_eval_decodes_with_more_workers_on_a_gpu(monkeypatch, cuda, cores, expected):
    import torch

    from avlegrad.eval import EvalOptions
    from avlegrad.eval import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(run.os, "cpu_count", lambda: cores)
    assert run.default_workers() == EvalOptions().workers == expected
    assert EvalOptions(workers=0).workers == 0  # a given number is kept
