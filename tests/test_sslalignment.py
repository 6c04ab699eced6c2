"""The sound-following benchmarks: SSLalignment's and SLAVC's metrics against slow references
written here from their reference code's rules (kaistmm/SSLalignment test.py / utils.py
Evaluator_iiou and EvaluatorFull, stoneMo/SLAVC utils.py), the readers, and eval.py on them."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eval as eval_cli
from avlegrad import metrics
from avlegrad import metrics_sslalignment as ssl
from avlegrad.data import create_dataset
from avlegrad.data.sslalignment import entry_key, read_plus_silent_csv, read_sslalignment_json
from avlegrad.data.synthetic import interactive_object_ok

REPO = Path(__file__).resolve().parents[1]
N = 224


# ----------------------------------------------------------------------------- slow references
def ref_normalize(value):
    # utils.normalize_img: a constant map is left as it is
    vmin, vmax = value.min(), value.max()
    return (value - vmin) / (vmax - vmin) if vmax - vmin != 0 else value


def ref_cal_ciou(infer, gtmap, thres):
    # Evaluator_iiou.cal_CIOU: strict '>'; 0/0 (nothing predicted, empty GT) is NaN there, 0 here
    infer_map = np.zeros((N, N))
    infer_map[infer > thres] = 1
    denominator = np.sum(gtmap) + np.sum(infer_map * (gtmap == 0))
    return np.sum(infer_map * gtmap) / denominator if denominator else 0.0


def ref_entry(pred, gt_map):
    # test.py validate: median threshold, then the adaptive one
    pred = ref_normalize(pred)
    thr = sorted(pred.flatten().tolist())[int(N * N * 0.5)]
    ciou = ref_cal_ciou(pred, gt_map, thr)
    gt_nums = (gt_map != 0).sum()
    if int(gt_nums) == 0:
        gt_nums = int(N * N) // 2
    thr_adap = sorted(pred.flatten().tolist())[int(N * N) - int(gt_nums)]
    return ciou, ref_cal_ciou(pred, gt_map, thr_adap)


def ref_bbox2gtmap(boxes):
    gt = np.zeros((N, N))
    for xmin, ymin, xmax, ymax in [[int(v) for v in b] for b in boxes]:
        temp = np.zeros((N, N))
        temp[ymin:ymax, xmin:xmax] = 1
        gt += temp
    gt[gt > 0] = 1
    return gt


def ref_auc(x, y):
    # sklearn.metrics.auc as the references call it (increasing x): the trapezoidal rule
    return sum((x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2 for i in range(len(x) - 1))


def ref_iiou(cious, names, thr):
    groups = {}
    for value, name in zip(cious, names):
        groups.setdefault("_".join(name.split("_")[:-1]), []).append(value)
    found = []
    for values in groups.values():
        pair = np.array(values)
        binary = np.where(pair >= thr, 1, 0)
        found.append(np.min(binary))
    return np.mean(found)


def ref_summary(cious, adaptive, names):
    thr = [0.05 * i for i in range(21)]
    auc = ref_auc(thr, [np.sum(np.array(cious) >= t) / len(cious) for t in thr])
    auc_adap = ref_auc(thr, [np.sum(np.array(adaptive) >= t) / len(adaptive) for t in thr])
    return {"ap50": np.sum(np.array(cious) >= 0.5) / len(cious), "auc": auc, "mean_ciou": np.mean(cious),
            "ap50_adaptive": np.sum(np.array(adaptive) >= 0.5) / len(adaptive), "auc_adaptive": auc_adap,
            "iiou": ref_iiou(cious, names, 0.5), "iauc": ref_auc(thr, [ref_iiou(cious, names, t) for t in thr])}


def ref_precision_recall(bb_list, ciou_list, confidence_list, confidence_thr, ciou_thr=0.5):
    true_pos = false_pos = false_neg = 0
    for bb, ciou, confidence in zip(bb_list, ciou_list, confidence_list):
        if bb == 0:
            if confidence >= confidence_thr:
                false_pos += 1
        elif confidence >= confidence_thr:
            if ciou >= ciou_thr:
                true_pos += 1
            else:
                false_pos += 1
        else:
            false_neg += 1
    precision = 1. if true_pos + false_pos == 0 else true_pos / (true_pos + false_pos)
    recall = 1. if true_pos + false_neg == 0 else true_pos / (true_pos + false_neg)
    return precision, recall


def ref_ap(bb_list, ciou_list, confidence_list):
    precision, recall, skip = [], [], max(1, len(ciou_list) // 200)
    for thr in np.sort(np.array(confidence_list))[:-1][::-skip]:
        p, r = ref_precision_recall(bb_list, ciou_list, confidence_list, thr)
        precision.append(p)
        recall.append(r)
    precision_max = [np.max(precision[i:]) for i in range(len(precision))]
    return sum(precision_max[i] * (recall[i + 1] - recall[i]) for i in range(len(precision_max) - 1))


def ref_max_f1(bb_list, ciou_list, conf_list):
    conf_thr = list(sorted(conf_list))[::max(1, len(conf_list) // 10)]
    pr = [ref_precision_recall(bb_list, ciou_list, conf_list, thr) for thr in conf_thr]
    return max(2 * r * p / (r + p) if r + p > 0 else 0. for p, r in pr)


# ----------------------------------------------------------------------------- hand-made inputs
def hand_made_maps(rng):
    """Maps with ties (a few levels), constant maps, smooth maps of other sizes, and boxes with
    zero area, out of the frame, and overlapping."""
    maps = [np.round(rng.random((N, N)) * 3) / 3,  # 4 levels: huge ties at every threshold
            np.full((N, N), 0.7),  # constant
            np.zeros((14, 14)),  # constant, patch grid
            rng.random((14, 14)),  # resized (bilinear, align_corners=True)
            np.kron(rng.integers(0, 3, (7, 7)), np.ones((32, 32))).astype(float),  # blocky ties
            metrics.center_prior()]
    boxes = [[[10, 20, 120, 200]], [[0, 0, 0, 0]], [[50, 50, 50, 90]], [[0, 0, 224, 224]],
             [[100.0, 30.0, 300.0, 80.0]], [[5, 5, 60, 60], [40, 40, 200, 100]], [[-20, 10, 30, 50]]]
    return maps, boxes


def test_entry_cious_match_the_reference_on_ties_constant_maps_and_zero_area_boxes():
    rng = np.random.default_rng(0)
    maps, boxes = hand_made_maps(rng)
    for pred in maps:
        full = metrics.normalize_map(metrics.resize_map(pred, (N, N)))  # the shared resize step
        for box in boxes:
            gt = metrics.gt_map(box, "pixels")
            assert np.array_equal(gt, ref_bbox2gtmap(box))
            ours = ssl.sslalignment_cious(pred, gt)
            ref = ref_entry(metrics.resize_map(pred, (N, N)), gt)
            assert ours == pytest.approx(ref, abs=1e-12), (pred.shape, box)
            assert ssl.PreparedMap(pred, (N, N)).cious(gt) == ours
            assert ours[1] == pytest.approx(metrics.consensus_iou(full > ssl.adaptive_threshold(full, gt), gt))
            # strict: equal to the threshold is not predicted (a '>=' rule differs on the tied maps)
            thr = metrics.median_threshold(full)
            assert ours[0] == pytest.approx(metrics.consensus_iou(full > thr, gt))


def test_constant_map_predicts_nothing_and_zero_area_scores_zero():
    gt = metrics.gt_map([[10, 10, 100, 100]], "pixels")
    assert ssl.sslalignment_cious(np.ones((N, N)), gt) == (0.0, 0.0)
    empty = metrics.gt_map([[0, 0, 0, 0]], "pixels")
    assert not empty.any()
    assert ssl.adaptive_threshold(np.arange(N * N, dtype=float).reshape(N, N), empty) == N * N - N * N // 2
    assert ssl.sslalignment_cious(metrics.center_prior(), empty) == (0.0, 0.0)


def test_summary_iiou_iauc_match_the_reference():
    rng = np.random.default_rng(1)
    names, cious, adaptive = [], [], []
    for picture in range(40):
        for sound in ("dog", "guitar") if picture % 5 else ("dog",):  # a picture with one sound too
            names.append(f"cat_dog_{picture}_{sound}")
            # values on the 0.05 grid and at 0.5 exactly: ties with the thresholds
            cious.append(float(rng.choice([0.0, 0.25, 0.5, 0.55, 0.05 * rng.integers(0, 21)])))
            adaptive.append(float(rng.random()))
    ours = ssl.summarize_sslalignment(cious, adaptive, [ssl.picture_of(n) for n in names])
    ref = ref_summary(cious, adaptive, names)
    assert ours["n"] == len(names)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ssl.picture_of("accordion_baby_10467_accordion") == "accordion_baby_10467"
    assert np.isnan(ssl.summarize_sslalignment([], [], [])["iiou"])


@pytest.mark.parametrize("seed", range(6))
def test_extended_ap_f1_locacc_match_evaluator_full(seed):
    rng = np.random.default_rng(seed)
    n = [1, 2, 7, 40, 450, 1000][seed]  # 450, 1000: the AP's threshold stride N//200 > 1
    bb = rng.integers(0, 3, n).tolist()  # 0: negative
    cious = np.round(rng.random(n) * 4) / 4  # ties at 0.5
    conf = np.round(rng.random(n) * 5) / 5 if seed % 2 else rng.random(n)  # ties in the confidence
    ours = ssl.summarize_extended(bb, cious, conf)
    assert ours["ap"] == pytest.approx(ref_ap(bb, list(cious), list(conf)), abs=1e-12)
    assert ours["max_f1"] == pytest.approx(ref_max_f1(bb, list(cious), list(conf)), abs=1e-12)
    positives = [c for b, c in zip(bb, cious) if b > 0]
    if positives:
        p, _ = ref_precision_recall([b for b in bb if b > 0], positives, [0] * len(positives), -1000)
        assert ours["loc_acc"] == pytest.approx(p)
        assert ours["loc_acc"] == pytest.approx(np.mean(np.array(positives) >= 0.5))
    else:
        assert np.isnan(ours["loc_acc"])
    for thr in (-1, 0.4, 2):
        assert ssl.precision_recall(bb, cious, conf, thr) == pytest.approx(ref_precision_recall(bb, cious, conf, thr))


def test_extended_edge_cases():
    # a constant confidence (the centre prior) detects everything at every threshold: AP 0
    bb, cious = [1, 1, 0, 0], [0.6, 0.2, 0.0, 0.0]
    out = ssl.summarize_extended(bb, cious, [1.0] * 4)
    assert out["ap"] == 0 == ref_ap(bb, cious, [1.0] * 4)
    assert out["max_f1"] == pytest.approx(ref_max_f1(bb, cious, [1.0] * 4))
    # a perfect confidence and perfect maps
    out = ssl.summarize_extended([1, 1, 0, 0], [0.9, 0.8, 0, 0], [0.9, 0.8, 0.1, 0.2])
    assert out["loc_acc"] == 1 and out["max_f1"] == 1
    assert out["ap"] == pytest.approx(ref_ap([1, 1, 0, 0], [0.9, 0.8, 0, 0], [0.9, 0.8, 0.1, 0.2]))
    assert ssl.summarize_extended([], [], [])["n"] == 0
    c = ssl.cosine_confidence([[1.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [1.0, 1.0]])
    assert c.tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- readers
def test_readers_keys_and_errors(tmp_path):
    assert entry_key("/a/b/test/helicopter/vid/vid_1.png", 3) == "helicopter/vid/vid_1"
    assert entry_key("/a/visual_frames/rq5RDUm2Hnk_1/rq5RDUm2Hnk_1.mp4_1.png", 2) == "rq5RDUm2Hnk_1/rq5RDUm2Hnk_1.mp4_1"
    good = tmp_path / "x_bbox.json"
    good.write_text(json.dumps([{"image": "/m/visual_frames/a_b_1_dog.jpg", "audio": "/m/audio_wav/a_b_1_dog.wav",
                                 "gt_box": [1.0, 2.0, 30.0, 40.0]}]))
    assert read_sslalignment_json(good)[0]["id"] == "a_b_1_dog"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image": "/m/a.jpg", "audio": "/m/a.wav", "gt_box": [1, 2, "x", 4]}]))
    with pytest.raises(ValueError, match=r"bad.json: entry 0 .*gt_box"):
        read_sslalignment_json(bad)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([{"image": "/m/a.jpg", "audio": "/m/a.wav", "gt_box": [1, 2, 3, 4]}] * 2))
    with pytest.raises(ValueError, match="appears twice"):
        read_sslalignment_json(twice)
    pairs = tmp_path / "p.csv"
    pairs.write_text("video,audio,label\nv1,a1,non-sounding\nv2,v2,non-sounding\nv3,a3,sounding\n")
    assert read_plus_silent_csv(pairs) == [("v1", "a1"), ("v2", "v2")]
    pairs.write_text("video,audio,label\nv1\n")
    with pytest.raises(ValueError, match=r"p.csv:2"):
        read_plus_silent_csv(pairs)


def test_real_metadata_counts(shared_data):
    folder = shared_data / "sslalignment"
    counts = {"synthetic3240_bbox.json": (6480, 1, 0), "vpo_ss_bbox.json": (890, 1, 0),
              "vpo_ms_bbox.json": (2157, 1, 2), "s4_box.json": (3700, 3, 6), "ms3_box.json": (320, 2, 29)}
    for name, (n, parts, zero) in counts.items():
        entries = read_sslalignment_json(folder / name, parts)
        assert len(entries) == n
        assert sum(not metrics.gt_map([e["box"]], "pixels").any() for e in entries) == zero, name
    assert len(read_plus_silent_csv(folder / "vggss_test_plus_silent.csv")) == 5158
    assert len(read_plus_silent_csv(folder / "flickr_test_plus_silent.csv")) == 250
    ds = create_dataset("vggsound-extended", "/nonexistent", annotations=shared_data, media=False)
    assert len(ds) == 2 * 5158 and sum(e.meta["negative"] for e in ds.entries) == 5158


# ----------------------------------------------------------------------------- eval.py
def test_is3_centre_prior_acceptance(shared_data, tmp_path):
    """The issue's acceptance command, with nothing on disk but the metadata."""
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "eval.py", "--dataset", "is3", "--root", str(empty), "--annotations",
                          str(shared_data / "sslalignment" / "synthetic3240_bbox.json"), "--method", "center",
                          "--out", str(tmp_path / "out"), "--workers", "0", "--batch-size", "256"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("center (prior)"))
    assert line.split()[2:] == ["6480", "33.98", "39.37", "38.52", "40.25", "6.91", "26.11"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["evaluated"] == 6480 and summary["skipped"]["count"] == 0
    assert set(summary["methods"]["center"]) == {"n", "ap50", "auc", "mean_ciou", "ap50_adaptive", "auc_adaptive",
                                                 "iiou", "iauc"}


def test_centre_prior_needs_no_media_and_zero_area_is_reported(tmp_path):
    vggss = tmp_path / "vggss.json"
    vggss.write_text(json.dumps([{"file": f"c{i}", "class": "dog", "bbox": [[0.1, 0.1, 0.6, 0.9]]} for i in range(3)]))
    assert eval_cli.main(["--dataset", "vggsound", "--root", str(tmp_path / "nothing"), "--annotations", str(vggss),
                          "--method", "center", "--workers", "0", "--out", str(tmp_path / "o1")]) == 0
    summary = json.loads((tmp_path / "o1" / "summary.json").read_text())
    assert summary["evaluated"] == 3 and summary["methods"]["center"]["n"] == 3
    ms3 = tmp_path / "ms3_box.json"
    ms3.write_text(json.dumps([{"image": f"/x/visual_frames/v{i}/v{i}.mp4_1.png", "audio": f"/x/audio_wav/test/v{i}.wav",
                                "gt_box": [0, 0, 0, 0] if i == 0 else [20, 20, 200, 200]} for i in range(3)]))
    assert eval_cli.main(["--dataset", "avsbench-ms3-box", "--root", str(tmp_path / "nothing"), "--annotations",
                          str(ms3), "--method", "center", "--workers", "0", "--out", str(tmp_path / "o2")]) == 0
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["evaluated"] == 3 and summary["zero_area_entries"] == 1 and "zero_area_rule" in summary
    assert summary["annotation_report"]["zero_area_clips"] == 1
    assert "iiou" not in summary["methods"]["center"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from avlegrad.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("world") / "synthetic", num_clips=4, seed=6)


def test_world_interactive_split(world, tmp_path):
    """Each picture once per visible object with that object's sound; LeGrad with the shipped
    world models, scored with IS3's rules (iIoU)."""
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(world), "--split", "interactive", "--method",
                          "legrad", "--workers", "0", "--out", str(tmp_path / "o")]) == 0
    manifest = json.loads((world / "synthetic.json").read_text())
    kept = {s["file"]: [o for o in s["objects"] if interactive_object_ok(o)] for s in manifest["scenes"]}
    kept = {clip: objects for clip, objects in kept.items() if len(objects) >= 2}
    assert kept, "the test world should hold a picture with two localizable objects"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["evaluated"] == sum(map(len, kept.values())) and summary["skipped"]["count"] == 0
    rows = [json.loads(l) for l in (tmp_path / "o" / "clips.jsonl").read_text().splitlines()]
    assert {r["picture"] for r in rows} == set(kept)
    for m in ("legrad", "center"):
        ref = ref_summary([r["ciou"][m] for r in rows], [r["ciou_adaptive"][m] for r in rows],
                          [r["clip_id"] for r in rows])
        for key, value in ref.items():
            assert summary["methods"][m][key] == pytest.approx(value), (m, key)
    # the boxes are the objects' own: scored against each object's box in pixels of 224
    entries = json.loads((world / "interactive_bbox.json").read_text())
    assert [e["gt_box"] for e in entries] == [[v * 224 for v in o["bbox"]] for objects in kept.values()
                                              for o in objects]


