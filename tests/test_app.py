"""The web demo (avlegrad/app.py): its functions on generated inputs with tiny random models and
with the shipped world models (no browser), and one end-to-end run in a real headless chromium
driven by Playwright: the page is served on a free loopback port, a generated clip is uploaded and
explained, and the result must appear and differ from the input; nothing is fetched from outside."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import av
import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from avlegrad import app
from avlegrad.audio import AudioEncoder
from avlegrad.data.media import write_audio, write_video
from avlegrad.explain import create_explainer
from avlegrad.models import encode_text, image_tensor, load_clip
from avlegrad.visualize import overlay
from conftest import assert_model_unchanged, model_snapshot

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
SR = 8000


class ToyEncoder(AudioEncoder):
    """A deterministic audio encoder into the tiny tower's 32-d space (statistics of the waveform)."""

    def __init__(self):
        super().__init__(SR, 32, "tiny-clip", None, TINY_CLIP)
        self.proj = torch.nn.Parameter(torch.randn(3, 32, generator=torch.Generator().manual_seed(0)))
        self.bias = torch.nn.Parameter(torch.randn(32, generator=torch.Generator().manual_seed(1)))

    def encode(self, waveforms):
        feats = torch.stack([waveforms.abs().mean(1), waveforms.std(1), waveforms[:, ::2].mean(1)], 1)
        return feats @ self.proj + self.bias


@pytest.fixture(scope="module")
def tiny():
    clip, cfg = load_clip("tiny-clip", None, model_cfg=TINY_CLIP, init_seed=3)
    with torch.no_grad():  # no unit norms / zero biases: nothing passes by a special initialisation
        g = torch.Generator().manual_seed(4)
        for name, p in clip.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return app.Models(clip, cfg, "tiny-clip", ToyEncoder().eval(), "tiny random models")


def box_frames(n, width=40, height=30):
    frames = []
    for i in range(n):
        f = np.full((height, width, 3), 30, np.uint8)
        x = 2 + i
        f[8:20, x:x + 12] = (220, 160, 40)
        frames.append(f)
    return frames


