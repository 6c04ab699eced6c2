"""Datasets: both on-disk layouts, bad clips, the folder and Flickr readers, splits, lookup."""
import json

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from avlegrad.data import ClipDataset, ClipRecord, SkippedClip, create_dataset, write_audio, write_video
from avlegrad.data.annotations import (AnnotationNotFoundError, find_annotation, read_flickr_test_csv,
                                       read_flickr_xml, read_id_list)
from avlegrad.metrics import gt_map

SR = 16000


def tone(seconds=1.0, sr=SR, amplitude=0.3, freq=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def frame(value=120, size=32):
    image = np.full((size, size, 3), value, dtype=np.uint8)
    image[8:20, 4:12] = (200, 30, 30)
    return image


def write_clip_video(path, audio=True, silent=False, n_frames=5):
    sound = np.zeros(SR, dtype=np.float32) if silent else tone()
    write_video(path, [frame(40 * i) for i in range(n_frames)], fps=5, audio=sound if audio else None,
                sample_rate=SR)


def write_prepared(root, clip_id, sr=SR, audio=None):
    (root / "frames").mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame()).save(root / "frames" / f"{clip_id}.jpg")
    write_audio(root / "audio" / f"{clip_id}.wav", tone(sr=sr) if audio is None else audio, sr)


def write_vggss(root, entries, ids=None, name="vggss_test.csv"):
    (root / "vggss.json").write_text(json.dumps(entries))
    ids = [e["file"] for e in entries] if ids is None else ids
    (root / name).write_text("\r\n".join(ids) + "\r\n")  # the published csv uses CRLF


def entry(clip_id, boxes=((0.1, 0.2, 0.5, 0.6),), label="dog barking"):
    return {"file": clip_id, "class": label, "bbox": [list(b) for b in boxes]}


