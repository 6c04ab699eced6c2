"""Both directions in a heatmap video (issue 16, item 4): ``localize --audio-map`` draws, under each
frame, a scrolling spectrogram strip with the audio-side LeGrad map of the frame's window.

References written here: which spectrogram columns are shown at time ``t`` (exact fractions, the
nearest column with ties to the right), the whole track's log-mel computed at once (zero-padded),
the window map's columns by a loop, the playhead's pixel by a loop over pixels, and the audio-side
map of each window by :class:`AudioLeGrad` called on the window and the frame's embedding.
"""
import logging
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from avlegrad import localize
from avlegrad.audio import create_audio_encoder
from avlegrad.audio.factory import encoder_checkpoint, save_checkpoint_file
from avlegrad.audio.frontend import LogMel
from avlegrad.audio_strip import BLOCK, SpectrogramStrip, WindowMap
from avlegrad.data.media import write_video
from avlegrad.explain.audio import AudioLeGrad
from tests.conftest import assert_model_unchanged, make_tiny_clip, model_snapshot
from tests.test_audio_legrad import VIT, _perturb
from tests.test_localize import TINY_CLIP, moving_box_frames, read_video, tone, write_custom

SR, HOP = 16000, 160


def noisy_track(seconds=5.0, start=0.25, seed=0):
    rng = np.random.default_rng(seed)
    wave = (0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    wave[SR:SR + SR // 2] += tone(0.5, freq=1000)  # a loud second
    return localize.AudioTrack(wave[:, None], SR, start), wave


def whole_log_mel(frontend, wave, pad_columns):
    """The whole track's log-mel, zero-padded by ``pad_columns`` columns each side: column j of the
    strip's grid is column ``j + pad_columns`` here."""
    z = np.zeros(pad_columns * HOP, np.float32)
    with torch.no_grad():
        return frontend(torch.from_numpy(np.concatenate([z, wave, z]))[None])[0, 0].numpy()


def reference_playhead(t, start):
    """The column whose centre (start + j * hop / sr) is nearest to t; ties go to the later column."""
    t, start = Fraction(t), Fraction(start)
    best = None
    for j in range(-400, 1200):
        d = abs(t - start - Fraction(j * HOP, SR))
        if best is None or d <= best[0]:
            best = (d, j)
    return best[1]


def test_strip_shows_the_columns_around_the_playhead_and_scrolls():
    frontend = LogMel(SR, n_fft=512, hop_length=HOP, n_mels=32)
    track, wave = noisy_track()
    strip = SpectrogramStrip(track, frontend, seconds=1.0)
    count = 100  # 1 s of 10 ms columns
    pad = 200
    whole = whole_log_mel(frontend, wave, pad)
    # before the track, a tie (0.125 s = 12.5 columns from the start), inside, the end, beyond it
    times = [0.0, 0.25 + 0.125, 0.9, 1.27, 1.3, 2.0, 5.1, 5.25, 5.9]
    previous = None
    for t in times:
        view = strip.view(t)
        p = reference_playhead(t, 0.25)
        assert view.playhead == p
        shown = list(range(p - count // 2, p + count - count // 2))  # count columns, count // 2 left of the playhead
        assert view.columns.tolist() == shown
        np.testing.assert_allclose(view.spec, whole[:, np.array(shown) + pad], atol=2e-4)
        assert np.isnan(view.relevance).all() and view.window is None
        if previous is not None:  # scrolled by the playhead's move: the same columns, shifted left
            d = view.first - previous.first
            if 0 <= d < count:
                np.testing.assert_allclose(view.spec[:, :count - d], previous.spec[:, d:], atol=1e-5)
        previous = view
        # bounded: the columns shown and at most one block more
        assert strip.columns.data.shape[1] <= count + BLOCK
    # the playhead's pixel: the one whose column range holds the playhead column's centre; the same at every t
    width, height = 160, 64
    for t in (0.9, 2.0, 5.25):
        view = strip.view(t)
        image = strip.render(view, width, height)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        centre = view.playhead - view.first + 0.5
        x = next(x for x in range(width) if x * count / width <= centre < (x + 1) * count / width)
        assert x == 80
        assert (image[:, x] == 255).all()
        assert not (image[:, x + 3] == 255).all()
        spectrogram = image[:, x + 3]  # outside any window: grey levels only
        assert (spectrogram[:, 0] == spectrogram[:, 1]).all() and (spectrogram[:, 1] == spectrogram[:, 2]).all()


def test_strip_memory_does_not_grow_with_the_track():
    frontend = LogMel(SR, n_fft=512, hop_length=HOP, n_mels=16)
    track = localize.AudioTrack(np.zeros((60 * SR, 1), np.float32), SR, 0.0)
    strip = SpectrogramStrip(track, frontend, seconds=2.0)
    held = []
    for t in np.arange(0, 60, 0.04):
        strip.view(float(t))
        held.append((strip.columns.data.shape[1], len(strip.columns.audio._buf)))
    assert max(c for c, _ in held) <= 200 + BLOCK
    assert max(b for _, b in held) < 3 * SR  # a few blocks of samples, not the minute


@pytest.mark.parametrize("start", [-30, 20, 70, 95, 150])
def test_strip_relevance_is_the_window_map_at_its_columns(start):
    frontend = LogMel(SR, n_fft=512, hop_length=HOP, n_mels=32)
    track, _ = noisy_track()
    strip = SpectrogramStrip(track, frontend, seconds=1.0, alpha=0.6, colormap="jet")
    window = WindowMap(np.random.default_rng(start % 7).random((32, 40)).astype(np.float32), start)
    view = strip.view(1.25, window)  # playhead: column 100; shown: 50 .. 149
    assert view.first == 50 and view.window == (start, start + 40)
    for i, c in enumerate(view.columns):
        if start <= c < start + 40:
            np.testing.assert_array_equal(view.relevance[:, i], window.map[:, c - start])
        else:
            assert np.isnan(view.relevance[:, i]).all()
    image = strip.render(view, 200, 64)  # 2 pixels per column
    for i, c in enumerate(view.columns):
        x = 2 * i + 1  # the column's second pixel: away from the window's bounds on the left pixel
        if c == view.playhead or c == start + 39:
            continue
        grey = (image[1:-1, x, 0] == image[1:-1, x, 1]).all() and (image[1:-1, x, 1] == image[1:-1, x, 2]).all()
        assert grey == (not start <= c < start + 40)


def tiny_pair(seed=0):
    """A random CLIP tower and a random timm audio ViT in its (24-d) space."""
    torch.manual_seed(seed)
    enc = _perturb(create_audio_encoder("timm", **VIT), seed).eval()
    return make_tiny_clip(embed_dim=24), enc


def test_localizer_audio_maps_are_audio_legrad_of_each_window_against_its_frame():
    clip, enc = tiny_pair()
    before = (model_snapshot(clip), model_snapshot(enc))
    loc = localize.Localizer(clip, {"size": 32}, enc, window=0.5, audio_map=True, progress=False)
    assert loc.strip_seconds == 1.0
    track, _ = noisy_track(seconds=3.0)
    audio = localize.AudioWindows(track, SR, 0.5)
    rng = np.random.default_rng(1)
    times = [0.1, 0.505, 0.72, 1.0553, 2.9]
    frames = [localize.Frame(i, t, rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for i, t in enumerate(times)]
    rgbs = [f.rgb for f in frames]
    loc.explain(frames, audio)
    waves = audio.batch(times)
    with torch.no_grad():
        pictures = clip.encode_image(loc.to_model([loc.prepare(r) for r in rgbs]))
    expected = AudioLeGrad(enc).explain_waveforms(waves, pictures).maps
    for i, (f, t) in enumerate(zip(frames, times)):
        np.testing.assert_allclose(f.audio.map, expected[i].numpy(), atol=1e-5)
        # frame 0 of the window, its first sample, lies on the nearest column (ties to the later one)
        first = Fraction(round((t - 0.25) * SR) - 4000)
        dist = {j: abs(first - j * HOP) for j in range(-100, 400)}
        assert f.audio.start == max(j for j, d in dist.items() if d == min(dist.values()))
    # one frame through the Python API: both maps from one call, the same numbers
    image_map, audio_maps = loc.explain_frame(rgbs[1], waves[1].numpy())
    np.testing.assert_allclose(image_map, frames[1].map, atol=1e-5)
    np.testing.assert_allclose(audio_maps.maps.numpy(), frames[1].audio.map, atol=1e-5)
    assert audio_maps.curve.shape == (audio_maps.maps.shape[1],) == audio_maps.times.shape
    # bad input: one line naming what is wrong (a grey frame failed deep inside torch's permute,
    # a NaN window was reported as a bad target embedding, a stereo window was silently flattened)
    wave = waves[1].numpy()
    stereo, nans = np.stack([wave, wave], 1), wave.copy()
    nans[[3, 7]] = np.nan
    for rgb, window, message in ((rgbs[1][..., 0], wave, r"RGB frame \[H, W, 3\].*shape \(40, 56\)"),
                                 (rgbs[1], stereo, r"mono audio window \[T\], got shape \(8000, 2\)"),
                                 (rgbs[1], nans, "holds 2 NaN/inf samples of 8000")):
        with pytest.raises(ValueError, match=message):
            loc.explain_frame(rgb, window)
    assert_model_unchanged(before[0], model_snapshot(clip))
    assert_model_unchanged(before[1], model_snapshot(enc))


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    """A random timm audio ViT checkpoint in the tiny tower's space (test_localize's TINY_CLIP)."""
    base = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    enc = _perturb(create_audio_encoder("timm", **{**VIT, "embed_dim": 32, "clip_model": "tiny-clip",
                                                   "clip_model_cfg": TINY_CLIP}), 0)
    save_checkpoint_file(encoder_checkpoint(enc), base / "vit.pt")
    return base / "vit.pt"


def test_heatmap_video_with_the_strip(vit_checkpoint, tmp_path, monkeypatch):
    clip_path = tmp_path / "box.mp4"
    write_custom(clip_path, moving_box_frames(20, width=98, height=63), fps=10, pix_fmt="yuv444p", audio=tone(2.0))
    written = []
    write = localize.VideoWriter.write
    monkeypatch.setattr(localize.VideoWriter, "write", lambda self, rgb: (written.append(rgb.copy()), write(self, rgb)))
    shown = []  # (time, window) of each frame's strip
    attach = SpectrogramStrip.attach
    monkeypatch.setattr(SpectrogramStrip, "attach",
                        lambda self, image, t, window=None: (shown.append((t, window)),
                                                             attach(self, image, t, window))[1])
    out = tmp_path / "out"
    assert localize.main([str(clip_path), "-o", str(out), "--quiet", "--audio-encoder", str(vit_checkpoint),
                          "--audio-map", "--contact-sheet", "--stride", "3", "--window", "0.5", "--save-maps"]) == 0
    # explained: frames 0, 3, ..., 18 and the last (19); a frame between shows the nearer one's window
    explained = [0, 3, 6, 9, 12, 15, 18, 19]
    for i, (t, window) in enumerate(shown):
        assert t == pytest.approx(i / 10)
        prev = max(e for e in explained if e <= i)
        nxt = min(e for e in explained if e >= i)
        key = prev if nxt == prev or (i - prev) / (nxt - prev) < 0.5 else nxt
        first_sample = Fraction(round(key / 10 * SR) - 4000)  # the key frame's window [t - 0.25 s, t + 0.25 s]
        assert window.start == math.floor(first_sample / HOP + Fraction(1, 2))
        assert window is shown[key][1]
    # --save-maps: the explained windows' maps, when each frame 0 is centred, the frames' times
    saved = np.load(out / "box_legrad_maps.npz")
    start = localize.read_audio_track(clip_path).start
    assert saved["audio_maps"].dtype == np.float16 and saved["audio_maps"].shape == (8, 32, 51)
    expected = np.stack([shown[e][1].map for e in explained]).astype(np.float16)
    np.testing.assert_array_equal(saved["audio_maps"], expected)
    np.testing.assert_allclose(saved["audio_times"], np.array(explained) / 10, atol=1e-6)
    np.testing.assert_allclose(saved["audio_starts"], [start + shown[e][1].start * HOP / SR for e in explained])
    assert float(saved["audio_frame_seconds"]) == HOP / SR and saved["maps"].shape == (20, 64, 64)
    strip_h = SpectrogramStrip.height(98, 63)
    assert strip_h == 65  # 64 at least, odd so that 63 + 65 is even
    frames, facts = read_video(out / "box_legrad.mp4")
    assert frames.shape == (20, 128, 98, 3)  # frame + strip: even, nothing padded
    assert facts["has_audio"]
    assert len(written) == 20 and all(w.shape == (128, 98, 3) for w in written)
    # the strip: grey spectrogram, the window's map in colour, the playhead in white at the middle
    x = int((100 // 2 + 0.5) * 98 / 100)
    for w in written:
        assert (w[63:, x] == 255).all()
        colour = (np.abs(w[63:].astype(int) - w[63:, :, :1]) > 8).any(-1)
        assert colour[:, x - 20:x + 20].mean() > 0.5  # the window's (0.5 s of the 1 s strip) around the playhead
    # the contact sheet is made of these frames, strips included, and says what they show under them
    sheet = localize.ContactSheet()
    for i, w in enumerate(written):
        sheet.add(i, i / 10, w)
    grid = sheet.render()
    import cv2

    from avlegrad.visualize import colorize

    saved = cv2.cvtColor(cv2.imread(str(out / "box_legrad_sheet.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved[:grid.shape[0]], grid)
    assert grid.shape[0] > 2 * 240 * 128 / 98  # two rows of thumbnails as tall as frame + strip
    footer = saved[grid.shape[0]:]
    lines = 3  # the frames' map; the strip and its playhead; the window's audio-side map
    assert footer.shape[0] == 4 + 10 + 4 + lines * localize.ContactSheet.LINE + 4
    bar = colorize(np.tile(np.linspace(0, 1, 160), (10, 1)), "jet")  # the colour bar: the default colormap, low to high
    np.testing.assert_array_equal(footer[4:14, 44:204], bar)
    legend = localize.Localizer.from_names(str(vit_checkpoint), window=0.5, stride=3, audio_map=True).sheet_legend()
    assert len(legend) == lines and "0.50 s" in legend[0] and "one frame in 3" in legend[0]
    assert "1.00 s" in legend[1] and "white line" in legend[1] and "audio-side LeGrad" in legend[2]
    ink = (footer[18:] < 128).all(-1)  # dark text pixels, a band per line
    for k in range(lines):
        assert ink[k * localize.ContactSheet.LINE:(k + 1) * localize.ContactSheet.LINE].any()


def test_audio_map_refusals(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    # an encoder without an audio-side adapter: the world's ResNet encoder
    path = tmp_path / "c.mp4"
    write_video(path, moving_box_frames(4, 64, 64), 10, audio=tone(0.4), sample_rate=SR)
    code = localize.main([str(path), "-o", str(tmp_path / "o"), "--quiet", "--audio-encoder",
                          "checkpoints/world/audio.pt", "--audio-map"])
    assert code == 2
    line = [r.getMessage() for r in caplog.records if "audio-map" in r.getMessage()]
    assert len(line) == 1 and "\n" not in line[0]
    assert "checkpoints/world/audio.pt" in line[0] and "ResNet" in line[0] and "ImageBind" in line[0]
    assert not (tmp_path / "o").exists()
    # a text target: nothing to explain on the audio side, said before any weights load (offline,
    # ViT-B-16's openai weights would fail first with a long download error)
    caplog.clear()
    code = localize.main([str(path), "-o", str(tmp_path / "o"), "--quiet", "--target-text", "a dog", "--audio-map"])
    line = [r.getMessage() for r in caplog.records]
    assert code == 2 and len(line) == 1 and "\n" not in line[0]
    assert "--audio-map" in line[0] and "--audio-encoder" in line[0] and "not a text target" in line[0]
    assert "weights" not in line[0]
    with pytest.raises(ValueError, match="needs an audio encoder"):
        localize.Localizer(make_tiny_clip(), {"size": 32}, text_embedding=torch.ones(32), audio_map=True)
    clip, enc = tiny_pair()
    with pytest.raises(ValueError, match="strip_seconds"):
        localize.Localizer(clip, {"size": 32}, enc, window=0.5, audio_map=True, strip_seconds=0)
    with pytest.raises(ValueError, match="add `audio_map`"):
        localize.Localizer(clip, {"size": 32}, enc, window=0.5, strip_seconds=2.0)


def test_audio_maps_are_float32_under_bf16_autocast():
    """--dtype bf16: the audio side runs under the same autocast and still gives float32 maps
    (before, grid_to_input ran in bf16 and the strip's numpy conversion failed)."""
    clip, enc = tiny_pair()
    track, _ = noisy_track(seconds=2.0)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    maps = {}
    for dtype in ("fp32", "bf16"):
        loc = localize.Localizer(clip, {"size": 32}, enc, window=0.5, audio_map=True, progress=False, dtype=dtype)
        frames = [localize.Frame(0, 1.0, rgb.copy())]
        loc.explain(frames, localize.AudioWindows(track, SR, 0.5))
        maps[dtype] = frames[0].audio.map
        assert maps[dtype].dtype == np.float32 and maps[dtype].shape == (32, 51)
    assert np.abs(maps["bf16"] - maps["fp32"]).max() < 0.1


def test_world_models_end_to_end(tmp_path):
    """The offline setup: the world's audio ViT picks the world's CLIP tower, both directions drawn."""
    path = tmp_path / "world.mp4"
    write_video(path, moving_box_frames(8, 96, 64), 10, audio=tone(0.8, freq=600), sample_rate=SR)
    out = tmp_path / "out"
    assert localize.main([str(path), "-o", str(out), "--quiet", "--audio-encoder", "checkpoints/world/audio_vit.pt",
                          "--audio-map"]) == 0
    frames, facts = read_video(out / "world_legrad.mp4")
    assert frames.shape == (8, 64 + 64, 96, 3) and facts["has_audio"]


def test_imagebind_tower_draws_on_its_own_grid():
    """ImageBind's audio tower (random weights, official layout): its 3 clips placed on the window's
    frames, the strip's log-mel a 25 ms LogMel on its 10 ms hop and 128 bands (none of them empty)."""
    from tests.test_audio_legrad import imagebind_small

    enc = imagebind_small()
    clip = make_tiny_clip(embed_dim=16)
    loc = localize.Localizer(clip, {"size": 32}, enc, window=2.0, audio_map=True, progress=False)
    track, _ = noisy_track(seconds=3.0)
    audio = localize.AudioWindows(track, SR, 2.0)
    frames = [localize.Frame(0, 1.5, np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))]
    rgb = frames[0].rgb
    loc.explain(frames, audio)
    with torch.no_grad():
        picture = clip.encode_image(loc.to_model([loc.prepare(rgb)]))
    expected = AudioLeGrad(enc).explain_waveforms(audio.batch([1.5]), picture).maps[0].numpy()
    np.testing.assert_allclose(frames[0].audio.map, expected, atol=1e-5)
    assert frames[0].audio.map.shape == (128, 201)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchaudio warns of mel bands without any FFT bin
        strip = loc.spectrogram_strip(track)
    shown = strip.columns.frontend
    assert (shown.n_mels, shown.hop_length, shown.n_fft) == (128, 160, 1024)
    view = strip.view(1.5, frames[0].audio)
    assert view.window == (frames[0].audio.start, frames[0].audio.start + 201) and strip.count == 400
    i = frames[0].audio.start - view.first
    np.testing.assert_array_equal(view.relevance[:, i:i + 201], expected)
