"""The offline world's audio ground truth and the audio-side metrics, against slow references."""
import numpy as np
import pytest
import torch

from avlegrad.audio.frontend import LogMel
from avlegrad.data import world
from avlegrad.metrics_audio import loudness_prior, relevance_curve, tf_energy, time_auc


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
    assert "loudness prior" in capsys.readouterr().out
    # the audio side needs the world's ground truth
    assert eval_script.main(["--dataset", "vggsound", "--root", str(root), "--explain", "audio"]) == 2