@pytest.fixture
def vggss_root(tmp_path):
    """Good clips in both layouts plus every kind of bad clip, with VGG-SS annotations."""
    root = tmp_path / "vggss"
    write_prepared(root, "prepared_000001", sr=22050)  # resampled on load
    write_clip_video(root / "videos" / "rawvideo_00_000002.mp4")
    write_clip_video(root / "flatlayout_000003.mp4")
    write_clip_video(root / "videos" / "noaudiotrk_000004.mp4", audio=False)
    write_clip_video(root / "videos" / "silentclip_000005.mp4", silent=True)
    good = (root / "videos" / "rawvideo_00_000002.mp4").read_bytes()
    (root / "videos" / "truncated_0_000006.mp4").write_bytes(good[: len(good) // 3])
    (root / "videos" / "garbagebyte_000007.mp4").write_bytes(b"\x00not a video" * 100)
    write_prepared(root, "silentwav_0_000009", audio=np.zeros(SR, dtype=np.float32))
    entries = [entry("prepared_000001", [(0.1, 0.2, 0.5, 0.6), (0.3, 0.3, -2.88e16, 0.9)]),
               entry("rawvideo_00_000002", [(0.0, 0.5, 0.0, 0.9)], label="cat meowing"),
               entry("flatlayout_000003"), entry("noaudiotrk_000004"), entry("silentclip_000005"),
               entry("truncated_0_000006"), entry("garbagebyte_000007"), entry("missingclip_000008"),
               entry("silentwav_0_000009")]
    write_vggss(root, entries, ids=[e["file"] for e in entries] + ["notinjson0_000010"])
    return root


def test_vggsound_records_and_skips(vggss_root):
    ds = create_dataset("vggsound", vggss_root)
    assert isinstance(ds, ClipDataset) and ds.name == "vggsound" and len(ds) == 10
    assert ds.ids[0] == "prepared_000001" and ds.ids[-1] == "notinjson0_000010"
    items = {ds.ids[i]: ds[i] for i in range(len(ds))}

    good = [items[i] for i in ("prepared_000001", "rawvideo_00_000002", "flatlayout_000003")]
    assert all(isinstance(r, ClipRecord) for r in good)
    for record in good:
        assert record.frame.ndim == 3 and record.frame.dtype == np.uint8 and record.sample_rate == SR
        assert record.waveform.dtype == np.float32 and abs(len(record.waveform) - SR) < SR // 20
        assert record.box_format == "vggss" and record.meta["dataset"] == "vggsound"
    assert good[0].label == "dog barking" and good[1].label == "cat meowing"
    assert good[0].boxes[1][2] == -2.88e16  # boxes kept as published; gt_map clips them
    assert gt_map(good[0].boxes, good[0].box_format).sum() > 0
    assert good[1].frame.shape == (32, 32, 3)

    reasons = {k: v.reason for k, v in items.items() if isinstance(v, SkippedClip)}
    assert set(reasons) == {"noaudiotrk_000004", "silentclip_000005", "truncated_0_000006",
                            "garbagebyte_000007", "missingclip_000008", "silentwav_0_000009",
                            "notinjson0_000010"}
    assert "no audio stream" in reasons["noaudiotrk_000004"]
    assert "silent" in reasons["silentclip_000005"] and "silent" in reasons["silentwav_0_000009"]
    assert "missing" in reasons["missingclip_000008"]
    assert "no entry" in reasons["notinjson0_000010"]
    for clip_id in ("truncated_0_000006", "garbagebyte_000007"):
        assert "cannot decode" in reasons[clip_id] and f"{clip_id}.mp4" in reasons[clip_id]


def test_annotation_report_counts_what_it_met(vggss_root):
    report = create_dataset("vggsound", vggss_root).annotation_report
    assert report.clips == 10 and report.boxes == 10
    assert (report.corrupt_boxes, report.degenerate_boxes, report.zero_area_clips) == (1, 1, 1)
    assert report.missing_clips == 1 and report.examples["missing_clips"] == ["notinjson0_000010"]
    assert report.examples["zero_area_clips"] == ["rawvideo_00_000002"]
    assert "1 corrupt" in str(report) and report.as_dict()["degenerate_boxes"] == 1


def test_dataloader_collate(vggss_root):
    ds = create_dataset("vggsound", vggss_root, limit=5)
    assert len(ds) == 5
    batches = list(DataLoader(ds, batch_size=3, collate_fn=ds.collate))
    records = [r for recs, _ in batches for r in recs]
    skipped = [s for _, skips in batches for s in skips]
    assert len(batches) == 2 and len(records) == 3 and len(skipped) == 2
    assert isinstance(records[0].frame, np.ndarray)  # frames are left as they are


def test_unknown_names_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="vggsound.*flickr.*folder.*synthetic"):
        create_dataset("audioset", tmp_path)
    with pytest.raises(ValueError, match="test, heard, unheard"):
        create_dataset("vggsound", tmp_path, split="train")
    with pytest.raises(ValueError, match="test250"):
        create_dataset("flickr", tmp_path, split="heard")
    with pytest.raises(FileNotFoundError, match="YouTube") as info:
        create_dataset("vggsound", tmp_path / "nowhere")
    assert "download_annotations.py" in str(info.value) and "prepare_clips.py" in str(info.value)
    with pytest.raises(FileNotFoundError, match="Flickr"):
        create_dataset("flickr", tmp_path / "nowhere")


def test_annotation_lookup_order(tmp_path, monkeypatch):
    cache, root, explicit = tmp_path / "cache", tmp_path / "root", tmp_path / "explicit"
    monkeypatch.setenv("AVLEGRAD_CACHE", str(cache))
    root.mkdir()
    with pytest.raises(AnnotationNotFoundError, match="python data/download_annotations.py") as info:
        find_annotation("vggss.json", "vggss", root=root)
    assert str(cache / "annotations" / "vggss" / "vggss.json") in str(info.value)

    for path in (cache / "annotations" / "vggss" / "vggss.json", root / "metadata" / "vggss.json", explicit / "vggss.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[]")
    assert find_annotation("vggss.json", "vggss", root=tmp_path / "empty") == cache / "annotations" / "vggss" / "vggss.json"
    assert find_annotation("vggss.json", "vggss", root=root) == root / "metadata" / "vggss.json"
    assert find_annotation("vggss.json", "vggss", root=root, annotations=explicit) == explicit / "vggss.json"
    assert find_annotation("vggss.json", "vggss", annotations=explicit / "vggss.json") == explicit / "vggss.json"
    with pytest.raises(AnnotationNotFoundError):  # an explicit path is the only place searched
        find_annotation("vggss_test.csv", "vggss", root=root, annotations=explicit)
    with pytest.raises(AnnotationNotFoundError, match="no known public URL"):
        find_annotation("test_list_250.txt", "flickr", root=root)


def test_vggsound_splits_and_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVLEGRAD_CACHE", str(cache))
    (cache / "annotations" / "vggss").mkdir(parents=True)
    write_vggss(cache / "annotations" / "vggss", [entry("aaaaaaaaaaa_000001"), entry("bbbbbbbbbbb_000002")],
                ids=["bbbbbbbbbbb_000002"], name="vggss_heard_test.csv")
    root = tmp_path / "clips"
    root.mkdir()
    assert create_dataset("vggsound", root, split="heard").ids == ["bbbbbbbbbbb_000002"]
    # no vggss_test.csv anywhere: the json (which is the test set) gives the ids
    assert create_dataset("vggsound", root).ids == ["aaaaaaaaaaa_000001", "bbbbbbbbbbb_000002"]
    with pytest.raises(AnnotationNotFoundError, match="vggss_unheard_test.csv"):
        create_dataset("vggsound", root, split="unheard")


def test_real_vggss_splits(shared_data, tmp_path):
    vggss = shared_data / "vggss"
    assert len(read_id_list(vggss / "vggss_test.csv")) == 5158
    test = create_dataset("vggsound", tmp_path, annotations=vggss)
    report = test.annotation_report
    assert len(test) == 5158 and report.missing_clips == 0
    assert (report.corrupt_boxes, report.degenerate_boxes, report.zero_area_clips) == (12, 6, 2)
    heard = create_dataset("vggsound", tmp_path, split="heard", annotations=vggss)
    unheard = create_dataset("vggsound", tmp_path, split="unheard", annotations=vggss)
    # benchmarks.md says 2,563 / 2,574: that is `wc -l` (the files lack a final newline)
    assert (len(heard), len(unheard)) == (2564, 2575)
    assert not set(heard.ids) & set(unheard.ids)
    assert isinstance(heard[0], SkippedClip) and "missing" in heard[0].reason


def test_real_flickr_lists(shared_data):
    flickr = shared_data / "flickr"
    rows = read_flickr_test_csv(flickr / "flickr_test.csv")
    ids250 = read_id_list(flickr / "test_list_250.txt")
    assert len(rows) == 249 and len(ids250) == 250
    assert set(ids250) - set(rows) == {"3908875357"}
    assert rows["10000130166"] == 202


# ---------------------------------------------------------------------------------------------
# Flickr-SoundNet
# ---------------------------------------------------------------------------------------------

def flickr_xml(boxes, extra=""):
    bbox = "".join(f"<bbox><label>{i}</label><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bbox>" for i, b in enumerate(boxes))
    return f"<annotation><filename>x.jpg</filename>{extra}<object>{bbox}<note>n</note></object></annotation>"


def test_flickr_xml_reader(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(flickr_xml([(10, 20, 120, 200), (15, 25, 130, 210), (0, 0, 256, 256)]))
    assert read_flickr_xml(path) == [[10, 20, 120, 200], [15, 25, 130, 210], [0, 0, 256, 256]]
    path.write_text("<annotation><object><bbox><a>0</a><xmin>1</xmin></bbox></object></annotation>")
    with pytest.raises(ValueError, match="a.xml"):
        read_flickr_xml(path)
    path.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="cannot parse"):
        read_flickr_xml(path)


def test_flickr_dataset(tmp_path):
    root = tmp_path / "flickr"
    (root / "Annotations").mkdir(parents=True)
    boxes = {"1001": [(10, 20, 120, 200), (15, 25, 130, 210)], "1002": [(0, 0, 128, 256)]}
    for clip_id, b in boxes.items():
        (root / "Annotations" / f"{clip_id}.xml").write_text(flickr_xml(b))
        write_prepared(root, clip_id)
    write_prepared(root, "1003")  # media but no XML
    (root / "flickr_test.csv").write_text("1001,202\r\n1002,0\r\n")
    (root / "metadata").mkdir()
    (root / "metadata" / "test_list_250.txt").write_text("1001\n1002\n1003\n")

    test = create_dataset("flickr", root)
    assert test.ids == ["1001", "1002"] and test.annotation_report.missing_clips == 0
    record = test[0]
    assert isinstance(record, ClipRecord) and record.box_format == "flickr"
    assert record.boxes == [[10, 20, 120, 200], [15, 25, 130, 210]]
    assert record.meta["flickr_test_csv_value"] == 202 and record.label is None
    gt = gt_map(record.boxes, record.box_format)
    assert gt.max() == 1.0 and 0.5 in gt

    all250 = create_dataset("flickr", root, split="test250")
    assert all250.ids == ["1001", "1002", "1003"] and all250.annotation_report.missing_clips == 1
    skipped = all250[2]
    assert isinstance(skipped, SkippedClip) and "1003.xml" in skipped.reason


# ---------------------------------------------------------------------------------------------
# folder
# ---------------------------------------------------------------------------------------------

def test_folder_dataset(tmp_path):
    root = tmp_path / "any"
    write_clip_video(root / "b.mp4")
    write_clip_video(root / "sub" / "a.mp4")
    write_clip_video(root / "sub" / "quiet.mp4", audio=False)
    (root / "notes.txt").write_text("not a video")
    (root / "sub" / ".partial.tmp1.mp4").write_bytes(b"")  # an unfinished atomic write
    ds = create_dataset("folder", root)
    assert ds.ids == ["b", "sub/a", "sub/quiet"]
    first, second, third = ds[0], ds[1], ds[2]
    assert isinstance(first, ClipRecord) and first.boxes is None and first.box_format is None
    assert isinstance(second, ClipRecord) and second.clip_id == "sub/a"
    assert isinstance(third, SkippedClip) and "no audio stream" in third.reason
    assert ds.annotation_report.clips == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video files"):
        create_dataset("folder", tmp_path / "empty")


def test_folder_dataset_takes_every_video_suffix_localize_takes(tmp_path):
    """One VIDEO_SUFFIXES: the folder dataset refused the .mov / .avi files localize accepts."""
    from avlegrad.data.record import VIDEO_SUFFIXES
    from avlegrad.localize import VIDEO_SUFFIXES as localize_suffixes

    assert localize_suffixes is VIDEO_SUFFIXES and {".mov", ".avi"} <= set(VIDEO_SUFFIXES)
    write_clip_video(tmp_path / "c.mov")
    write_clip_video(tmp_path / "d.avi")
    ds = create_dataset("folder", tmp_path)
    assert ds.ids == ["c", "d"]
    assert all(isinstance(ds[i], ClipRecord) and ds[i].frame.ndim == 3 for i in range(2))


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------

def test_every_registered_dataset_constructs_or_says_what_it_needs(tmp_path, monkeypatch):
    """Each registered benchmark, on an empty root: it builds (the synthetic set generates itself)
    or raises one clear error naming the dataset or the missing file and how to get it."""
    from avlegrad.data import dataset_spec, list_datasets
    from avlegrad.scoring import list_scorings

    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))  # not the user's annotation cache
    names = list_datasets()
    assert names[:4] == ["vggsound", "flickr", "folder", "synthetic"] and len(names) == len(set(names))
    for name in names:
        spec = dataset_spec(name)
        assert spec.splits and spec.hint and spec.default_root
        assert all(spec.scoring_kind(split) in list_scorings() for split in spec.splits)
        if name == "synthetic":
            continue  # generated at its root: exercised by test_synthetic.py
        root = tmp_path / name
        root.mkdir()
        try:
            dataset = create_dataset(name, root, split=spec.splits[0])
        except (FileNotFoundError, ValueError) as e:
            message = str(e)
            assert "Traceback" not in message and (name in message or str(root) in message), (name, message)
        else:
            assert len(dataset) >= 0 and dataset.split == spec.splits[0]
        with pytest.raises(ValueError, match=f"unknown split 'nope' for dataset '{name}'"):
            create_dataset(name, root, split="nope")


def test_register_dataset_checks_its_arguments():
    from avlegrad.data import register_dataset

    with pytest.raises(ValueError, match="unknown scoring 'x-no-such-kind'"):  # not a name a user's kind may take
        register_dataset("x-test", scoring="x-no-such-kind")
    with pytest.raises(ValueError, match="splits must be a non-empty list"):
        register_dataset("x-test", splits=())
    with pytest.raises(ValueError, match="'vggsound' is already registered"):
        register_dataset("vggsound")(lambda root, **kw: None)