@pytest.mark.parametrize("confidence", ["cosine", "map-max"])
def test_world_extended_split(world, tmp_path, confidence):
    """Positives and negatives (silence, a class not in the picture): negatives are scored, not
    skipped as silent, and AP / max-F1 / LocAcc come out as EvaluatorFull computes them."""
    out = tmp_path / "o"
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(world), "--split", "extended", "--method",
                          "legrad", "--workers", "0", "--confidence", confidence, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 8 and summary["skipped"]["count"] == 0 and summary["confidence"] == confidence
    rows = [json.loads(l) for l in (out / "clips.jsonl").read_text().splitlines()]
    assert sum(r["negative"] for r in rows) == 4
    assert any("silence" in r["clip_id"] for r in rows) and any("absent" in r["clip_id"] for r in rows)
    bb = [0 if r["negative"] else 1 for r in rows]
    cious = [r["ciou"]["legrad"] or 0.0 for r in rows]
    conf = [r["confidence"]["legrad"] for r in rows]
    result = summary["methods"]["legrad"]
    assert result["ap"] == pytest.approx(ref_ap(bb, cious, conf))
    assert result["max_f1"] == pytest.approx(ref_max_f1(bb, cious, conf))
    assert result["loc_acc"] == pytest.approx(np.mean([c >= 0.5 for b, c in zip(bb, cious) if b]))
    if confidence == "cosine":
        assert all(-1 <= c <= 1 for c in conf)
    assert summary["methods"]["center"]["ap"] == 0


