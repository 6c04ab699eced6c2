"""Audio encoders: front-end numerics, the embedding contract, the registry, files and checkpoints."""
import math

import librosa
import numpy as np
import pytest
import torch

from avlegrad.audio import (AudioEncoder, CheckpointError, LogMel, create_audio_encoder,
                            list_audio_encoders, register_audio_encoder)
from avlegrad.audio import factory
from avlegrad.models import create_clip_tower
from avlegrad.audio.factory import encoder_checkpoint, save_checkpoint_file
from avlegrad.data.media import load_audio, write_audio, write_video

TINY = dict(backbone="test_convnext", embed_dim=16, frontend={"n_fft": 512, "n_mels": 32}, clip_model="ViT-B-16",
            clip_pretrained="openai")


def reference_log_mel(x: torch.Tensor, sr: int, n_fft: int, hop: int, n_mels: int, floor: float = 1e-6):
    # torchaudio's settings: periodic Hann window of n_fft, centred frames, reflect padding, power 2
    spec = torch.stft(x.double(), n_fft, hop_length=hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    fb = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, htk=True, norm=None)).double()
    mel = fb @ spec
    return mel, torch.log(mel.clamp(min=floor))


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", [(16000, 1024, 160, 128), (22050, 512, 128, 64)])
def test_log_mel_matches_stft_and_librosa_filters(sr, n_fft, hop, n_mels):
    g = torch.Generator().manual_seed(0)
    t = torch.arange(sr) / sr
    x = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(sr, generator=g),
                     0.3 * torch.randn(sr, generator=g)]).float()
    frontend = LogMel(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels) if n_fft != 1024 else LogMel()
    out = frontend(x)
    assert out.shape == (2, 1, n_mels, 1 + sr // hop)
    mel_ref, log_ref = reference_log_mel(x, sr, n_fft, hop, n_mels)
    mel = out.squeeze(1).double().exp()
    assert mel_ref.min() > 1e-6  # the input has power in every band, so the floor plays no part
    assert torch.allclose(mel, mel_ref, rtol=1e-4, atol=0)
    assert torch.allclose(out.squeeze(1).double(), log_ref, rtol=0, atol=1e-4)
    assert torch.equal(frontend(x), out)  # deterministic


def test_log_mel_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        LogMel()(torch.zeros(16000))
    with pytest.raises(ValueError, match="at least 513"):
        LogMel()(torch.zeros(1, 100))


def test_embeddings_unit_norm_and_batch_independent():
    torch.manual_seed(0)
    enc = create_audio_encoder("timm", embed_dim=24)  # resnet18 with BatchNorm: eval mode must not mix batch mates
    assert not enc.training and enc.embed_dim == 24 and enc.sample_rate == 16000
    x = torch.randn(4, 8000)
    with torch.no_grad():
        batch = enc(x)
        alone = torch.cat([enc(x[i:i + 1]) for i in range(4)])
        other = enc(torch.cat([x[:1], 10 * torch.randn(3, 8000)]))
    assert batch.shape == (4, 24)
    assert torch.allclose(batch.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(batch, alone, atol=1e-5)
    assert torch.allclose(batch[0], other[0], atol=1e-5)
    with pytest.raises(ValueError, match="mono waveforms"):
        enc(torch.randn(2, 2, 8000))


def test_registry_and_errors(tmp_path):
    assert "timm" in list_audio_encoders()
    with pytest.raises(ValueError, match="unknown audio encoder 'nope'.*'timm'"):
        create_audio_encoder("nope")
    with pytest.raises(CheckpointError, match="not found"):
        create_audio_encoder(str(tmp_path / "missing.pt"))

    class Constant(AudioEncoder):
        def __init__(self, dim=3):
            super().__init__(16000, dim, "ViT-B-32", "openai")
            self.v = torch.nn.Parameter(torch.ones(dim))

        def encode(self, waveforms):
            return self.v.expand(len(waveforms), -1)

    def build_constant(**kwargs):
        return Constant(**kwargs)

    def another_builder(**kwargs):
        return Constant(**kwargs)

    try:
        register_audio_encoder("constant-test")(build_constant)
        assert "constant-test" in list_audio_encoders()
        with pytest.raises(ValueError, match="already registered"):
            register_audio_encoder("constant-test")(another_builder)
        enc = create_audio_encoder("constant-test", dim=5)
        assert torch.allclose(enc(torch.zeros(2, 10)), torch.full((2, 5), 1 / math.sqrt(5)))
        path = tmp_path / "constant.pt"
        save_checkpoint_file(encoder_checkpoint(enc), path)
        assert create_audio_encoder(str(path)).embed_dim == 5  # rebuilt from the stored recipe
        with pytest.raises(CheckpointError, match="holds audio encoder 'constant-test', not 'timm'"):
            create_audio_encoder("timm", checkpoint=path)
    finally:
        factory._REGISTRY.pop("constant-test", None)
    # the registering module not imported (an encoder kept outside the package): say so
    with pytest.raises(CheckpointError, match="'constant-test', which is not registered .*import the module"):
        create_audio_encoder(str(tmp_path / "constant.pt"))


def test_check_pair():
    enc = create_audio_encoder("timm", **TINY)
    enc.check_pair("ViT-B-16", "openai")
    enc.check_pair("ViT-B/16", "OpenAI")  # the same space, spelled differently
    enc.check_pair("ViT-B-16-quickgelu", "openai")
    with pytest.raises(ValueError, match="ViT-B-16.*ViT-L-14"):
        enc.check_pair("ViT-L-14", "openai")
    with pytest.raises(ValueError, match="laion2b"):
        enc.check_pair("ViT-B-16", "laion2b_s34b_b88k")


def test_checkpoint_round_trip_and_damaged_files(tmp_path):
    torch.manual_seed(1)
    enc = create_audio_encoder("timm", **TINY)
    good = tmp_path / "enc.pt"
    save_checkpoint_file(encoder_checkpoint(enc), good)
    x = torch.randn(2, 16000)
    for loaded in (create_audio_encoder(str(good)), create_audio_encoder("timm", checkpoint=good)):
        assert not loaded.training and loaded.clip_model == "ViT-B-16" and loaded.clip_pretrained == "openai"
        with torch.no_grad():
            assert torch.equal(loaded(x), enc(x))
    plain = tmp_path / "plain.pt"
    torch.save(enc.state_dict(), plain)  # a bare state dict needs the encoder named
    assert torch.equal(create_audio_encoder("timm", checkpoint=plain, **TINY)(x), enc(x))
    with pytest.raises(CheckpointError, match="not an avlegrad audio-encoder checkpoint"):
        create_audio_encoder(str(plain))

    data = good.read_bytes()
    damaged = {"truncated.pt": data[: len(data) // 2], "empty.pt": b"",
               "garbage.pt": np.random.default_rng(0).bytes(4096),
               "flipped.pt": data[:100] + bytes(200) + data[300:]}
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{name}.*corrupt or truncated"):
            create_audio_encoder(str(tmp_path / name))
        with pytest.raises(CheckpointError, match=name):
            create_audio_encoder("timm", checkpoint=tmp_path / name)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        create_audio_encoder("timm", checkpoint=tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        create_audio_encoder("timm", checkpoint=good, embed_dim=8)


def test_embed_files_reads_wav_and_mp4_and_resamples(tmp_path):
    torch.manual_seed(0)
    enc = create_audio_encoder("timm", **TINY)
    t = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1)
    write_audio(tmp_path / "a.wav", stereo, 44100)
    t16 = np.arange(16000) / 16000
    write_video(tmp_path / "b.mp4", [np.full((32, 32, 3), 90, np.uint8)] * 4, 4,
                audio=0.3 * np.sin(2 * np.pi * 1000 * t16), sample_rate=16000)
    write_audio(tmp_path / "c.wav", 0.3 * np.sin(2 * np.pi * 1000 * t16[:12000]), 16000)

    paths = [tmp_path / "a.wav", tmp_path / "b.mp4", tmp_path / "c.wav"]
    out = enc.embed_files(paths, batch_size=2)
    assert out.shape == (3, 16) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.no_grad():
        for row, path in zip(out, paths):  # each file as if embedded alone: resampled to 16 kHz, mono
            wave, sr = load_audio(path, sample_rate=16000)
            assert sr == 16000
            assert torch.allclose(row, enc(torch.from_numpy(wave)[None])[0], atol=1e-5)
    assert len(load_audio(paths[0], sample_rate=16000)[0]) == 24000
    fixed = enc.embed_files(paths, duration=1.0)  # cut/padded to one length, batched together
    assert fixed.shape == (3, 16)
    enc.train()
    enc.embed_files(paths[:1])
    assert enc.training  # mode restored


def test_random_clip_tower_is_reproducible_and_leaves_rng_alone():
    cfg = dict(embed_dim=16, vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16),
               text_cfg=dict(context_length=8, vocab_size=50, width=16, heads=2, layers=1))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, preprocess = create_clip_tower("tiny", None, cfg, init_seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = create_clip_tower("tiny", None, cfg, init_seed=3)
    c, _ = create_clip_tower("tiny", None, cfg, init_seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    from PIL import Image

    assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)


# ---------------------------------------------------------------------------------------------
# every registered encoder
# ---------------------------------------------------------------------------------------------

# small random-weight configurations of the built-in encoders; an encoder not listed is built with
# its defaults (keep them small, or add a line here)
def test_every_registered_encoder_embeds_a_tiny_waveform():
    """Each registered encoder: a unit vector per clip in its declared space (embed_dim, CLIP tower),
    and a training contract that says what train.py may do."""
    from avlegrad.audio import list_audio_encoders, training_contract
    from avlegrad.audio.factory import test_config

    torch.manual_seed(0)
    for name in list_audio_encoders():
        encoder = create_audio_encoder(name, **test_config(name))  # declared with its registration
        assert not encoder.training and encoder.registry_name == name
        waves = 0.1 * torch.randn(2, max(encoder.sample_rate, encoder.min_samples))
        with torch.no_grad():
            emb = encoder(waves)
        assert emb.shape == (2, encoder.embed_dim) and torch.isfinite(emb).all(), name
        assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-4), name
        assert encoder.clip_model, f"{name} names no CLIP space"
        contract = training_contract(name)
        assert contract.trainable or contract.reason
        assert contract.embed_dim in (None, encoder.embed_dim), name


def test_an_option_an_encoder_does_not_take_is_one_line_naming_it():
    """A config's ``encoder:`` section with a key the encoder does not take (or a stale checkpoint's
    kwargs) is a ValueError naming the encoder and the key, for builders with and without **kwargs."""
    with pytest.raises(ValueError, match=r"audio encoder 'timm' takes no option 'bogus'") as e:
        create_audio_encoder("timm", backbone="resnet18", embed_dim=16, bogus=1)
    assert "\n" not in str(e.value)

    def build(embed_dim: int = 8):  # a builder that names its options: checked before it is called
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match=r"'mine' takes no option 'width'; its options: embed_dim"):
        factory._build("mine", build, {"width": 3})