def tone(seconds, sr=SR, freq=440.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    write_video(d / "clip.mp4", box_frames(20), 10, audio=tone(2.0), sample_rate=SR)
    write_video(d / "mute.mp4", box_frames(5), 10)
    cv2.imwrite(str(d / "picture.png"), cv2.cvtColor(box_frames(1)[0], cv2.COLOR_RGB2BGR))
    write_audio(d / "sound.wav", tone(1.5, freq=660.0), SR)
    write_audio(d / "silent.wav", np.zeros(SR, np.float32), SR)
    (d / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    (d / "garbage.png").write_bytes(b"not a picture" * 10)
    return d


def decoded_frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


# ----------------------------------------------------------------------------- pieces
def test_side_by_side_is_the_frame_a_white_gap_and_the_overlay():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    heat = rng.random((8, 8)).astype(np.float32)
    out = app.side_by_side(frame, heat, 0.4, "inferno")
    k = 11  # ceil(320 / 30): small frames are shown enlarged, pixels kept
    big = np.repeat(np.repeat(frame, k, 0), k, 1)
    assert out.shape == (30 * k, 2 * 40 * k + app.GAP, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :40 * k], big)
    assert (out[:, 40 * k:40 * k + app.GAP] == 255).all()
    assert np.array_equal(out[:, 40 * k + app.GAP:], overlay(big, heat, 0.4, "inferno"))
    same = app.side_by_side(frame, heat, min_height=30)
    assert np.array_equal(same[:, :40], frame) and same.shape == (30, 80 + app.GAP, 3)


def test_models_load_once_and_are_reused():
    calls = []

    def loader(audio_encoder, tower, device):
        calls.append((audio_encoder, tower, device))
        return object()

    cache = app.ModelCache(size=2, loader=loader)
    a = cache.get(app.Options().checked())
    assert cache.get(app.Options(stride=4, method="rollout").checked()) is a  # same models, other options
    cache.get(app.Options(tower="ViT-B-16:openai", audio_encoder="wav2clip").checked())
    assert cache.get(app.Options().checked()) is a and len(calls) == 2
    cache.get(app.Options(audio_encoder="imagebind").checked())  # a third pair: the least recently used goes
    cache.get(app.Options(tower="ViT-B-16:openai", audio_encoder="wav2clip").checked())
    assert len(calls) == 4


# ----------------------------------------------------------------------------- the requests
@pytest.mark.parametrize("method, layer_index", [("legrad", -2), ("legrad", 0), ("gradcam", -2)])
def test_picture_with_sound_is_the_explainer_on_the_sound(tiny, media, tmp_path, method, layer_index):
    before = model_snapshot(tiny.clip), model_snapshot(tiny.encoder)
    opts = app.Options(method=method, layer_index=layer_index, alpha=0.3).checked()
    r = app.localize_picture(media / "picture.png", opts, tiny, tmp_path, audio_path=media / "sound.wav")
    # the reference: the picture as the benchmarks feed it, the whole sound through the encoder
    frame = box_frames(1)[0]
    wave, sr = sf.read(media / "sound.wav", dtype="float32")  # as stored (16-bit PCM)
    assert sr == SR
    with torch.no_grad():
        target = tiny.encoder(torch.from_numpy(wave)[None])
    kwargs = {"layer_index": layer_index} if method == "legrad" else {}
    ref = create_explainer(method, tiny.clip, **kwargs)(image_tensor(frame, tiny.preprocess_cfg)[None], target)[0]
    with np.load(tmp_path / "picture_maps.npz") as z:
        np.testing.assert_allclose(z["map"], ref.numpy(), atol=1e-5)
        assert str(z["method"]) == method
    np.testing.assert_array_equal(r.image, app.side_by_side(frame, np.load(tmp_path / "picture_maps.npz")["map"], 0.3))
    assert cv2.imread(str(tmp_path / "picture_overlay.png")).shape == r.image.shape
    assert r.video is None and [f.name for f in r.files] == ["picture_maps.npz", "picture_overlay.png"]
    assert_model_unchanged(before[0], model_snapshot(tiny.clip))
    assert_model_unchanged(before[1], model_snapshot(tiny.encoder))


def test_picture_with_text_is_legrad_of_the_prompt(tiny, media, tmp_path):
    r = app.localize_picture(media / "picture.png", app.Options().checked(), tiny, tmp_path, prompt=" an orange box ")
    frame = box_frames(1)[0]
    target = encode_text(tiny.clip, "tiny-clip", ["an orange box"])
    ref = create_explainer("legrad", tiny.clip)(image_tensor(frame, tiny.preprocess_cfg)[None], target)[0]
    np.testing.assert_allclose(np.load(r.files[0])["map"], ref.numpy(), atol=1e-5)
    assert "an orange box" in r.message


def test_video_goes_through_the_localizer_with_its_sound(tiny, media, tmp_path):
    opts = app.Options(stride=3, alpha=0.5).checked()
    r = app.localize_video(media / "clip.mp4", opts, tiny, tmp_path)
    names = sorted(f.name for f in r.files)
    assert names == ["clip_legrad.mp4", "clip_legrad_maps.npz", "clip_overlay.png"]
    assert r.video == tmp_path / "clip_legrad.mp4"
    with av.open(str(r.video)) as c:  # every frame, with the sound
        assert c.streams.audio and c.streams.video[0].frames == 20
    with np.load(tmp_path / "clip_legrad_maps.npz") as z:
        maps, times, explained = z["maps"].astype(np.float32), z["times"], z["explained"]
    assert maps.shape == (20, 32, 32)
    assert explained.tolist() == [i % 3 == 0 or i == 19 for i in range(20)]  # the stride reached the localizer
    # the picture: the middle frame as decoded, beside its overlay with that frame's map
    middle = int(np.abs(times - (times[0] + times[-1]) / 2).argmin())
    frame = decoded_frames(media / "clip.mp4")[middle]
    np.testing.assert_array_equal(r.image, app.side_by_side(frame, maps[middle], 0.5))
    assert f"frame {middle}" in r.message and "20 frames" in r.message


def test_video_with_another_method_leaves_the_models_as_they_were(tiny, media, tmp_path):
    """The method reaches the localizer: raw attention (which ignores the target) on every frame is
    the explainer on that frame; and neither model is changed by a video request."""
    before = model_snapshot(tiny.clip), model_snapshot(tiny.encoder)
    r = app.localize_video(media / "clip.mp4", app.Options(method="attention").checked(), tiny, tmp_path)
    maps = np.load(r.files[0])["maps"].astype(np.float32)
    frames = decoded_frames(media / "clip.mp4")
    images = torch.stack([image_tensor(f, tiny.preprocess_cfg) for f in frames])
    ref = create_explainer("attention", tiny.clip)(images, torch.ones(len(frames), 32))
    np.testing.assert_allclose(maps, ref.numpy(), atol=1e-3)  # stored as float16
    assert "attention maps of 20 frames" in r.message
    assert_model_unchanged(before[0], model_snapshot(tiny.clip))
    assert_model_unchanged(before[1], model_snapshot(tiny.encoder))


def test_an_image_tower_alone_explains_text_prompts(media, tmp_path):
    config = tmp_path / "tiny-tower.json"
    config.write_text(json.dumps(TINY_CLIP))
    models = app.load_models(app.NO_AUDIO, f"{config}:none")
    assert models.encoder is None and "no audio encoder" in models.description
    r = app.localize_picture(media / "picture.png", app.Options().checked(), models, tmp_path, prompt="a box")
    ref = create_explainer("legrad", models.clip)(image_tensor(box_frames(1)[0], models.preprocess_cfg)[None],
                                                  encode_text(models.clip, str(config), ["a box"]))[0]
    np.testing.assert_allclose(np.load(r.files[0])["map"], ref.numpy(), atol=1e-5)
    for call in (lambda: app.localize_video(media / "clip.mp4", app.Options().checked(), models, tmp_path),
                 lambda: app.localize_picture(media / "picture.png", app.Options().checked(), models, tmp_path,
                                              audio_path=media / "sound.wav")):
        with pytest.raises(app.UserError, match="no audio encoder is chosen"):
            call()


def test_bad_inputs_give_a_one_line_message_naming_the_file(tiny, media, tmp_path):
    opts = app.Options().checked()
    cases = [
        (lambda: app.localize_video(media / "mute.mp4", opts, tiny, tmp_path), "mute.mp4: the video has no audio"),
        (lambda: app.localize_video(media / "garbage.mp4", opts, tiny, tmp_path), "garbage.mp4: cannot open"),
        (lambda: app.localize_video(media / "clip.mp4", app.Options(max_seconds=1).checked(), tiny, tmp_path),
         "clip.mp4: the video lasts 2.0 s, longer than this app's limit of 1 s"),
        (lambda: app.localize_video(None, opts, tiny, tmp_path), "upload a video first"),
        (lambda: app.localize_picture(media / "picture.png", opts, tiny, tmp_path, audio_path=media / "silent.wav"),
         "silent.wav: the sound is silent"),
        (lambda: app.localize_picture(media / "picture.png", app.Options(max_seconds=1).checked(), tiny, tmp_path,
                                      audio_path=media / "sound.wav"), "sound.wav: the sound lasts 1.5 s"),
        (lambda: app.localize_picture(media / "garbage.png", opts, tiny, tmp_path, prompt="a dog"),
         "garbage.png: cannot read image"),
        (lambda: app.localize_picture(media / "picture.png", opts, tiny, tmp_path, audio_path=media / "garbage.mp4"),
         "garbage.mp4"),
        (lambda: app.localize_picture(media / "picture.png", opts, tiny, tmp_path, prompt="  "), "type a text prompt"),
        (lambda: app.localize_picture(media / "picture.png", app.Options(layer_index=7).checked(), tiny, tmp_path,
                                      prompt="a dog"), "legrad: "),
        (lambda: app.Options(method="magic").checked(), "unknown method 'magic'"),
        (lambda: app.Options(stride=0).checked(), "stride must be at least 1"),
        (lambda: app.Options(device="gpu9").checked(), "unknown device 'gpu9'"),
        (lambda: app.load_models(app.WORLD, "ViT-B-16:openai"), "pairs only with the world CLIP"),
        (lambda: app.load_models(str(tmp_path / "nope.pt")), "nope.pt"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: app.Options(device="cuda").checked(), "no CUDA GPU is available"))
    for call, expected in cases:
        with pytest.raises(app.UserError) as e:
            call()
        assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*"))  # nothing half-written left


def test_unavailable_weights_are_named_in_one_line(monkeypatch):
    import avlegrad.audio
    from avlegrad.download import DownloadError

    def offline(name, **kwargs):
        raise DownloadError(f"could not fetch the {name} weights: https://example.org/w.pt: download failed\n"
                            f"Download it yourself and put it at /cache/weights/w.pt")

    monkeypatch.setattr(avlegrad.audio, "create_audio_encoder", offline)
    with pytest.raises(app.UserError) as e:
        app.load_models("wav2clip", "auto")
    assert str(e.value) == ("cannot load 'wav2clip' / 'auto': could not fetch the wav2clip weights: "
                            "https://example.org/w.pt: download failed Download it yourself and put it at "
                            "/cache/weights/w.pt")


@pytest.fixture(scope="module")
def example_cache(tmp_path_factory):
    """An avlegrad cache folder holding the app's examples (generated once for this module)."""
    cache = tmp_path_factory.mktemp("cache")
    app.ensure_examples(cache / "app_examples")
    return cache


def test_world_examples_light_up_the_sounding_object(example_cache, tmp_path):
    """The default page on a fresh clone: the generated examples, the shipped models; the map is
    brighter on the sounding object's box than elsewhere, for the video and for its picture + its
    sound. (The world CLIP's text prompts run but are not asserted: docs/world.md measures them at
    about the centre prior, AP50 44.0.)"""
    from avlegrad.metrics import gt_map

    folder = example_cache / "app_examples"
    stamp = (folder / "clips/synthetic.json").stat().st_mtime_ns
    examples = app.ensure_examples(folder)
    assert (folder / "clips/synthetic.json").stat().st_mtime_ns == stamp  # made once, then reused
    assert len(examples["videos"]) == len(examples["pictures"]) == 3
    entries = {e["file"]: e for e in json.loads((folder / "clips/vggss.json").read_text())}
    models = app.load_models()
    opts = app.Options().checked()
    for video, (picture, sound, prompt) in zip(examples["videos"], examples["pictures"]):
        entry = entries[video.stem]
        assert prompt == f"a {entry['class']}"
        maps = [np.load(app.localize_video(video, opts, models, tmp_path / "v").files[0])["maps"].astype(np.float32)]
        maps.append(np.load(app.localize_picture(picture, opts, models, tmp_path / "p",
                                                 audio_path=sound).files[0])["map"])
        app.localize_picture(picture, opts, models, tmp_path / "p", prompt=prompt)
        for m in maps:
            gt = gt_map(entry["bbox"], "vggss", size=m.shape[-1]) > 0
            assert m[..., gt].mean() > 1.5 * m[..., ~gt].mean(), (video.name, entry["class"])


def test_the_page_handlers_answer_with_results_or_messages(tiny, media, tmp_path):
    """The Gradio wiring without a browser: each button's function returns (picture, video, files,
    status) or raises gr.Error with the one-line message; an unexpected failure too."""
    import gradio as gr

    loads = []

    def loader(audio_encoder, tower, device):
        loads.append(audio_encoder)
        if audio_encoder == "broken":
            raise RuntimeError("disk on fire")
        return tiny

    demo = app.build_app(app.ModelCache(loader=loader), work_dir=tmp_path / "work", examples_dir=False)
    fns = {f.name: f.fn for f in demo.fns.values()}
    assert sorted(fns) == ["run_sound", "run_text", "run_video"]
    options = [app.WORLD, app.AUTO_TOWER, "legrad", -2, "cpu", 2, 0.5]
    picture, video, files, status = fns["run_video"](str(media / "clip.mp4"), *options)
    assert picture.shape[1] > 2 * picture.shape[0] and Path(video).name == "clip_legrad.mp4"
    assert sorted(Path(f).name for f in files) == ["clip_legrad.mp4", "clip_legrad_maps.npz", "clip_overlay.png"]
    assert status.startswith("legrad maps of 20 frames") and "Total" in status
    picture, video, files, status = fns["run_text"](str(media / "picture.png"), "a box", *options)
    assert video is None and len(files) == 2 and "'a box'" in status
    assert loads == [app.WORLD]  # loaded once, reused
    for name, args, expected in [
            ("run_video", (str(media / "mute.mp4"),), "mute.mp4: the video has no audio track"),
            ("run_sound", (str(media / "picture.png"), None), "upload a sound file with the picture"),
            ("run_text", (None, "a dog"), "upload a picture first")]:
        with pytest.raises(gr.Error) as e:
            fns[name](*args, *options)
        assert expected in e.value.message
    with pytest.raises(gr.Error) as e:
        fns["run_video"](str(media / "clip.mp4"), "broken", *options[1:])
    assert e.value.message == "RuntimeError: disk on fire"


def test_command_line_refuses_other_hosts_and_bad_ports(monkeypatch, caplog):
    assert app.main(["--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in caplog.text
    monkeypatch.setenv("GRADIO_SERVER_PORT", "eighty")
    assert app.main([]) == 2
    assert "GRADIO_SERVER_PORT='eighty'" in caplog.text
    assert app.main(["--port", "70000"]) == 2
    monkeypatch.setitem(sys.modules, "gradio", None)  # installed without the [app] extra
    assert app.main(["--port", "7999"]) == 2
    assert "the web demo needs Gradio: pip install -e '.[app]'" in caplog.text


# ----------------------------------------------------------------------------- in a real browser
def find_chromium() -> str | None:
    """A chromium to drive: $AVLEGRAD_CHROMIUM, else Debian's ``chromium`` (``apt-get install chromium``)
    or another Chrome on the PATH. Playwright's own browser download needs the internet."""
    for name in (os.environ.get("AVLEGRAD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(example_cache, tmp_path):
    """``python app.py`` in a subprocess on a free loopback port (through GRADIO_SERVER_PORT), its
    examples generated beforehand into its cache; yields (url, a generated clip)."""
    cache = example_cache
    examples = app.ensure_examples(cache / "app_examples")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "AVLEGRAD_CACHE": str(cache),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}: {(tmp_path / 'app.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not answer on {url}: {(tmp_path / 'app.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url, examples["videos"][0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def chromium():
    """(playwright's sync API, the chromium executable); skips, before the app is started, where
    either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium found to drive (apt-get install chromium; .ci/run installs it)")
    return sync_api, executable


@pytest.mark.slow
def test_the_page_in_a_headless_browser(chromium, served_app, tmp_path):
    (sync_api, chromium), (url, clip) = chromium, served_app
    mute = tmp_path / "mute.mp4"
    write_video(mute, box_frames(5), 10)
    hosts = set()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: hosts.add(urlparse(r.url).netloc) if r.url.startswith("http") else None)
            page.goto(url)
            upload = page.locator("#video-input input[type=file]")
            # a bad upload: a message in the page, and the app stays up
            upload.set_input_files(str(mute))
            page.wait_for_selector("#video-input video", timeout=30000)
            page.click("#run-video")
            toast = page.locator(".toast-body").first
            toast.wait_for(timeout=30000)
            assert "mute.mp4: the video has no audio track" in toast.inner_text()
            assert "Traceback" not in page.content()
            page.locator(".toast-close").first.click()
            # a world clip: the frame and its heatmap, the heatmap video, the downloads
            page.locator("#video-input button[aria-label='Clear']").first.click()
            upload.set_input_files(str(clip))
            page.wait_for_selector("#video-input video", timeout=30000)
            page.click("#run-video")
            image = page.locator("#result-image img")
            image.wait_for(timeout=60000)
            page.wait_for_selector("#result-video video", timeout=30000)
            page.wait_for_selector("#result-files a", timeout=30000)
            status = page.locator("#status").inner_text()
            assert "legrad maps of 30 frames" in status
            data = page.request.get(image.get_attribute("src")).body()
            page.mouse.move(0, 0)
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert hosts == {urlparse(url).netloc}, f"the page fetched from elsewhere: {hosts}"
    result = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    frame = decoded_frames(clip)[int(re.search(r"the picture is frame (\d+)", status).group(1))]
    h, w = frame.shape[:2]
    k = result.shape[0] // h
    assert result.shape == (h * k, 2 * w * k + app.GAP, 3)
    left, right = result[:, :w * k].astype(int), result[:, w * k + app.GAP:].astype(int)
    assert np.abs(left[::k, ::k] - frame).mean() < 2  # the input frame, as uploaded...
    assert np.abs(right - left).mean() > 20  # ...beside a heatmap that changed it
    target = os.environ.get("AVLEGRAD_APP_SCREENSHOT")  # e.g. docs/app_screenshot.png, to refresh the README's
    if target:
        from PIL import Image
        import io

        picture = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        picture.save(target, optimize=True)
