"""train.py's sound mixing (train.mix): the mixing itself, the soft-label objective against a slow
reference written from its definition, the config checks."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlegrad.train.config import check_values, load_config
from avlegrad.train.mix import check_mix, mix_batch, mix_rng
from avlegrad.train.model import info_nce, soft_info_nce

MIX = {"prob": 1.0, "ratio": [0.25, 0.75], "gate_prob": 0.0, "gate_on_s": [0.25, 0.6], "gate_off_s": [0.2, 0.5]}


def slow_soft_info_nce(audio, image, weights, scale):
    """From the definition, one term at a time: audio row i's cross-entropy against the target
    distribution weights[i] over the images; image j's against column j of weights, normalised."""
    b = len(audio)
    logits = [[scale * float(audio[i] @ image[j]) for j in range(b)] for i in range(b)]
    a2i = 0.0
    for i in range(b):
        norm = math.log(sum(math.exp(logits[i][k]) for k in range(b)))
        a2i += -sum(float(weights[i, j]) * (logits[i][j] - norm) for j in range(b))
    i2a = 0.0
    for j in range(b):
        norm = math.log(sum(math.exp(logits[k][j]) for k in range(b)))
        total = sum(float(weights[k, j]) for k in range(b))
        i2a += -sum(float(weights[i, j]) / total * (logits[i][j] - norm) for i in range(b))
    return (a2i / b + i2a / b) / 2


def test_soft_info_nce_against_its_definition():
    torch.manual_seed(0)
    audio = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    image = F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    scale = torch.tensor(7.0, dtype=torch.float64)
    weights = torch.eye(6, dtype=torch.float64)
    weights[0, 0], weights[0, 3] = 0.3, 0.7  # row 0 holds picture 3 mostly
    weights[4, 4], weights[4, 0] = 0.6, 0.4
    got = soft_info_nce(audio, image, weights, scale)
    assert float(got) == pytest.approx(slow_soft_info_nce(audio, image, weights, 7.0), rel=1e-12)
    # one-hot weights: plain InfoNCE
    eye = torch.eye(6, dtype=torch.float64)
    assert float(soft_info_nce(audio, image, eye, scale)) == pytest.approx(float(info_nce(audio, image, scale)), rel=1e-12)
    # gathered over processes: these rows' terms in the whole batch, at their offset
    other_a = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    other_i = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    all_a, all_i = torch.cat([other_a, audio]), torch.cat([other_i, image])
    part = soft_info_nce(audio, image, eye, scale, all_a, all_i, offset=4)
    assert float(part) == pytest.approx(float(info_nce(audio, image, scale, all_a, all_i, offset=4)), rel=1e-12)


def test_mix_batch_mixes_pairs_with_their_weights():
    b, n, sr = 6, 4000, 16000
    waves = torch.randn(b, n)
    out, w = mix_batch(waves, check_mix(MIX), sr, mix_rng(0, 1, 2, 0))
    assert out.shape == waves.shape and w.shape == (b, b)
    torch.testing.assert_close(w.sum(1), torch.ones(b))
    for i in range(b):
        lam = float(w[i, i])
        (partner,) = [j for j in range(b) if j != i and w[i, j] > 0]  # exactly one other clip
        assert 0.25 <= lam <= 0.75
        torch.testing.assert_close(out[i], lam * waves[i] + (1 - lam) * waves[partner], atol=1e-6, rtol=0)
    again, w2 = mix_batch(waves, check_mix(MIX), sr, mix_rng(0, 1, 2, 0))  # the same draws
    assert torch.equal(again, out) and torch.equal(w2, w)
    other, _ = mix_batch(waves, check_mix(MIX), sr, mix_rng(0, 1, 3, 0))  # the next micro-batch: others
    assert not torch.equal(other, out)
    # nothing mixed: unchanged, identity weights; a batch of one too
    same, eye = mix_batch(waves, check_mix({**MIX, "prob": 0.0}), sr, mix_rng(0, 0, 0, 0))
    assert same is waves and torch.equal(eye, torch.eye(b))
    one, w1 = mix_batch(waves[:1], check_mix(MIX), sr, mix_rng(0, 0, 0, 0))
    assert torch.equal(one, waves[:1]) and torch.equal(w1, torch.eye(1))


def test_gated_sources_switch_off_in_spans():
    from avlegrad.data.world import intermittent_gate

    b, n, sr = 4, 16000, 16000
    waves = torch.ones(b, n)
    mix = check_mix({**MIX, "gate_prob": 1.0})
    out, w = mix_batch(waves, mix, sr, mix_rng(5, 0, 0, 0))
    # rebuilt with the same draws, in the same order: choice, partners, ratios, then per pair the gates
    rng = mix_rng(5, 0, 0, 0)
    chosen = np.flatnonzero(rng.random(b) < 1.0)
    partners = (chosen + rng.integers(1, b, size=len(chosen))) % b
    lams = rng.uniform(0.25, 0.75, size=len(chosen))
    for i, p, lam in zip(chosen, partners, lams):
        gates = []
        for _ in range(2):
            assert rng.random() < 1.0
            gates.append(intermittent_gate(n, sr, rng, (0.25, 0.6), (0.2, 0.5)))
        expect = lam * gates[0] + (1 - lam) * gates[1]
        np.testing.assert_allclose(out[i].numpy(), expect, atol=1e-6)
        assert w[i, i] == pytest.approx(lam) and w[i, p] == pytest.approx(1 - lam)
    assert (out < 0.99).any()  # some samples are switched off


def test_mix_config_is_checked(tmp_path):
    cfg = load_config(None, ["train.mix.prob=1.0", "train.mix.gate_prob=0.5"])
    check_values(cfg)
    assert cfg["train"]["mix"]["ratio"] == [0.25, 0.75]  # the other keys keep their defaults
    for override, key in (("train.mix.prob=1.5", "train.mix.prob"), ("train.mix.ratio=[0.8, 0.2]", "train.mix.ratio"),
                          ("train.mix.ratio=[0.0, 0.5]", "train.mix.ratio"),
                          ("train.mix.gate_on_s=[0.3]", "train.mix.gate_on_s"),
                          ("train.mix.gate_off_s=[0.00001, 0.00001]", "train.mix.gate_off_s"),  # 0 samples
                          ("train.mix=0.5", "train.mix"), ("train.mix=null", "train.mix")):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            check_values(load_config(None, [override]))
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["train.mix.probability=1"])
