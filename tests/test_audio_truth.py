"""The offline world's audio ground truth and the audio-side metrics, against slow references."""
import numpy as np
import pytest
import torch

from avlegrad.audio.frontend import LogMel
from avlegrad.data import world
from avlegrad.metrics_audio import loudness_prior, relevance_curve, tf_energy, time_auc, time_auc_against


def slow_auc(scores, labels):
    """Mann-Whitney: the share of (positive, negative) pairs ranked right, ties one half."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


def test_time_auc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(8, 60))
        curve = rng.integers(0, 4, size=n).astype(float)  # many ties
        active = rng.random(n) < rng.uniform(0.2, 0.8)
        if active.sum() < 3 or (~active).sum() < 3:
            assert time_auc(curve, active) is None
            continue
        assert time_auc(curve, active) == pytest.approx(slow_auc(curve, active), abs=1e-6)
    assert time_auc(np.arange(10.0), np.arange(10) >= 5) == pytest.approx(1.0)
    assert time_auc(np.ones(10), np.arange(10) >= 5) == pytest.approx(0.5)
    assert time_auc(np.arange(10.0), np.ones(10, bool)) is None  # heard in every frame: undefined
    with pytest.raises(ValueError, match="differ in length"):
        time_auc(np.arange(5.0), np.ones(6, bool))


def test_time_auc_against_some_negatives_and_the_max_band_curve():
    """Against the pairwise reference on the positives and the chosen negatives only (ties, frames
    left out); the max-band curve is the per-frame maximum."""
    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(10, 60))
        curve = rng.integers(0, 4, size=n).astype(float)
        kind = rng.integers(0, 3, size=n)  # 0: active, 1: negative, 2: left out
        active, negatives = kind == 0, kind == 1
        got = time_auc_against(curve, active, negatives)
        if active.sum() < 3 or negatives.sum() < 3:
            assert got is None
            continue
        keep = kind < 2
        assert got == pytest.approx(slow_auc(curve[keep], active[keep]), abs=1e-6)
    # the left-out frames do not count: a curve that ranks them anywhere scores the same
    active = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    negatives = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0], bool)
    for left_out in (0.0, 5.0, 10.0):
        assert time_auc_against([3, 4, 5, 0, 1, 2, left_out, left_out, left_out], active, negatives) == 1.0
    assert time_auc_against(np.arange(9.0), active, np.zeros(9, bool)) is None  # no negatives
    with pytest.raises(ValueError, match="NaN"):  # also in a frame left out
        time_auc_against([3, 4, 5, 0, 1, 2, np.nan, 0, 0], active, negatives)
    with pytest.raises(ValueError, match="both active and negative"):
        time_auc_against(np.arange(6.0), np.ones(6, bool), np.ones(6, bool))
    with pytest.raises(ValueError, match="differ in length"):
        time_auc_against(np.arange(6.0), np.ones(6, bool), np.zeros(5, bool))
    m = rng.random((5, 7))
    np.testing.assert_array_equal(relevance_curve(m, "max"), [max(m[:, t]) for t in range(7)])
    np.testing.assert_allclose(relevance_curve(m), [sum(m[:, t]) / 5 for t in range(7)])
    with pytest.raises(ValueError, match="unknown reduction over mel bands 'median'"):
        relevance_curve(m, "median")


def test_tf_energy_and_prior_against_definition():
    rng = np.random.default_rng(1)
    m = rng.random((6, 9))
    mask = rng.random((6, 9)) < 0.3
    slow = sum(m[i, j] for i in range(6) for j in range(9) if mask[i, j]) / sum(m[i, j] for i in range(6) for j in range(9))
    assert tf_energy(m, mask) == pytest.approx(slow)
    assert tf_energy(np.zeros((6, 9)), mask) == pytest.approx(mask.mean())  # a constant map: uniform
    assert tf_energy(mask.astype(float), mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        tf_energy(m - 0.5, mask)
    with pytest.raises(ValueError, match="differ in shape"):
        tf_energy(m, mask[:, :5])
    np.testing.assert_allclose(relevance_curve(m), [np.mean(m[:, j]) for j in range(9)])
    log_mel = rng.normal(size=(6, 9))
    prior = loudness_prior(log_mel)
    assert prior.min() == 0 and prior.max() == 1
    np.testing.assert_allclose(prior, (log_mel - log_mel.min()) / (log_mel.max() - log_mel.min()))
    assert not loudness_prior(np.full((3, 4), -5.0)).any()


def _scene(rng, sounding_class):
    for _ in range(200):
        scene = world.make_scene(rng, 96, num_objects=1)
        if scene.sounding_object.name == sounding_class:
            return scene
    raise AssertionError("no scene")


def test_parts_mix_to_the_clip_and_keep_the_draws():
    """scene_audio_parts draws exactly what scene_audio drew, so every existing clip is unchanged."""
    for seed in range(6):
        rng1, rng2 = np.random.default_rng(seed), np.random.default_rng(seed)
        scene1, scene2 = world.make_scene(rng1, 96), world.make_scene(rng2, 96)
        audio, distractor = world.scene_audio(scene1, 1.0, 16000, rng1, distractor_prob=0.5)
        parts = world.scene_audio_parts(scene2, 1.0, 16000, rng2, distractor_prob=0.5)
        assert parts["distractor_name"] == distractor
        np.testing.assert_array_equal(world.mix_parts(parts), audio)
        assert rng1.random() == rng2.random()  # the generator is left in the same state


def test_object_mask_knows_when_and_where():
    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    rng = np.random.default_rng(3)
    # noise bursts, 6 per second: active about half the frames, the gaps silent
    scene = _scene(rng, "blue square")
    parts = world.scene_audio_parts(scene, 2.0, 16000, rng, distractor_prob=0.0)
    mask, active = world.object_tf_mask(parts, fe)
    assert mask.shape == (64, 201) and active.shape == (201,)
    assert 0.3 < active.mean() < 0.75
    # a frame is active exactly where the object's power beats the rest somewhere (slow check)
    obj = fe.mel(torch.from_numpy(parts["object"])[None])[0].double().numpy()
    rest = fe.mel(torch.from_numpy(parts["noise"] + parts["distractor"])[None])[0].double().numpy()
    floor = obj.max() * 10 ** (-world.TF_FLOOR_DB / 10)
    for t in range(0, 201, 7):
        expect = any(obj[f, t] > rest[f, t] and obj[f, t] >= floor and obj[f, t] > 0 for f in range(64))
        assert bool(active[t]) == expect
    # a steady 440 Hz tone (+ harmonics): every frame but the fades, only a few low mel bands
    scene = _scene(rng, "red disc")
    parts = world.scene_audio_parts(scene, 2.0, 16000, rng, distractor_prob=0.0)
    mask, active = world.object_tf_mask(parts, fe)
    assert active[10:-10].all()
    assert mask.mean() < 0.3 and mask[:20].sum() > mask[40:].sum()
    # a loud distractor takes its bins away from the object
    parts_d = dict(parts, distractor=100 * parts["object"], distractor_name="x")
    mask_d, _ = world.object_tf_mask(parts_d, fe)
    assert not mask_d.any()


def test_distractor_activity_is_the_swapped_rule():
    """The frames where the distractor is heard: some bin where its power beats the object's plus
    the noise's, within the floor of its loudest bin (slow check); none without a distractor."""
    from avlegrad.data.synthetic import mixture_parts

    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    params = {"version": 3, "num_clips": 3, "seed": 4, "size": 64, "duration": 2.0, "fps": 10, "sample_rate": 16000,
              "classes": list(world.CLASSES), "object_counts": [0.1, 0.3, 0.6], "center_spread": 0.2,
              "distractor_prob": 0.3}
    for index in range(3):
        parts = mixture_parts(index, params)
        heard = world.distractor_activity(parts, fe)
        _, active = world.object_tf_mask(parts, fe)
        assert heard.shape == active.shape == (201,) and heard.dtype == bool
        p_dist = fe.mel(torch.from_numpy(parts["distractor"])[None])[0].double().numpy()
        p_rest = fe.mel(torch.from_numpy(parts["object"] + parts["noise"])[None])[0].double().numpy()
        floor = p_dist.max() * 10 ** (-world.TF_FLOOR_DB / 10)
        for t in range(201):
            expect = any(p_dist[f, t] > p_rest[f, t] and p_dist[f, t] >= floor and p_dist[f, t] > 0 for f in range(64))
            assert bool(heard[t]) == expect
        assert heard.any() and (~heard & ~active).any()  # both sources pause: some frames hold neither
    rng = np.random.default_rng(3)
    parts = world.scene_audio_parts(_scene(rng, "red disc"), 2.0, 16000, rng, distractor_prob=0.0)
    assert parts["distractor_name"] is None and not world.distractor_activity(parts, fe).any()
    assert world.distractor_activity(parts, fe).shape == world.object_tf_mask(parts, fe)[1].shape  # same grid


