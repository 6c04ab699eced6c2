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
from avlegrad.data.media import waveform_problem
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
    enc = next(e for n, e in _encoders() if n == name)
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


# ------------------------------------------------------------------------------------------------
# 4. the dataset root is a run setting; --limit never deletes results
# ------------------------------------------------------------------------------------------------
def test_another_root_in_the_same_out_is_refused(bench, tmp_path, caplog):
    out = tmp_path / "run"
    assert eval_cli.main(text_argv(bench, out, "--method", "center")) == 0
    other = generate_synthetic(tmp_path / "other", num_clips=3, seed=12)
    argv = text_argv(bench, out, "--method", "center")
    argv[argv.index("--root") + 1] = str(other)
    assert eval_cli.main(argv) == 2
    assert "other settings" in caplog.text and "root" in caplog.text
    assert len(rows_of(out)) == 6  # the first run's results are intact


def test_a_smaller_limit_reports_on_the_first_clips_and_keeps_the_rest(bench, tmp_path):
    out = tmp_path / "run"
    assert eval_cli.main(text_argv(bench, out, "--method", "center")) == 0
    before = rows_of(out)
    assert eval_cli.main(text_argv(bench, out, "--method", "center", "--limit", "2")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 2 and summary["evaluated"] == 2
    assert sorted(map(json.dumps, rows_of(out))) == sorted(map(json.dumps, before))  # nothing deleted
    assert rows_of(out)[:2] == before[:2]
    assert eval_cli.main(text_argv(bench, out, "--method", "center")) == 0  # and the full run is whole again
    assert json.loads((out / "summary.json").read_text())["evaluated"] == 6


# ------------------------------------------------------------------------------------------------
# 5. --annotations FILE: the named file is read, whatever its name
# ------------------------------------------------------------------------------------------------
def _vggss_entry(clip_id, label="dog"):
    return {"file": clip_id, "class": label, "bbox": [[0.1, 0.1, 0.6, 0.6]]}


def test_named_annotation_file_is_read_whatever_its_name(tmp_path):
    from avlegrad.data import create_dataset
    from avlegrad.train.data import refuse_vggss_test_ids

    ann = tmp_path / "ann"
    ann.mkdir()
    full = ["aaaaaaaaaaa_000001", "bbbbbbbbbbb_000002", "ccccccccccc_000003"]
    (ann / "vggss.json").write_text(json.dumps([_vggss_entry(i) for i in full]))
    (ann / "vggss_test.csv").write_text("\n".join(full) + "\n")
    (ann / "vggss_heard_test.csv").write_text("\n".join(full[:2]) + "\n")
    (ann / "subset.json").write_text(json.dumps([_vggss_entry(full[1])]))
    root = tmp_path / "clips"
    root.mkdir()
    assert create_dataset("vggsound", root, annotations=ann / "subset.json").ids == [full[1]]
    assert create_dataset("vggsound", root, split="heard", annotations=ann / "subset.json").ids == [full[1]]
    assert create_dataset("vggsound", root, annotations=ann).ids == full  # a folder: searched as before
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "mine.json").write_text(json.dumps([_vggss_entry(full[2])]))
    assert create_dataset("vggsound", root, annotations=alone / "mine.json").ids == [full[2]]
    # training's guard reads the named file too
    with pytest.raises(ValueError, match="VGG-SS test clips"):
        refuse_vggss_test_ids({"train list": [full[2]]}, alone / "mine.json")


# ------------------------------------------------------------------------------------------------
# 2, 3, 11. training: bad audio skipped, a diverged run stops, finished runs protected, one-line errors
# ------------------------------------------------------------------------------------------------
TINY_TRAIN = REPO / "configs" / "tiny_cpu.yaml"


