"""A clip's target never depends on its batch-mates (issue 13, item 8): for every registered audio
encoder (random weights), eval's targets and localize's per-frame targets computed in batches equal
those computed one clip at a time. Wav2CLIP's official standardisation uses the statistics of the
batch it is given; the reference here is the official result for one file: a batch of one."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avlegrad import localize
from avlegrad.audio import create_audio_encoder, list_audio_encoders
from avlegrad.audio.base import AudioEncoder
from avlegrad.audio.factory import test_config
from avlegrad.eval import AudioTargets
from conftest import make_tiny_clip

# every registered encoder, as the small random-weight version its registration declares
# (register_audio_encoder(..., test_config=)), and Wav2CLIP's batch standardisation beside its default
ENCODERS = {name: {} for name in list_audio_encoders()}
ENCODERS["wav2clip-batch"] = {"normalize": "batch"}


def build(key: str):
    name = key.removesuffix("-batch")
    return create_audio_encoder(name, **{**test_config(name), **ENCODERS[key]})


def test_every_registered_encoder_declares_a_test_config():
    for name in list_audio_encoders():
        encoder = create_audio_encoder(name, **test_config(name))
        assert isinstance(encoder, AudioEncoder) and encoder.embed_dim > 0, name


def sounds(n, samples, seed=0):
    """Clips that differ in loudness and spectrum, so per-batch statistics would differ from per-clip ones."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return [(10.0 ** rng.uniform(-2, 0) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
             + 0.05 * rng.standard_normal(samples)).astype(np.float32) for _ in range(n)]


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request):
    torch.manual_seed(0)
    return build(request.param).eval()


def test_eval_targets_do_not_depend_on_the_batch(encoder):
    waves = sounds(4, 16000) + sounds(2, 12000, seed=1)  # two lengths: two sub-batches
    records = [SimpleNamespace(waveform=w) for w in waves]
    targets = AudioTargets(encoder)
    batched = targets(records, torch.device("cpu"))
    singles = torch.cat([targets([r], torch.device("cpu")) for r in records])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
    # and the single is the encoder's own output for that clip alone
    torch.testing.assert_close(singles[1], encoder(torch.from_numpy(waves[1])[None])[0], rtol=1e-5, atol=1e-5)


def test_localize_targets_do_not_depend_on_the_batch(encoder):
    loc = localize.Localizer(make_tiny_clip(embed_dim=encoder.embed_dim), {"size": 32}, encoder, window=1.0,
                             batch_size=4, progress=False)
    t = np.arange(3 * 16000) / 16000
    sound = np.concatenate([0.5 * np.sin(2 * np.pi * 300 * t[:16000]), 0.01 * np.sin(2 * np.pi * 3000 * t[16000:])])
    audio = localize.AudioWindows(localize.AudioTrack(sound[:, None].astype(np.float32), 16000), 16000, 1.0)
    frames = [localize.Frame(i, 0.25 * i, np.zeros((8, 8, 3), np.uint8)) for i in range(12)]
    batched = torch.cat([loc.targets(frames[i:i + 4], audio) for i in range(0, 12, 4)])
    singles = torch.cat([loc.targets([f], audio) for f in frames])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", ["per_input", "batch"])
def test_localize_maps_equal_at_batch_size_1_and_4_with_wav2clip(tmp_path, normalize):
    """End to end: the saved maps of a heatmap video do not depend on --batch-size (they differed by
    up to 0.003 with Wav2CLIP's batch standardisation)."""
    from avlegrad.data.media import write_video

    path = tmp_path / "clip.mp4"
    t = np.arange(int(1.6 * 16000)) / 16000
    sound = np.where(t < 0.8, 0.5 * np.sin(2 * np.pi * 300 * t), 0.02 * np.sin(2 * np.pi * 2500 * t))
    frames = [np.full((32, 32, 3), 40 + 10 * i, np.uint8) for i in range(8)]
    write_video(path, frames, 5, audio=sound.astype(np.float32), sample_rate=16000)
    torch.manual_seed(0)
    encoder = create_audio_encoder("wav2clip", pretrained=False, normalize=normalize).eval()
    tower = make_tiny_clip(embed_dim=512)
    maps = []
    for batch_size in (1, 4):
        loc = localize.Localizer(tower, {"size": 32}, encoder, window=1.0, batch_size=batch_size, save_maps=True,
                                 progress=False)
        result = loc.localize(path, tmp_path / f"out{batch_size}")
        maps.append(np.load(result.maps)["maps"].astype(np.float32))
    assert maps[0].shape == (8, 32, 32)
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-3)  # float16 storage: a step is 5e-4 near 1