def test_media_found_by_the_published_paths_tail(tmp_path):
    """An archive unpacked as it comes (visual_frames/, audio_wav/) is found; a missing sound is a
    skipped entry naming where it was looked for."""
    from avlegrad.data.media import write_audio
    from avlegrad.visualize import save_image

    root = tmp_path / "IS3"
    names = ["cat_dog_1_dog", "cat_dog_1_cat"]
    save_image(root / "visual_frames" / f"{names[0]}.jpg", np.full((40, 50, 3), 90, np.uint8))
    save_image(root / "visual_frames" / f"{names[1]}.jpg", np.full((40, 50, 3), 90, np.uint8))
    write_audio(root / "audio_wav" / f"{names[0]}.wav", 0.3 * np.sin(np.arange(8000) / 5).astype(np.float32), 16000)
    meta = tmp_path / "synthetic3240_bbox.json"
    meta.write_text(json.dumps([{"image": f"/mnt/x/visual_frames/{n}.jpg", "audio": f"/mnt/x/audio_wav/{n}.wav",
                                 "gt_box": [1.0, 2.0, 30.0, 40.0]} for n in names]))
    ds = create_dataset("is3", root, annotations=meta)
    record, missing = ds[0], ds[1]
    assert record.frame.shape == (40, 50, 3) and record.waveform.size == 8000
    assert record.box_format == "pixels" and record.meta["picture"] == "cat_dog_1"
    assert "audio_wav/cat_dog_1_cat.wav" in missing.reason
