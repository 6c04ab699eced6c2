"""The csv-boxes dataset (avlegrad/data/csv_boxes.py): a one-file benchmark of the registry."""
import json

import numpy as np
import pytest
from PIL import Image

from avlegrad import metrics
from avlegrad.data import ClipRecord, SkippedClip, create_dataset, dataset_spec, write_audio
from avlegrad.eval import EvalOptions, evaluate

SR = 16000
ROWS = [  # clip_id, x0, y0, x1, y1, width, height, label
    ("a", 0, 0, 224, 448, 448, 448, "dog"),
    ("b", 100, 40, 300, 240, 400, 320, "piano"),
    ("a", 224, 224, 448, 448, 448, 448, ""),  # a's second source, after b: clips keep first-seen order
    ("bad", 10, 10, 500, 20, 448, 448, "cat"),  # wider than its image: the clip is skipped
    ("bad", 0, 0, 10, 10, 448, 448, ""),
]


def write_root(root):
    lines = ["clip_id,x0,y0,x1,y1,image_width,image_height,label"]
    lines += [",".join(str(v) for v in row) for row in ROWS]
    root.mkdir(parents=True)
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for clip_id in ("a", "b", "bad"):
        (root / "frames").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "frames" / f"{clip_id}.jpg")
        t = np.arange(SR) / SR
        write_audio(root / "audio" / f"{clip_id}.wav", 0.3 * np.sin(2 * np.pi * 440 * t), SR)
    return root


def test_reads_normalises_and_skips_bad_rows(tmp_path):
    root = write_root(tmp_path / "bench")
    assert dataset_spec("csv-boxes").scoring == "boxes"
    ds = create_dataset("csv-boxes", root)
    assert ds.ids == ["a", "b", "bad"]
    a, b, bad = ds[0], ds[1], ds[2]
    assert isinstance(a, ClipRecord) and a.box_format == "vggss" and a.label == "dog"
    assert a.boxes == [[0, 0, 0.5, 1], [0.5, 0.5, 1, 1]]
    assert b.boxes == [[100 / 400, 40 / 320, 300 / 400, 240 / 320]] and b.label == "piano"
    assert isinstance(bad, SkippedClip) and "line 5" in bad.reason and "outside the 448 x 448 image" in bad.reason
    # the ground truth, painted by hand on the 224 grid: a's boxes are exact halves of the image
    want = np.zeros((224, 224))
    want[:, :112] = 1
    want[112:, 112:] = 1
    np.testing.assert_array_equal(metrics.gt_map(a.boxes, a.box_format), want)
    assert ds.annotation_report.clips == 3 and len(create_dataset("csv-boxes", root, limit=1)) == 1


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="csv-boxes dataset root .* does not exist: put boxes.csv"):
        create_dataset("csv-boxes", tmp_path / "nowhere")
    (tmp_path / "r").mkdir()
    with pytest.raises(FileNotFoundError, match=r"csv-boxes: no .*boxes.csv"):
        create_dataset("csv-boxes", tmp_path / "r")
    (tmp_path / "r" / "boxes.csv").write_text("clip_id,x0,y0\n")
    with pytest.raises(ValueError, match="no column x1, y1, image_width, image_height"):
        create_dataset("csv-boxes", tmp_path / "r")


def test_evaluates_like_a_box_benchmark(tmp_path):
    root = write_root(tmp_path / "bench")
    summary = evaluate(EvalOptions(dataset="csv-boxes", root=str(root), methods=["center"],
                                   out=str(tmp_path / "run"), device="cpu"))
    center = summary["methods"]["center"]
    ds = create_dataset("csv-boxes", root)
    want = [metrics.ciou(metrics.center_prior(), metrics.gt_map(ds[i].boxes, "vggss")) for i in range(2)]
    assert center["n"] == 2 and center["mean_ciou"] == pytest.approx(np.mean(want))
    rows = [json.loads(line) for line in (tmp_path / "run" / "clips.jsonl").read_text().splitlines()]
    assert {r["clip_id"] for r in rows if "ciou" in r} == {"a", "b"}
