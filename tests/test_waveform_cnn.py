"""The waveform-cnn audio encoder (avlegrad/audio/waveform_cnn.py): a one-file encoder of the registry."""
import torch
import torch.nn.functional as F

from avlegrad.audio import create_audio_encoder, training_contract

KW = dict(embed_dim=16, channels=(4, 8, 8), kernels=(16, 8, 4), strides=(4, 2, 2), pools=(4, 1, 1),
          clip_model="tiny", clip_pretrained=None)


def reference(encoder, waves):
    """The definition, written out layer by layer with torch.nn.functional (eval mode)."""
    cfg = encoder.config
    x = waves[:, None]
    convs = [m for m in encoder.features if isinstance(m, torch.nn.Conv1d)]
    norms = [m for m in encoder.features if isinstance(m, torch.nn.BatchNorm1d)]
    for conv, bn, k, s, p in zip(convs, norms, cfg["kernels"], cfg["strides"], cfg["pools"]):
        x = F.conv1d(x, conv.weight, conv.bias, stride=s, padding=k // 2)
        x = (x - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        x = torch.relu(x * bn.weight[:, None] + bn.bias[:, None])
        if p > 1:
            x = F.max_pool1d(x, p, ceil_mode=True)
    e = x.mean(-1) @ encoder.head.weight.T + encoder.head.bias
    return e / e.norm(dim=-1, keepdim=True)


def test_matches_its_definition_and_is_registered():
    torch.manual_seed(0)
    encoder = create_audio_encoder("waveform-cnn", **KW)
    for bn in (m for m in encoder.features if isinstance(m, torch.nn.BatchNorm1d)):  # non-trivial statistics
        bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    waves = 0.1 * torch.randn(3, 3000)
    with torch.no_grad():
        got = encoder(waves)
        torch.testing.assert_close(got, reference(encoder, waves), atol=1e-5, rtol=1e-5)
        assert got.shape == (3, 16) and encoder(waves[:, :1]).shape == (3, 16)  # one sample is enough
    assert training_contract("waveform-cnn").trainable and training_contract("waveform-cnn").embed_dim is None


def test_trains_and_round_trips_a_checkpoint(tmp_path):
    """A few optimiser steps on a contrastive objective lower the loss; a saved state dict rebuilds
    the same encoder through the registry."""
    torch.manual_seed(0)
    encoder = create_audio_encoder("waveform-cnn", **KW).train()
    waves = torch.stack([torch.sin(2 * torch.pi * f * torch.arange(4000) / 16000) for f in (220, 440, 880, 1760)])
    targets = F.normalize(torch.randn(4, 16), dim=-1)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = encoder(waves) @ targets.T / 0.1
        loss = F.cross_entropy(logits, torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    encoder.eval()
    torch.save(encoder.state_dict(), tmp_path / "w.pt")
    again = create_audio_encoder("waveform-cnn", checkpoint=tmp_path / "w.pt", **KW)
    with torch.no_grad():
        torch.testing.assert_close(again(waves), encoder(waves))
