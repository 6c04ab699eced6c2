"""The synthetic benchmark: real mp4s, the exact vggss.json format, determinism, idempotence."""
import json
import re

import av
import numpy as np
import pytest

from avlegrad.data import ClipRecord, create_dataset, generate_synthetic, load_audio, load_frame, video_info
from avlegrad.data.synthetic import CLASSES, MANIFEST

SMALL = dict(num_clips=6, seed=3, size=96, duration=1.0, fps=10)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "a", **SMALL)


def decoded(root, clip_id):
    path = root / "videos" / f"{clip_id}.mp4"
    return load_frame(path), load_audio(path)[0]


def test_format_matches_vggss(small_set):
    entries = json.loads((small_set / "vggss.json").read_text())
    assert isinstance(entries, list) and len(entries) == 6
    ids = [e["file"] for e in entries]
    assert (small_set / "vggss_test.csv").read_text().split() == ids and len(set(ids)) == 6
    for e in entries:
        assert set(e) == {"file", "class", "bbox"} and e["class"] in CLASSES
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}_\d{6}", e["file"])
        assert len(e["bbox"]) == 1 and len(e["bbox"][0]) == 4
        x0, y0, x1, y1 = e["bbox"][0]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1


def test_real_mp4_with_h264_and_aac(small_set):
    clip_id = json.loads((small_set / "vggss.json").read_text())[0]["file"]
    path = small_set / "videos" / f"{clip_id}.mp4"
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    info = video_info(path)
    assert info["has_audio"] and (info["width"], info["height"]) == (96, 96)
    assert info["duration"] == pytest.approx(1.0, abs=0.15)


