"""python -m avlegrad.analyze on a tiny generated benchmark with a random CLIP: the table, JSON
and plots, and that a variant's figures are those of LeGrad with its switches."""
import json
import shutil

import numpy as np
import pytest
import torch

from avlegrad import LeGrad, analyze, metrics
from avlegrad import faithfulness as fa
from avlegrad.data import create_dataset
from avlegrad.data.synthetic import generate_synthetic
from avlegrad.eval.run import EvalCollate
from avlegrad.eval.targets import TextTargets
from avlegrad.models import load_clip
from test_eval import TINY_CLIP


def test_analyze_end_to_end(tmp_path, capsys):
    root = generate_synthetic(tmp_path / "synthetic", num_clips=3, seed=5)
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    out = tmp_path / "analysis"
    assert analyze.main(["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
                         "--steps", "3", "--batch-size", "3", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mean cIoU" in table and "mIoU" not in table
    summary = json.loads((out / "ablation.json").read_text())
    assert summary["faithfulness_steps"] == 3 and summary["root"] == str(root.resolve())
    L = TINY_CLIP["vision_cfg"]["layers"]
    expected = list(analyze.variants(L)) + ["random"]
    assert list(summary["variants"]) == expected and summary["num_layers"] == L
    for v in expected:
        assert v in table
        assert summary["variants"][v]["n"] == 3
        assert all(summary["variants"][v][k] is not None for k in fa.METRICS)
    assert len(summary["layer_share_all_blocks"]) == L
    assert np.isclose(sum(summary["layer_share_all_blocks"]), 1, atol=1e-5)
    for name in ("accumulated_layers.png", "layer_contributions.png"):
        assert (out / name).stat().st_size > 1000
    assert len(list(out.glob("heads_*.png"))) == 1

    # a rerun resumes (nothing left to do: the same figures); other settings are refused
    args = ["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
            "--batch-size", "3", "--out", str(out)]
    rows = (out / "clips.jsonl").read_text().splitlines()
    (out / "clips.jsonl").write_text("\n".join(rows[:2]) + "\n" + rows[2][:40])  # killed mid-write of clip 3
    assert analyze.main(args + ["--steps", "3"]) == 0
    resumed = json.loads((out / "ablation.json").read_text())["variants"]
    for v, row in summary["variants"].items():  # clip 3 alone now, not in a batch of 3: float noise only
        assert resumed[v]["n"] == 3
        for k in fa.METRICS + ("mean_ciou",):
            assert resumed[v][k] == pytest.approx(row[k], abs=1e-3), (v, k)
    assert len((out / "clips.jsonl").read_text().splitlines()) == 4  # the torn line is left, ignored
    assert analyze.main(args + ["--steps", "4"]) == 2
    copy = shutil.copytree(root, tmp_path / "copy")  # the same clips under another root: another setting
    assert analyze.main([a if a != str(root) else str(copy) for a in args] + ["--steps", "3"]) == 2

    # one variant recomputed directly: its cIoU figures and its negative perturbation AUC
    model, cfg = load_clip(str(config), "none")
    dataset = create_dataset("synthetic", root)
    records, _, images = EvalCollate(cfg, cfg["size"][0])([dataset[i] for i in range(3)])
    targets = TextTargets(model, str(config), "a photo of a {}.")(records, "cpu")
    maps = LeGrad(model, layer_index=0, head_aggregation="max")(images, targets)
    row = summary["variants"]["heads: max"]
    cious = [metrics.ciou(maps[i], metrics.gt_map(r.boxes, r.box_format)) for i, r in enumerate(records)]
    assert row["mean_ciou"] == pytest.approx(np.mean(cious))
    neg = fa.perturbation_metrics(fa.ModelScorer(model), images, targets, maps, steps=3,
                                  which=("neg_perturbation_auc",))["neg_perturbation_auc"]
    assert row["neg_perturbation_auc"] == pytest.approx(float(neg.mean()), abs=1e-6)


def test_variants_grid():
    grid = analyze.variants(4)
    assert grid["official, last 2 (default)"] == {"layer_index": -2}
    assert grid["official, last 4 (all blocks)"] == {"layer_index": -4}
    assert grid["heads: max"] == {"layer_index": 0, "head_aggregation": "max"}
    for kwargs in grid.values():  # every variant is a valid LeGrad
        LeGrad(__import__("conftest").make_tiny_clip(layers=4), **kwargs)


@pytest.mark.parametrize("flag", ["--steps", "--limit", "--batch-size", "--faithfulness-batch"])
def test_bad_numbers_are_refused_before_loading(tmp_path, caplog, flag):
    """One line, exit 2, before the dataset or any model is opened (the root does not exist)."""
    assert analyze.main(["--dataset", "synthetic", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                         flag, "0"]) == 2
    assert f"{flag} must be an integer >= 1, got 0" in caplog.text


def test_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(analyze, "run_analysis", interrupted)
    assert analyze.cli(["--dataset", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
