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
from avlegrad.evaluation import AudioTargets
from conftest import make_tiny_clip

ENCODERS = {  # small random-weight versions of every registered encoder (and Wav2CLIP's two modes)
    "timm": lambda: create_audio_encoder("timm", backbone="test_convnext", embed_dim=32,
                                         frontend={"n_fft": 512, "n_mels": 32}),
    "imagebind": lambda: create_audio_encoder("imagebind", pretrained=False, width=64, depth=1, heads=4,
                                              embed_dim=32),
    "wav2clip": lambda: create_audio_encoder("wav2clip", pretrained=False),
    "wav2clip-batch": lambda: create_audio_encoder("wav2clip", pretrained=False, normalize="batch"),
}


def test_every_registered_encoder_is_covered():
    assert set(list_audio_encoders()) <= {name.split("-")[0] for name in ENCODERS}


def sounds(n, samples, seed=0):
    """Clips that differ in loudness and spectrum, so per-batch statistics would differ from per-clip ones."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return [(10.0 ** rng.uniform(-2, 0) * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
             + 0.05 * rng.standard_normal(samples)).astype(np.float32) for _ in range(n)]


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request):
    torch.manual_seed(0)
    return ENCODERS[request.param]().eval()


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