def test_boxes_contain_the_sounding_object(small_set):
    for e in json.loads((small_set / "vggss.json").read_text()):
        image, _ = decoded(small_set, e["file"])
        h, w, _ = image.shape
        x0, y0, x1, y1 = (np.array(e["bbox"][0]) * [w, h, w, h]).round().astype(int)
        color = np.array(CLASSES[e["class"]].color, dtype=float)
        centre = image[(y0 + y1) // 2 - 1:(y0 + y1) // 2 + 2, (x0 + x1) // 2 - 1:(x0 + x1) // 2 + 2]
        assert np.abs(centre.reshape(-1, 3).mean(0) - color).max() < 40, e  # the object is there
        inside = np.abs(image[y0:y1, x0:x1].astype(float) - color).max(axis=2) < 40
        assert inside.mean() > 0.3  # and fills a good part of its box (disc ~0.79, star ~0.35)
        # a ring of pixels just outside the box is (almost) never the object's colour
        near, box_zone = np.zeros((h, w), bool), np.zeros((h, w), bool)
        near[max(y0 - 6, 0):y1 + 6, max(x0 - 6, 0):x1 + 6] = True
        box_zone[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True  # compression blurs edges
        ring = near & ~box_zone
        outside = np.abs(image[ring].astype(float) - color).max(axis=1) < 25
        assert outside.mean() < 0.2


def test_sound_is_the_annotated_class(small_set):
    for e in json.loads((small_set / "vggss.json").read_text()):
        _, audio = decoded(small_set, e["file"])
        assert 0.2 < np.abs(audio).max() <= 1.0
        if CLASSES[e["class"]].sound == "tone":  # a steady tone peaks at its pitch (+-3%)
            spectrum = np.abs(np.fft.rfft(audio))
            peak = np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(spectrum)]
            assert abs(peak - CLASSES[e["class"]].pitch) < 0.04 * CLASSES[e["class"]].pitch


def test_deterministic(small_set, tmp_path):
    again = generate_synthetic(tmp_path / "b", **SMALL)
    assert (again / "vggss.json").read_bytes() == (small_set / "vggss.json").read_bytes()
    for e in json.loads((again / "vggss.json").read_text())[:3]:
        (frame_a, audio_a), (frame_b, audio_b) = decoded(small_set, e["file"]), decoded(again, e["file"])
        np.testing.assert_array_equal(frame_a, frame_b)
        np.testing.assert_array_equal(audio_a, audio_b)
    other = generate_synthetic(tmp_path / "c", **{**SMALL, "seed": 4})
    assert (other / "vggss.json").read_bytes() != (small_set / "vggss.json").read_bytes()


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    root = generate_synthetic(tmp_path / "s", **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert generate_synthetic(root, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps  # untouched

    root_ids = set(json.loads((root / MANIFEST).read_text())["clips"])
    generate_synthetic(root, **{**SMALL, "num_clips": 2, "seed": 9})
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["params"]["num_clips"] == 2 and len(manifest["clips"]) == 2
    assert {p.stem for p in (root / "videos").glob("*.mp4")} == set(manifest["clips"])  # old ones gone
    assert not root_ids & set(manifest["clips"])

    (root / "videos" / f"{manifest['clips'][0]}.mp4").unlink()  # an incomplete set is redone
    generate_synthetic(root, **{**SMALL, "num_clips": 2, "seed": 9})
    assert (root / "videos" / f"{manifest['clips'][0]}.mp4").is_file()


def test_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="red disc"):
        generate_synthetic(tmp_path, classes=["purple unicorn"])
    with pytest.raises(ValueError, match="even"):
        generate_synthetic(tmp_path, size=95)


def test_create_dataset_generates_defaults(tmp_path):
    ds = create_dataset("synthetic", tmp_path / "new")
    assert len(ds) == 32 and ds.name == "synthetic"
    record = ds[0]
    assert isinstance(record, ClipRecord) and record.box_format == "vggss" and record.label in CLASSES
    assert record.frame.shape == (160, 160, 3) and len(record.waveform) == pytest.approx(48000, abs=1100)
    assert ds.annotation_report.corrupt_boxes == 0 and ds.annotation_report.zero_area_clips == 0


def test_a_set_made_by_an_older_generator_is_regenerated_with_its_settings(tmp_path):
    root = generate_synthetic(tmp_path / "s", **SMALL)
    manifest = json.loads((root / MANIFEST).read_text())
    old = {k: v for k, v in manifest["params"].items() if k not in ("object_counts", "center_spread")}
    old["version"] = 2  # what the previous generator wrote
    (root / MANIFEST).write_text(json.dumps({**manifest, "params": old}))
    (root / "vggss.json").write_text(json.dumps([{"file": c, "class": "red disc", "bbox": [[0, 0, 1, 1]]}
                                                 for c in manifest["clips"]]))
    ds = create_dataset("synthetic", root)
    assert json.loads((root / MANIFEST).read_text()) == manifest  # today's scenes, same settings
    assert len(ds) == SMALL["num_clips"] and ds.entries[0].boxes != [[0, 0, 1, 1]]

    foreign = tmp_path / "foreign"  # a VGG-SS-format folder without our manifest is read as it is
    (foreign / "videos").mkdir(parents=True)
    (foreign / "vggss.json").write_text((root / "vggss.json").read_text())
    assert len(create_dataset("synthetic", foreign)) == SMALL["num_clips"]
    assert not (foreign / MANIFEST).exists()


def test_an_interrupted_regeneration_never_pairs_old_boxes_with_new_videos(tmp_path, monkeypatch):
    from avlegrad.data import synthetic

    root = generate_synthetic(tmp_path / "s", **SMALL)
    manifest = json.loads((root / MANIFEST).read_text())
    old = {k: v for k, v in manifest["params"].items() if k not in ("object_counts", "center_spread")}
    (root / MANIFEST).write_text(json.dumps({**manifest, "params": {**old, "version": 2, "max_objects": 1}}))
    calls = []

    def dies_on_the_third_clip(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    real_write = synthetic.write_video
    monkeypatch.setattr(synthetic, "write_video", dies_on_the_third_clip)
    with pytest.raises(KeyboardInterrupt):
        create_dataset("synthetic", root)
    assert not (root / "vggss.json").exists() and not (root / MANIFEST).exists()
    monkeypatch.setattr(synthetic, "write_video", real_write)
    (root / MANIFEST).write_text(json.dumps({**manifest, "params": {**old, "version": 2, "max_objects": 1}}))
    create_dataset("synthetic", root)  # a version-2 set of single objects stays a set of single objects
    regenerated = json.loads((root / MANIFEST).read_text())
    assert regenerated["params"]["object_counts"] == [1.0] and regenerated["params"]["num_clips"] == SMALL["num_clips"]
    assert all(len(scene["objects"]) == 1 for scene in regenerated["scenes"])


def test_scene_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="object_counts"):
        generate_synthetic(tmp_path, object_counts=[0, 0])
    with pytest.raises(ValueError, match="center_spread"):
        generate_synthetic(tmp_path, center_spread=0)
    with pytest.raises(ValueError, match="object_counts"):
        generate_synthetic(tmp_path, object_counts=[1, float("inf")])
    from avlegrad.data import world

    with pytest.raises(ValueError, match="center_spread"):
        world.make_scene(np.random.default_rng(0), 64, center_spread=-0.1)
