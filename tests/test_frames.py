"""Frames decode to the right 8-bit RGB in every common picture format, bit depth and channel
layout and in the usual video pixel formats, checked against reference decoders (PIL's
``convert("RGB")`` for 8-bit pictures, PyAV's ``to_ndarray(format="rgb24")`` for video) and against
the pixels written; frames too small for a meaningful map are refused with the reason (issue 13,
item 9). 16-bit grayscale pictures used to come back all white (PIL's own conversion clips them)."""
import warnings

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from avlegrad import localize
from avlegrad.data.media import MIN_FRAME_SIDE, MediaError, load_frame, load_image

H, W = 37, 50  # odd on purpose


def smooth_rgb(h=H, w=W, shift=0):
    """Gradients (lossy codecs and chroma subsampling keep them within a few levels)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(20 + 200 * x / w + shift) % 256, 30 + 190 * y / h, 220 - 150 * (x + y) / (w + h)],
                    -1).astype(np.uint8)


def pil_reference(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


rgb = smooth_rgb()
gray = rgb[..., 1]
rgba = np.dstack([rgb, np.linspace(0, 255, W, dtype=np.uint8)[None].repeat(H, 0)])


def save_pil(array, mode=None, **kw):
    def write(path):
        im = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
        im.save(path, **kw)
    return write


def palette(path):  # P with a transparent index
    im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    im.save(path, transparency=3)


EIGHT_BIT = {  # name: (suffix, writer, PIL mode read back)
    "jpeg-rgb": (".jpg", save_pil(rgb, quality=95), "RGB"),
    "jpeg-gray": (".jpg", save_pil(gray), "L"),
    "jpeg-cmyk": (".jpg", save_pil(rgb, "CMYK"), "CMYK"),
    "png-rgb": (".png", save_pil(rgb), "RGB"),
    "png-rgba": (".png", save_pil(rgba), "RGBA"),
    "png-gray": (".png", save_pil(gray), "L"),
    "png-gray-alpha": (".png", save_pil(rgba, "LA"), "LA"),
    "png-palette": (".png", palette, "P"),
    "png-1bit": (".png", save_pil(gray, "1"), "1"),
    "bmp": (".bmp", save_pil(rgb), "RGB"),
    "webp": (".webp", save_pil(rgb, lossless=True), "RGB"),
    "webp-rgba": (".webp", save_pil(rgba, lossless=True), "RGBA"),
    "tiff": (".tif", save_pil(rgb), "RGB"),
    "tiff-cmyk": (".tiff", save_pil(rgb, "CMYK"), "CMYK"),
    "gif": (".gif", save_pil(rgb, "P"), "P"),
}


@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
def test_eight_bit_pictures_equal_pil_convert_rgb(tmp_path, name):
    suffix, write, mode = EIGHT_BIT[name]
    path = tmp_path / f"{name}{suffix}"
    write(path)
    with Image.open(path) as im:
        assert im.mode == mode  # the layout this case is about
    got = load_image(path)
    assert got.dtype == np.uint8 and got.shape == (H, W, 3)
    np.testing.assert_array_equal(got, pil_reference(path))
    np.testing.assert_array_equal(load_frame(path), got)
    # lossless colour formats give back the pixels written (gif: web palette dithered; webp drops
    # the colour under fully transparent pixels)
    if name in ("png-rgb", "png-rgba", "png-palette", "bmp", "webp", "tiff", "tiff-cmyk"):
        tol = 40 if mode == "P" else 0  # a 64-colour palette quantises
        assert np.abs(got.astype(int) - rgb).mean() <= tol / 4 and np.abs(got.astype(int) - rgb).max() <= tol


def sixteen_bit_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (H, W), dtype=np.uint16), rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grayscale_is_not_all_white(tmp_path, suffix):
    g16, _ = sixteen_bit_data()
    path = tmp_path / f"gray16{suffix}"
    Image.fromarray(g16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    # the fault: PIL's convert("RGB") clips every value to 255: all white but the darkest 0.4%
    np.testing.assert_array_equal(pil_reference(path)[..., 0], np.minimum(g16, 255))
    got = load_image(path)
    expected = np.repeat((g16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(got, expected)
    # the same samples as a 16-bit RGB PNG, which PIL reads itself (keeping the high byte): equal
    rgb_path = tmp_path / "as_rgb16.png"
    cv2.imwrite(str(rgb_path), np.repeat(g16[..., None], 3, axis=2))
    np.testing.assert_array_equal(got, pil_reference(rgb_path))


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_keeps_the_high_byte(tmp_path, channels):
    _, c16 = sixteen_bit_data(1)
    data = np.dstack([c16, c16[..., 0]]) if channels == 4 else c16
    path = tmp_path / "c16.png"
    cv2.imwrite(str(path), data[..., [2, 1, 0, 3][:channels]])  # OpenCV writes BGR(A)
    np.testing.assert_array_equal(load_image(path), (c16 >> 8).astype(np.uint8))


def test_float_and_32_bit_pictures(tmp_path):
    f = np.random.default_rng(2).random((H, W)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[..., 0], np.rint(f.astype(np.float64) * 255))
    Image.fromarray(f * 300).save(tmp_path / "wide.tif")
    with pytest.raises(MediaError, match=r"wide.tif: float image with values in \[0.*, 2.*\]"):
        load_image(tmp_path / "wide.tif")
    f[3, 4] = np.nan
    Image.fromarray(f).save(tmp_path / "nan.tif")
    with pytest.raises(MediaError, match="1 NaN or infinite pixels"):
        load_image(tmp_path / "nan.tif")
    i32 = np.random.default_rng(3).integers(0, 65536, (H, W)).astype(np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        Image.fromarray(i32).save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "i32.tif")[..., 2], (i32 >> 8).astype(np.uint8))


# ----------------------------------------------------------------------------- video pixel formats
VIDEO = [  # codec, pix_fmt, container, width, height, lossless
    ("libx264", "yuv420p", "mp4", 64, 48, False),
    ("libx264", "yuv444p", "mp4", 33, 27, False),
    ("mjpeg", "yuvj420p", "mkv", 64, 48, False),
    ("libx264", "yuv420p10le", "mp4", 64, 48, False),
    ("libx264rgb", "rgb24", "mkv", 33, 27, False),
    ("ffv1", "gray", "mkv", 33, 27, True),
    ("ffv1", "gray16le", "mkv", 34, 26, True),
    ("ffv1", "yuv420p10le", "mkv", 64, 48, False),
    ("rawvideo", "rgb24", "nut", 33, 27, True),
    ("libvpx-vp9", "yuv420p", "webm", 64, 48, False),
]


def write_pix_fmt(path, codec, pix_fmt, w, h, n=9):
    frames = [smooth_rgb(h, w, shift=4 * i) for i in range(n)]
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if codec.startswith("libx264"):
            s.options = {"crf": "4"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    return frames


@pytest.mark.parametrize("codec,pix_fmt,container,w,h,lossless", VIDEO, ids=[f"{c}-{p}" for c, p, *_ in VIDEO])
def test_video_pixel_formats_decode_to_rgb(tmp_path, codec, pix_fmt, container, w, h, lossless):
    path = tmp_path / f"clip.{container}"
    written = write_pix_fmt(path, codec, pix_fmt, w, h)
    with av.open(str(path)) as c:
        decoded = list(c.decode(video=0))
        assert decoded[0].format.name == pix_fmt or pix_fmt == "rgb24"  # libx264rgb stores gbrp
        reference = [f.to_ndarray(format="rgb24") for f in decoded]
    with localize.FrameReader(path) as reader:
        ours = [f.rgb for f in reader]
    assert len(ours) == len(reference) == len(written)
    for got, ref, src in zip(ours, reference, written):
        assert got.dtype == np.uint8 and got.shape == (h, w, 3)
        np.testing.assert_array_equal(got, ref)
        if pix_fmt.startswith("gray"):
            src = np.repeat(np.rint(src @ [0.299, 0.587, 0.114]).astype(np.uint8)[..., None], 3, axis=2)
        err = np.abs(got.astype(int) - src)
        assert err.mean() < (2.5 if lossless else 4), err.mean()  # the picture, not white or black
    middle = load_frame(path, time=0.4)
    np.testing.assert_array_equal(middle, reference[4])


# ----------------------------------------------------------------------------- frames too small
@pytest.mark.parametrize("size,ok", [((1, 1), False), ((15, 40), False), ((40, 15), False), ((16, 16), True)])
def test_frames_too_small_for_a_map_are_refused_with_the_reason(tmp_path, size, ok):
    h, w = size
    path = tmp_path / "small.png"
    Image.fromarray(smooth_rgb(h, w)).save(path)
    assert load_image(path).shape == (h, w, 3)  # the picture reads (masks may be any size)
    if ok:
        assert load_frame(path).shape == (h, w, 3)
        return
    with pytest.raises(MediaError, match=rf"frame is {w}x{h} px: smaller than {MIN_FRAME_SIDE} px on a side"):
        load_frame(path)
    video = tmp_path / "small.mkv"
    write_pix_fmt(video, "ffv1", "yuv444p", w, h, n=3)
    with pytest.raises(MediaError, match="too small for a meaningful map"):
        load_frame(video)
    with pytest.raises(MediaError, match="too small for a meaningful map"), localize.FrameReader(video) as reader:
        list(reader)


def test_a_clip_with_a_tiny_frame_is_skipped_with_the_reason(tmp_path):
    """A 1x1 frame used to be scored without a word; the dataset now skips the clip, saying why."""
    from avlegrad.data import create_dataset
    from avlegrad.data.media import write_video
    from avlegrad.data.record import ClipRecord, SkippedClip

    t = np.arange(16000) / 16000
    sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_video(tmp_path / "good.mp4", [smooth_rgb(32, 48)] * 5, 5, audio=sound, sample_rate=16000)
    # H.264 in yuv420p cannot be 1 px wide: a lossless codec that can
    with av.open(str(tmp_path / "tiny.mkv"), "w") as out:
        v = out.add_stream("ffv1", rate=5)
        v.width, v.height, v.pix_fmt = 1, 1, "yuv444p"
        a = out.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for i in range(5):
            out.mux(v.encode(av.VideoFrame.from_ndarray(np.full((1, 1, 3), 128, np.uint8), format="rgb24")))
        out.mux(v.encode())
        frame = av.AudioFrame.from_ndarray((sound[None] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        out.mux(a.encode(frame))
        out.mux(a.encode())
    ds = create_dataset("folder", tmp_path)
    by_id = {ds.ids[i]: ds[i] for i in range(len(ds))}
    assert isinstance(by_id["good"], ClipRecord)
    assert isinstance(by_id["tiny"], SkippedClip)
    assert "frame is 1x1 px: smaller than 16 px on a side" in by_id["tiny"].reason


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_video_frame_is_turned_upright_as_localize_shows_it(tmp_path, rotation):
    """eval's frame (load_frame) used to ignore the display rotation that localize applies."""
    coded = smooth_rgb(32, 48)
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv444p"
        s.options = {"crf": "0"}
        s.set_display_rotation(rotation)
        for _ in range(5):
            out.mux(s.encode(av.VideoFrame.from_ndarray(coded, format="rgb24")))
        out.mux(s.encode())
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        reference = np.rot90(frames[2].to_ndarray(format="rgb24"), int(frames[2].rotation) // 90 % 4)
    assert reference.shape[:2] == ((32, 48) if rotation == 180 else (48, 32))
    got = load_frame(path, time=0.2)
    np.testing.assert_array_equal(got, reference)
    with localize.FrameReader(path) as reader:
        np.testing.assert_array_equal([f.rgb for f in reader][2], got)


# ----------------------------------------------------------------------------- one-thread conversions
@pytest.mark.parametrize("w,h", [(64, 48), (33, 27), (640, 360)])
def test_one_thread_conversions_give_pyav_defaults_pixels(w, h):
    """localize converts yuv420p <-> rgb24 with ``threads=1`` (PyAV >= 17 starts a thread pool per
    frame by default, several times slower): the pixels must be those of PyAV's default call."""
    from avlegrad.data.media import frame_rgb, reformat_kwargs

    rgb = smooth_rgb(h, w, shift=7)
    rgb[::5, ::3] = 255 - rgb[::5, ::3]  # sharp detail, so chroma subsampling and rounding matter
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    ours = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", **reformat_kwargs())
    for a, b in zip(yuv.planes, ours.planes):  # rows are padded to an alignment: compare the pixels
        rows = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in (a, b)]
        np.testing.assert_array_equal(*rows)
    np.testing.assert_array_equal(frame_rgb(yuv), yuv.to_ndarray(format="rgb24"))