def test_audio_truth_of_a_generated_set(tmp_path):
    from avlegrad.data.synthetic import audio_truth, generate_synthetic, make_clip
    import json

    root = generate_synthetic(tmp_path / "syn", num_clips=3, seed=5, size=64, duration=1.0)
    manifest = json.loads((root / "synthetic.json").read_text())
    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    truth = audio_truth(root, manifest["clips"], fe)
    for i, clip_id in enumerate(manifest["clips"]):
        mask, active = truth[clip_id]
        expect = world.object_tf_mask(make_clip(i, manifest["params"])["audio_parts"], fe)
        np.testing.assert_array_equal(mask, expect[0])
        assert mask.shape == (64, 101)
        with_other = audio_truth(root, [clip_id], fe, distractor=True)[clip_id]
        np.testing.assert_array_equal(with_other[1], active)
        np.testing.assert_array_equal(with_other[2], world.distractor_activity(
            make_clip(i, manifest["params"])["audio_parts"], fe))
    with pytest.raises(ValueError, match="'nope' is not in the synthetic set"):
        audio_truth(root, ["nope"], fe)
    with pytest.raises(ValueError, match="sample rate"):
        audio_truth(root, manifest["clips"], LogMel(8000, n_fft=256, n_mels=32))


def test_eval_explain_audio_runs_offline(tmp_path, capsys):
    """`eval.py --dataset synthetic --explain audio` on a few generated clips: the shipped audio ViT,
    trained and untrained, beside the loudness prior; summary keys tf_energy and time_auc."""
    import json
    import sys
    from pathlib import Path

    from avlegrad.eval.audio import AUDIO_VIT_FILE
    from avlegrad.world_clip import WORLD_CHECKPOINTS

    if not (WORLD_CHECKPOINTS / AUDIO_VIT_FILE).is_file():
        pytest.skip("avlegrad/assets/world/audio_vit.pt is not present")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import eval as eval_script

    from avlegrad.data.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path / "syn", num_clips=4, seed=0)
    out = tmp_path / "out"
    assert eval_script.main(["--dataset", "synthetic", "--root", str(root), "--explain", "audio",
                             "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and set(summary["methods"]) == {"LeGrad, trained", "LeGrad, untrained", "loudness prior"}
    assert 0 <= summary["tf_energy"] <= 1
    assert summary["time_auc"] is None or 0 <= summary["time_auc"] <= 1
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("tf_energy" in r["loudness prior"] for r in rows)
    # vs other / vs silence are the mixtures' (here the distractor sounds throughout: they would
    # divide clips, not frames)
    assert all(r[m]["time_auc_other"] is None and r[m]["time_auc_silence"] is None for r in rows for m in summary["methods"])
    printed = capsys.readouterr().out
    assert "loudness prior" in printed and "max-band" in printed and "vs silence" not in printed
    # the audio-mixture split: the same pictures, the split's sounds and ground truth
    out = tmp_path / "out-mixture"
    assert eval_script.main(["--dataset", "synthetic", "--root", str(root), "--explain", "audio",
                             "--split", "audio-mixture", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and summary["split"] == "audio-mixture" and summary["n_with_distractor"] == 0
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    stamp = json.loads((root / "audio_mixture.json").read_text())["clips"]
    assert all(r["distractor"] == stamp[r["clip"]]["distractor"] and -5 <= r["snr_db"] <= 5 for r in rows)
    printed = capsys.readouterr().out
    assert "synthetic (audio-mixture)" in printed and "time_auc ceiling" in printed
    # the ceiling of the 8-frame patch columns bounds LeGrad's time_auc on every clip (its curve is
    # constant over each column), and it is each clip's own bound
    from avlegrad.data.synthetic import audio_truth
    from avlegrad.metrics_audio import time_auc_bound

    assert summary["time_auc_ceiling"]["patch_frames"] == 8
    truth = audio_truth(root, [r["clip"] for r in rows], LogMel(16000, n_fft=512, hop_length=160, n_mels=64),
                        split="audio-mixture")
    for r in rows:
        if r["time_auc_ceiling"] is None:
            continue
        assert r["time_auc_ceiling"] == pytest.approx(time_auc_bound(truth[r["clip"]][1], 8))
        for name in ("LeGrad, trained", "LeGrad, untrained"):
            assert r[name]["time_auc"] <= r["time_auc_ceiling"] + 1e-6
    # the loudness prior's four time scores of each clip, from the definitions (pairwise reference)
    from avlegrad.data.media import load_audio

    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    truth = audio_truth(root, [r["clip"] for r in rows], fe, split="audio-mixture", distractor=True)
    scored = 0
    for r in rows:
        _, active, other = truth[r["clip"]]
        assert r["other_share"] == pytest.approx((other & ~active).mean(), abs=1e-4)
        wave, _ = load_audio(root / "audio_mixture" / f"{r['clip']}.wav", 16000)
        prior = loudness_prior(fe(torch.from_numpy(np.ascontiguousarray(wave))[None])[0, 0])
        mean_curve, max_curve = prior.mean(axis=0), prior.max(axis=0)
        expect = {"time_auc": (mean_curve, active, ~active), "time_auc_max": (max_curve, active, ~active),
                  "time_auc_other": (mean_curve, active, other & ~active),
                  "time_auc_silence": (mean_curve, active, ~other & ~active)}
        for key, (curve, pos, neg) in expect.items():
            got = r["loudness prior"][key]
            if pos.sum() < 3 or neg.sum() < 3:
                assert got is None
            else:
                keep = pos | neg
                assert got == pytest.approx(slow_auc(curve[keep], pos[keep]), abs=1e-4), (r["clip"], key)
                scored += key in ("time_auc_other", "time_auc_silence")
    assert scored >= 2  # the reference check is not vacuous
    assert "vs silence" in printed and "max-band" in printed
    assert eval_script.main(["--dataset", "synthetic", "--root", str(root), "--explain", "audio",
                             "--split", "nope", "--out", str(out)]) == 2
    # the untrained control is the given checkpoint's own config at its initialisation (here an
    # 8 x 4-patch ViT's, itself untrained: both rows are the same encoder), not the shipped config's
    from avlegrad.world_clip import save_untrained_audio_encoder

    u84 = save_untrained_audio_encoder(Path(__file__).resolve().parents[1] / "configs" / "world_audio_vit.yaml",
                                       tmp_path / "u84.pt", ["encoder.backbone_kwargs.patch_size=[8,4]"],
                                       clip_file=WORLD_CHECKPOINTS / "clip.pt")
    out = tmp_path / "out-u84"
    assert eval_script.main(["--dataset", "synthetic", "--root", str(root), "--explain", "audio", "--limit", "2",
                             "--audio-encoder", str(u84), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["LeGrad, trained"] == r["LeGrad, untrained"] for r in rows)
    with pytest.raises(SystemExit):  # the image side has no such split
        eval_script.main(["--dataset", "synthetic", "--root", str(root), "--split", "audio-mixture"])
    assert "add --explain audio" in capsys.readouterr().err
    # the audio side needs the world's ground truth
    assert eval_script.main(["--dataset", "vggsound", "--root", str(root), "--explain", "audio"]) == 2


# --------------------------------------------------------------------------------------------
# The audio-mixture split
# --------------------------------------------------------------------------------------------

def _spans(gate):
    """(state, length in samples) of the runs of a gate: on where > 0."""
    on = gate > 0
    edges = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    bounds = np.concatenate([[0], edges, [len(gate)]])
    return [(bool(on[a]), b - a, a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def test_intermittent_gate_spans_and_fades():
    sr = 16000
    ramp = int(world.MIXTURE_RAMP_S * sr)
    for seed in range(8):
        gate = world.intermittent_gate(3 * sr, sr, np.random.default_rng(seed))
        np.testing.assert_array_equal(gate, world.intermittent_gate(3 * sr, sr, np.random.default_rng(seed)))
        assert gate.shape == (3 * sr,) and gate.min() >= 0 and gate.max() <= 1
        spans = _spans(gate)
        assert any(s for s, *_ in spans) and any(not s for s, *_ in spans)
        for state, length, a, b in spans[1:-1]:  # whole spans (the first and last are cut by the clip)
            lo, hi = (world.MIXTURE_ON_S if state else world.MIXTURE_OFF_S)
            assert lo * sr - 2 <= length <= hi * sr + 2, (seed, state, length)
            if state:  # linear fades in and out, fully on between them
                np.testing.assert_allclose(gate[a:a + ramp], np.arange(1, ramp + 1) / ramp)
                assert (gate[a + ramp:b - ramp] == 1).all()


def test_mixture_parts_against_their_definition():
    """The split's parts, rebuilt from the definition with the same draws: the clip's own object
    sound and noise, the object gated, an off-screen class gated on its own at the drawn ratio of
    mean powers, every part scaled alike so that nothing clips."""
    from avlegrad.data.synthetic import MIXTURE_STREAM, make_clip, mixture_parts

    params = {"version": 3, "num_clips": 8, "seed": 11, "size": 64, "duration": 1.5, "fps": 10, "sample_rate": 16000,
              "classes": list(world.CLASSES), "object_counts": [0.1, 0.3, 0.6], "center_spread": 0.2,
              "distractor_prob": 0.3}
    sr, ratios = 16000, []
    for index in range(8):
        clip = make_clip(index, params)
        parts = mixture_parts(index, params)
        rng = np.random.default_rng([11, index, MIXTURE_STREAM])
        obj0 = clip["audio_parts"]["object"].astype(np.float64)
        obj = obj0 * world.intermittent_gate(len(obj0), sr, rng)
        off = [c for c in world.CLASSES if c not in {o["class"] for o in clip["objects"]}]
        name = off[int(rng.integers(0, len(off)))]
        other = world.class_sound(name, 1.5, sr, rng).astype(np.float64)
        snr = rng.uniform(-5, 5)
        other = other * np.sqrt(np.mean(obj0 ** 2) / np.mean(other ** 2) / 10 ** (snr / 10))
        other = other * world.intermittent_gate(len(obj0), sr, rng)
        noise = clip["audio_parts"]["noise"].astype(np.float64)
        scale = min(1.0, 0.95 / np.abs(obj + noise + other).max())
        assert parts["distractor_name"] == name and name not in [o["class"] for o in clip["objects"]]
        assert parts["snr_db"] == pytest.approx(snr, abs=1e-3)
        np.testing.assert_allclose(parts["object"], obj * scale, atol=1e-6)
        np.testing.assert_allclose(parts["distractor"], other * scale, atol=1e-6)
        np.testing.assert_allclose(parts["noise"], noise * scale, atol=1e-6)
        mix = world.mix_parts(parts)
        assert np.abs(mix).max() <= 0.95 + 1e-6
        np.testing.assert_allclose(mix, parts["object"] + parts["noise"] + parts["distractor"], atol=1e-6)  # unclipped
        ratios.append(snr)
    assert min(ratios) >= -5 and max(ratios) <= 5 and max(ratios) - min(ratios) > 3


def test_mixture_truth_leaves_the_distractor_out():
    """On the split's parts: the mask holds no bin where the distractor is at least as loud as the
    object, no frame where the object's gate silences it is active, and the mask is what
    object_tf_mask gives (slow check on a few frames)."""
    from avlegrad.data.synthetic import make_clip, mixture_parts

    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    params = {"version": 3, "num_clips": 6, "seed": 4, "size": 64, "duration": 2.0, "fps": 10, "sample_rate": 16000,
              "classes": list(world.CLASSES), "object_counts": [0.1, 0.3, 0.6], "center_spread": 0.2,
              "distractor_prob": 0.3}
    silent_frames = 0
    for index in range(6):
        parts = mixture_parts(index, params)
        mask, active = world.object_tf_mask(parts, fe)
        assert mask.shape == (64, 201)
        p_obj = fe.mel(torch.from_numpy(parts["object"])[None])[0].double().numpy()
        p_dist = fe.mel(torch.from_numpy(parts["distractor"])[None])[0].double().numpy()
        p_rest = fe.mel(torch.from_numpy(parts["distractor"] + parts["noise"])[None])[0].double().numpy()
        assert not mask[p_rest >= p_obj].any()  # the rest's bins are never the object's
        # nor the distractor's (a 3 dB margin: the noise may cancel a little of it in a bin)
        assert not mask[p_dist >= 2 * p_obj].any()
        assert mask.any() and (p_dist > 2 * p_obj).any()
        # frames whose whole analysis window the object's gate silences are inactive
        obj = np.pad(parts["object"], 256)  # the front-end centres its 512-sample windows
        for t in range(201):
            if not np.any(obj[t * 160:t * 160 + 512]):
                silent_frames += 1
                assert not active[t]
        # the clip's own object sound, silenced in the gate's pauses: the same sound where it plays
        clip_obj = make_clip(index, params)["audio_parts"]["object"]
        playing = np.abs(parts["object"]) > 0
        ratio = parts["object"][playing] / clip_obj[playing]
        assert ratio.max() <= 1 + 1e-5 and ratio.min() >= 0
    assert silent_frames > 50  # the object pauses


def test_audio_mixture_split_written_once_and_deterministic(tmp_path):
    import json

    from avlegrad.data.media import load_audio
    from avlegrad.data.synthetic import (MIXTURE_DIR, audio_truth, ensure_audio_mixture, generate_synthetic,
                                         mixture_parts)

    roots = [generate_synthetic(tmp_path / name, num_clips=3, seed=5, size=64, duration=1.0) for name in "ab"]
    videos = {p.name: p.read_bytes() for p in (roots[0] / "videos").iterdir()}
    manifest = (roots[0] / "synthetic.json").read_text()
    for root in roots:
        assert ensure_audio_mixture(root) == root
    # the standard clips are untouched; both folders hold the same split, byte for byte
    assert {p.name: p.read_bytes() for p in (roots[0] / "videos").iterdir()} == videos
    assert (roots[0] / "synthetic.json").read_text() == manifest
    params = json.loads(manifest)["params"]
    stamp = json.loads((roots[0] / f"{MIXTURE_DIR}.json").read_text())
    fe = LogMel(16000, n_fft=512, hop_length=160, n_mels=64)
    truth = audio_truth(roots[0], list(stamp["clips"]), fe, split="audio-mixture")
    for index, clip_id in enumerate(json.loads(manifest)["clips"]):
        wav = roots[0] / MIXTURE_DIR / f"{clip_id}.wav"
        assert wav.read_bytes() == (roots[1] / MIXTURE_DIR / f"{clip_id}.wav").read_bytes()
        parts = mixture_parts(index, params)
        audio, sr = load_audio(wav)
        assert sr == 16000
        np.testing.assert_allclose(audio, world.mix_parts(parts), atol=1 / 32768 + 1e-6)  # 16-bit
        assert stamp["clips"][clip_id] == {"distractor": parts["distractor_name"], "snr_db": parts["snr_db"]}
        expect = world.object_tf_mask(parts, fe)
        np.testing.assert_array_equal(truth[clip_id][0], expect[0])
        np.testing.assert_array_equal(truth[clip_id][1], expect[1])
    # once: a second call rewrites nothing; a missing file is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (roots[0] / MIXTURE_DIR).iterdir()}
    ensure_audio_mixture(roots[0])
    assert {p: p.stat().st_mtime_ns for p in (roots[0] / MIXTURE_DIR).iterdir()} == mtimes
    first = next(iter(mtimes))
    first.unlink()
    ensure_audio_mixture(roots[0])
    assert first.is_file()
    with pytest.raises(ValueError, match="unknown audio split 'mix'"):
        audio_truth(roots[0], list(stamp["clips"]), fe, split="mix")
    assert "audio_mixture" not in params  # the standard sets' parameters are unchanged
    # a set whose clips carry the split's sound in the mp4 itself (training data): same pictures
    mixed = generate_synthetic(tmp_path / "m", num_clips=3, seed=5, size=64, duration=1.0, audio_mixture=True)
    m_manifest = json.loads((mixed / "synthetic.json").read_text())
    assert m_manifest["params"] == {**params, "audio_mixture": True}
    assert m_manifest["clips"] == json.loads(manifest)["clips"]
    own = audio_truth(mixed, m_manifest["clips"], fe)  # its own sound's truth is the split's
    for index, clip_id in enumerate(m_manifest["clips"]):
        np.testing.assert_array_equal(own[clip_id][0], truth[clip_id][0])
        assert m_manifest["scenes"][index]["distractor"] == stamp["clips"][clip_id]["distractor"]
        decoded, _ = load_audio(mixed / "videos" / f"{clip_id}.mp4", 16000)
        ref, _ = load_audio(roots[0] / MIXTURE_DIR / f"{clip_id}.wav")
        n = min(len(decoded), len(ref))
        assert np.corrcoef(decoded[:n], ref[:n])[0, 1] > 0.98  # AAC: lossy, sample-aligned


def test_time_auc_bound_is_the_best_block_constant_curve():
    """Against brute force: every assignment of ranks (ties included) to the blocks of small
    activities; the bound is the best of them and is reached."""
    import itertools

    from avlegrad.metrics_audio import block_oracle_curve, time_auc_bound

    rng = np.random.default_rng(3)
    for trial in range(12):
        n, width, offset = int(rng.integers(9, 14)), int(rng.integers(3, 5)), int(rng.integers(0, 3))
        active = rng.random(n) < 0.5
        if active.sum() < 3 or (~active).sum() < 3:
            assert time_auc_bound(active, width, offset) is None
            continue
        edges = sorted({0, *range(offset, n, width), n})
        blocks = list(zip(edges[:-1], edges[1:]))
        best = 0.0
        for ranks in itertools.product(range(len(blocks)), repeat=len(blocks)):  # ties allowed
            curve = np.empty(n)
            for (lo, hi), r in zip(blocks, ranks):
                curve[lo:hi] = r
            best = max(best, slow_auc(curve, active))
        assert time_auc_bound(active, width, offset) == pytest.approx(best, abs=1e-6)  # torchmetrics: float32
    # width 1: every frame its own block, the activity itself
    active = np.arange(10) % 3 == 0
    assert time_auc_bound(active, 1) == pytest.approx(1.0)
    np.testing.assert_array_equal(block_oracle_curve(active, 1), active.astype(float))
    # blocks straddling the events: one active frame in each block of 2 -> no block ranks above another
    assert time_auc_bound(np.arange(12) % 2 == 0, 2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="block width"):
        block_oracle_curve(active, 0)