def _train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script_13", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_clips(tmp_path_factory):
    """16 prepared clips (frame colour and tone pitch by class), one all-NaN wav, one of 5 ms."""
    from PIL import Image

    root = tmp_path_factory.mktemp("train13")
    (root / "frames").mkdir()
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    ids = []
    for k in range(16):
        clip_id = f"c{k % 4}_{k:02d}"
        colour = np.array([(230, 40, 40), (40, 200, 60), (50, 80, 230), (235, 215, 40)][k % 4])
        frame = np.clip(colour[None, None] + rng.normal(0, 10, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(root / "frames" / f"{clip_id}.jpg")
        t = np.arange(16000) / 16000
        sf.write(root / "audio" / f"{clip_id}.wav", (0.4 * np.sin(2 * np.pi * 300 * (k % 4 + 1) * t)).astype(np.float32),
                 16000)
        ids.append(clip_id)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "frames" / "nan_audio.jpg")
    sf.write(root / "audio" / "nan_audio.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "frames" / "short_audio.jpg")
    sf.write(root / "audio" / "short_audio.wav", (0.5 * rng.standard_normal(80)).astype(np.float32), 16000)
    (root / "train.txt").write_text("\n".join(ids + ["nan_audio", "short_audio"]) + "\n")
    return root


def train_args(clips, out, *extra):
    return ["--config", str(TINY_TRAIN), "--set", f"data.root={clips}", "--set", f"data.train_list={clips / 'train.txt'}",
            "--set", f"output_dir={out}", "--set", f"data.targets_cache={out.parent / 'targets'}",
            "--set", "data.val_fraction=0.25", "--set", "train.epochs=2", *extra]


@pytest.fixture()
def one_thread_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_skips_non_finite_and_too_short_audio(train_clips, tmp_path, one_thread_cache):
    script = _train_script()
    out = tmp_path / "run"
    summary = script.main(train_args(train_clips, out))
    assert summary["finished"]
    text = (out / "train.log").read_text()
    assert "skipped clip nan_audio: audio holds NaN" in text
    assert "skipped clip short_audio: audio too short: 80 samples" in text
    final = torch.load(out / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    val = [line for line in (out / "log.csv").read_text().splitlines() if line.startswith("val")]
    assert val and all("nan" not in line for line in val)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(train_clips, tmp_path, caplog,
                                                                           one_thread_cache, monkeypatch):
    from avlegrad.train.model import ContrastiveModel

    script = _train_script()
    out = tmp_path / "run"
    assert script.cli(train_args(train_clips, out, "--set", "train.epochs=1")) == 0
    good = (out / "checkpoints" / "last.pt").read_bytes()
    forward = ContrastiveModel.forward

    def diverging(self, waveforms, targets):
        loss, parts = forward(self, waveforms, targets)
        return loss * float("nan"), parts

    monkeypatch.setattr(ContrastiveModel, "forward", diverging)
    code = script.cli(train_args(train_clips, out, "--resume", "--set", "train.epochs=3"))
    assert code == 1
    assert "training loss is nan" in caplog.text and "last good checkpoint is kept" in caplog.text
    assert "Traceback" not in caplog.text
    assert (out / "checkpoints" / "last.pt").read_bytes() == good
    assert not (out / "checkpoints" / "final.pt").read_bytes() == b""  # the first run's, untouched


def test_validation_of_nan_embeddings_is_an_error_not_recall_one():
    from avlegrad.train.model import NonFiniteError, evaluate

    class NaNEncoder(torch.nn.Module):
        def forward(self, waves):
            return torch.full((len(waves), 4), float("nan"))

    batches = [(torch.zeros(3, 10), None, torch.arange(3))]
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        evaluate(NaNEncoder(), batches, torch.randn(3, 4), 10.0, torch.device("cpu"), False)


def test_a_finished_output_dir_is_refused_without_resume_or_overwrite(train_clips, tmp_path, caplog,
                                                                       one_thread_cache):
    script = _train_script()
    out = tmp_path / "run"
    assert script.cli(train_args(train_clips, out)) == 0
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    log_before = (out / "log.csv").read_text()
    assert script.cli(train_args(train_clips, out, "--set", "train.epochs=1")) == 2
    assert "holds a run" in caplog.text and "--resume" in caplog.text and "--overwrite" in caplog.text
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == before
    assert (out / "log.csv").read_text() == log_before
    assert script.cli(train_args(train_clips, out, "--set", "train.epochs=1", "--overwrite")) == 0
    assert (out / "log.csv").read_text() != log_before


@pytest.mark.parametrize("extra,message", [
    (["--set", "train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    (["--set", "train.epochs=0"], "train.epochs must be >= 1, got 0"),
    (["--set", "data.audio_seconds=0"], "data.audio_seconds must be > 0"),
    (["--set", "seed=-1"], "seed must be in [0, 2**32), got -1"),
])
def test_train_config_values_are_checked(train_clips, tmp_path, caplog, extra, message, one_thread_cache):
    assert _train_script().cli(train_args(train_clips, tmp_path / "run", *extra)) == 2
    assert message in caplog.text and "Traceback" not in caplog.text


def test_train_non_yaml_config_and_unwritable_output_dir(train_clips, tmp_path, caplog, one_thread_cache):
    script = _train_script()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\n  lr: [1,\n")
    assert script.cli(["--config", str(bad)]) == 2
    assert "not a valid YAML config" in caplog.text
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 4)
    assert script.cli(["--config", str(binary)]) == 2
    assert "not a YAML config" in caplog.text or "not a valid YAML config" in caplog.text
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert script.cli(train_args(train_clips, a_file)) == 2
    assert "is a file, not a folder" in caplog.text
    assert script.cli(train_args(train_clips, a_file / "sub")) == 2
    assert "cannot write there" in caplog.text


def test_ctrl_c_in_training_saves_a_resumable_checkpoint(train_clips, tmp_path, caplog, one_thread_cache,
                                                        monkeypatch):
    from avlegrad.train.trainer import Trainer

    script = _train_script()
    out = tmp_path / "run"
    log_train = Trainer._log_train

    def interrupted_at_step_3(self, epoch, bar):
        log_train(self, epoch, bar)
        if self.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_log_train", interrupted_at_step_3)
    assert script.cli(train_args(train_clips, out, "--set", "train.epochs=5")) == 130
    assert "interrupted at step 3: saved" in caplog.text and "--resume" in caplog.text
    assert "Traceback" not in caplog.text
    monkeypatch.setattr(Trainer, "_log_train", log_train)
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["step"] == 3
    summary = script.main(train_args(train_clips, out, "--resume", "--set", "train.epochs=5"))
    assert summary["finished"] and summary["step"] == 5


# ------------------------------------------------------------------------------------------------
# 11. eval.py: one-line errors for bad values and places; Ctrl-C is one line
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (["--limit", "-1"], "--limit must be an integer >= 1, got -1"),
    (["--limit", "0"], "--limit must be an integer >= 1, got 0"),
    (["--save-overlays", "-5"], "--save-overlays must be an integer >= 0, got -5"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
])
def test_eval_bad_numbers_are_refused(bench, tmp_path, caplog, extra, message):
    assert eval_cli.main(text_argv(bench, tmp_path / "o", *extra)) == 2
    assert message in caplog.text
    assert not (tmp_path / "o" / "clips.jsonl").exists()


def test_eval_out_that_is_a_file_or_unwritable(bench, tmp_path, caplog):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert eval_cli.main(text_argv(bench, a_file, "--method", "center")) == 2
    assert "is a file, not a folder" in caplog.text
    assert eval_cli.main(text_argv(bench, a_file / "sub", "--method", "center")) == 2
    assert "cannot write results there" in caplog.text
    assert a_file.read_text() == "x"


def test_eval_ctrl_c_is_one_line_and_the_rerun_resumes(bench, tmp_path, caplog, monkeypatch):
    from avlegrad.eval import boxes

    out = tmp_path / "run"
    score = boxes.BoxScoring.score
    calls = []

    def interrupted(self, record, maps, i, out_dir):
        calls.append(record.clip_id)
        if len(calls) == 5:  # in the second batch: the first batch (4 clips) is on disk
            raise KeyboardInterrupt
        return score(self, record, maps, i, out_dir)

    monkeypatch.setattr(boxes.BoxScoring, "score", interrupted)
    assert eval_cli.main(text_argv(bench, out, "--method", "center")) == 130
    assert "interrupted" in caplog.text and "rerun the same command to resume" in caplog.text
    monkeypatch.setattr(boxes.BoxScoring, "score", score)
    assert eval_cli.main(text_argv(bench, out, "--method", "center")) == 0
    assert "4 already scored" in caplog.text


# ------------------------------------------------------------------------------------------------
# 6. --dataset synthetic --root DIR: generated only into an empty, new or synthetic folder
# ------------------------------------------------------------------------------------------------
def test_synthetic_generation_refuses_a_folder_of_other_files(tmp_path, caplog):
    import logging

    from avlegrad.data import create_dataset

    mine = tmp_path / "my_videos"
    mine.mkdir()
    (mine / "holiday.mp4").write_bytes(b"my own video")
    with pytest.raises(ValueError, match="holds files but no synthetic benchmark"):
        create_dataset("synthetic", mine)
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.mp4"]
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(mine), "--method", "center",
                          "--out", str(tmp_path / "o")]) == 2
    assert "holds files but no synthetic benchmark" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avlegrad"):
        empty = tmp_path / "empty"
        empty.mkdir()
        assert len(create_dataset("synthetic", empty)) == 32
        assert f"generating the synthetic benchmark (32 clips, seed 0) into {empty}" in caplog.text
        caplog.clear()
        assert len(create_dataset("synthetic", empty)) == 32  # its own set: read, not regenerated
        assert "generating" not in caplog.text


def test_an_interrupted_generation_is_completed(tmp_path, monkeypatch):
    from avlegrad.data import synthetic

    root = tmp_path / "syn"
    write = synthetic.write_video
    count = []

    def killed(*args, **kwargs):
        if len(count) == 2:
            raise KeyboardInterrupt
        count.append(1)
        return write(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_video", killed)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_synthetic(root, num_clips=4, seed=1)
    monkeypatch.setattr(synthetic, "write_video", write)
    assert synthetic.generate_synthetic(root, num_clips=4, seed=1) == root  # not refused: it is ours
    assert len(list((root / "videos").glob("*.mp4"))) == 4 and not (root / synthetic.GENERATING).exists()


# ------------------------------------------------------------------------------------------------
# 12. overlays: on the original frame, and for clips scored by an earlier run
# ------------------------------------------------------------------------------------------------
def test_overlays_are_drawn_on_the_original_frame(bench, tmp_path):
    from PIL import Image

    from avlegrad.data import create_dataset

    out = tmp_path / "run"
    assert eval_cli.main(text_argv(bench, out, "--save-overlays", "2")) == 0
    dataset = create_dataset("synthetic", bench[0])
    for path in sorted((out / "overlays").glob("*.png")):
        record = dataset[dataset.ids.index(path.stem)]
        h, w = record.frame.shape[:2]
        picture = np.asarray(Image.open(path).convert("RGB"))
        assert picture.shape == (h, 2 * w, 3)  # frame | overlay, each at the frame's own size
        assert np.array_equal(picture[:, :w], record.frame)


def test_overlays_of_a_non_square_frame_keep_its_aspect(tmp_path):
    from avlegrad.data.record import ClipRecord
    from avlegrad.eval import BoxScoring, EvalOptions

    frame = np.zeros((60, 160, 3), np.uint8)
    frame[:, 80:] = 255
    record = ClipRecord("x", frame, np.zeros(10, np.float32), 16000, boxes=[[0.5, 0.0, 1.0, 1.0]],
                        box_format="vggss")
    heat = torch.zeros(32, 32)
    heat[:, 16:] = 1  # the right half of the squashed square input = the right half of the frame
    BoxScoring(EvalOptions()).save_overlay(tmp_path / "x.png", record, heat, 32)
    import cv2

    picture = cv2.cvtColor(cv2.imread(str(tmp_path / "x.png")), cv2.COLOR_BGR2RGB)
    assert picture.shape == (60, 320, 3)
    overlay = picture[:, 160:].astype(int)
    assert overlay[30, 20, 2] > overlay[30, 20, 0]  # left: cold (blue) over black
    assert overlay[30, 140, 0] > overlay[30, 140, 2]  # right: hot (red) over white
    green = (overlay[:, :, 1] > 200) & (overlay[:, :, 0] < 60) & (overlay[:, :, 2] < 60)
    cols = np.nonzero(green.any(0))[0]
    assert cols.min() >= 78 and cols.max() <= 159  # the GT outline covers the right half only


def test_save_overlays_on_a_resumed_run_draws_the_scored_clips(bench, tmp_path, caplog):
    import logging

    out = tmp_path / "run"
    assert eval_cli.main(text_argv(bench, out)) == 0
    rows = rows_of(out)
    with caplog.at_level(logging.INFO, logger="avlegrad"):
        assert eval_cli.main(text_argv(bench, out, "--save-overlays", "3")) == 0
    assert "overlays of 3 clips scored by an earlier run" in caplog.text
    names = sorted(p.stem for p in (out / "overlays").glob("*.png"))
    assert names == sorted(r["clip_id"] for r in rows[:3])
    assert rows_of(out) == rows  # drawing them scores nothing again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avlegrad"):
        assert eval_cli.main(text_argv(bench, out, "--save-overlays", "3")) == 0  # already there: nothing to do
    assert "overlays of" not in caplog.text
    assert len(list((out / "overlays").glob("*.png"))) == 3


@pytest.mark.skipif(not WORLD_AUDIO.is_file(), reason="the shipped world audio encoder is absent")
def test_audio_checkpoint_copied_without_its_tower_names_the_missing_file(bench, tmp_path, caplog):
    import shutil

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(WORLD_AUDIO, alone / "audio.pt")
    argv = ["--dataset", "synthetic", "--root", str(bench[0]), "--audio-encoder", str(alone / "audio.pt"),
            "--workers", "0", "--out", str(tmp_path / "o")]
    assert eval_cli.main(argv) == 2
    assert f"{alone / 'clip.pt'} does not exist" in caplog.text and "copy clip.pt next to the checkpoint" in caplog.text
    shutil.copy(WORLD_CHECKPOINTS / "clip.pt", alone / "clip.pt")
    assert eval_cli.main(argv + ["--limit", "2"]) == 0  # with its tower beside it, it works


# ------------------------------------------------------------------------------------------------
# 11. Ctrl-C: one line in every command (a real SIGINT, sent from inside the command's own work)
# ------------------------------------------------------------------------------------------------
def _interrupted_run(target: str, attribute: str, command: list[str], cwd=REPO):
    """Run ``command`` (a script path, or ``-m module``) as ``__main__`` in a fresh interpreter, with
    ``target.attribute`` replaced by a function that sends SIGINT to the process (as Ctrl-C does)."""
    import os
    import subprocess
    import sys

    run = ("runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)" if command[0] == "-m"
           else "runpy.run_path(sys.argv[0], run_name='__main__')")
    code = (
        "import importlib, os, runpy, signal, sys, time\n"
        f"owner = importlib.import_module({target!r})\n"
        f"*path, name = {attribute!r}.split('.')\n"
        "for part in path: owner = getattr(owner, part)\n"
        "def interrupt(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)  # the main thread gets KeyboardInterrupt at once\n"
        "setattr(owner, name, interrupt)\n"
        "sys.argv = sys.argv[1:]\n"
        f"{run}\n")
    args = command[1:] if command[0] == "-m" else command
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ctrl_c_is_one_line_in_every_command(bench, tmp_path):
    # (train.py: test_ctrl_c_in_training_saves_a_resumable_checkpoint, through the same cli())
    from avlegrad.data.media import write_video

    root, config = bench
    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((32, 48, 3), 90, np.uint8)] * 6, 5, audio=0.3 * np.ones(16000, np.float32))
    runs = {
        "eval.py": ("avlegrad.eval.boxes", "BoxScoring.score",
                    [str(REPO / "eval.py"), *text_argv(bench, tmp_path / "eval", "--method", "center")]),
        "localize": ("avlegrad.visualize", "overlay",
                     ["-m", "avlegrad.localize", str(video), "-o", str(tmp_path / "loc"), "--target-text", "a dog",
                      "--model", str(config), "--pretrained", "none", "--quiet"]),
        "prepare_clips.py": ("avlegrad.data.media", "load_frame",
                             [str(REPO / "data" / "prepare_clips.py"), str(tmp_path), "--out",
                              str(tmp_path / "prepared"), "--workers", "1", "--quiet"]),
        "download_annotations.py": ("avlegrad.download", "download_file",
                                    [str(REPO / "data" / "download_annotations.py"), "--out", str(tmp_path / "ann")]),
    }
    for name, (target, attribute, command) in runs.items():
        result = _interrupted_run(target, attribute, command)
        assert result.returncode == 130, (name, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert "interrupted" in result.stderr, (name, result.stderr[-2000:])


# ------------------------------------------------------------------------------------------------
# 10. models LeGrad cannot explain are refused before running; empty batches give empty maps
# ------------------------------------------------------------------------------------------------
TINY_TIMM = dict(depth=2, embed_dim=64, num_heads=2, img_size=32, patch_size=8)
# timm variants whose adapter forward must be the model's own (checked below), and variants that
# failed deep inside torch before (AttributeError / RuntimeError / wrong prefix count): now refused
EXPLAINED_TIMM = ["vit_tiny_patch16_224", "deit3_small_patch16_224", "flexivit_small", "vit_base_patch16_siglip_224",
                  "vit_base_patch16_siglip_gap_224", "vit_medium_patch16_reg4_gap_256", "vit_base_patch16_clip_224",
                  "vit_so150m_patch16_reg4_map_256", "vit_base_patch16_224_miil", "vit_little_patch16_reg1_gap_256",
                  # timm Eva (RoPE) models: the Eva adapter (explain/eva.py)
                  "eva02_tiny_patch14_224", "vit_base_patch16_rope_reg1_gap_256", "vit_pe_core_tiny_patch16_384"]
REFUSED_TIMM = {"deit_tiny_distilled_patch16_224": "distillation token", "vit_base_patch16_xp_224": "parallel branches",
                "vit_small_patch16_18x2_224": "parallel branches", "vit_base_r50_s16_224": "HybridEmbed",
                "vit_base_patch16_rpn_224": "ResPostBlock", "vit_dwee_patch16_reg1_gap_256": "DiffAttention",
                "vit_base_patch16_rope_mixed_224": "RotaryEmbeddingMixed",
                "beit_base_patch16_224": "Beit", "vit_relpos_small_patch16_224": "VisionTransformerRelPos"}


def _tiny_timm(name):
    import timm

    kwargs = dict(TINY_TIMM)
    if name.startswith(("vit_base_r50", "beit")):
        kwargs.pop("patch_size")
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.mark.parametrize("name", EXPLAINED_TIMM)
def test_timm_variants_explained_are_the_models_own_forward(name):
    from avlegrad import LeGrad

    model = _tiny_timm(name)
    explainer = LeGrad(model)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = explainer.vit.pre_logits(explainer.vit.tokens_before(images, explainer.vit.num_layers))
        theirs = model.forward_head(model.forward_features(images), pre_logits=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    maps = explainer(images, torch.randn(2, explainer.vit.embed_dim))
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()


@pytest.mark.parametrize("name", sorted(REFUSED_TIMM))
def test_timm_variants_legrad_cannot_explain_are_refused_up_front(name):
    from avlegrad import LeGrad
    from avlegrad.explain import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match=REFUSED_TIMM[name]):
        LeGrad(_tiny_timm(name))


def test_empty_batches_give_empty_maps_for_every_explainer():
    from avlegrad import LeGrad
    from avlegrad.explain import create_explainer, list_explainers
    from conftest import make_tiny_clip

    model = make_tiny_clip()
    for name in list_explainers():
        explainer = create_explainer(name, model)
        assert explainer(torch.zeros(0, 3, 32, 48), torch.zeros(0, 32)).shape == (0, 32, 48), name
        assert explainer(torch.zeros(0, 3, 32, 32), torch.zeros(0, 3, 32)).shape == (0, 3, 32, 32), name
    classifier = LeGrad(_tiny_timm("vit_tiny_patch16_224"))
    assert classifier(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)).shape == (0, 32, 32)
    assert classifier(torch.zeros(0, 3, 32, 32), torch.zeros(0, 2, dtype=torch.long)).shape == (0, 2, 32, 32)
