"""Faithfulness metrics against slow references written here from the papers' definitions (one
image, one step per forward; Python-sorted pixels), and the pointing game against Quantus."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avlegrad import faithfulness as fa
from conftest import assert_model_unchanged, make_tiny_clip, model_snapshot


def slow_order(heatmap, most_first=True):
    """Pixels in removal order: by value, ties in row-major order."""
    flat = heatmap.flatten().tolist()
    return sorted(range(len(flat)), key=lambda j: (-flat[j] if most_first else flat[j], j))


def slow_curve(model, image, target, heatmap, fractions, insert=False, most_first=True, substrate=None):
    """One image, one perturbed copy per forward through the model's own encode_image."""
    C, H, W = image.shape
    substrate = torch.zeros_like(image) if substrate is None else substrate
    order = slow_order(heatmap, most_first)
    scores = []
    for f in fractions:
        k = int(round(f * H * W))
        picked = torch.zeros(H * W, dtype=torch.bool)
        picked[order[:k]] = True
        picked = picked.reshape(1, H, W)
        x = torch.where(picked, image, substrate) if insert else torch.where(picked, substrate, image)
        with torch.no_grad():
            emb = model.encode_image(x[None])[0]
        scores.append(float(F.cosine_similarity(emb, target, dim=0)))
    return scores


@pytest.fixture
def case():
    model = make_tiny_clip(seed=4)
    torch.manual_seed(4)
    images = torch.randn(3, 3, 32, 32)
    targets = torch.randn(3, 32) * 3
    maps = torch.rand(3, 32, 32)
    maps[1] = (maps[1] * 4).floor() / 4  # many ties
    maps[2] = 0.0  # all tied: row-major order
    return model, images, targets, maps


def test_scorer_is_the_models_cosine(case):
    model, images, targets, _ = case
    with torch.no_grad():
        expected = F.cosine_similarity(model.encode_image(images), targets, dim=-1)
    torch.testing.assert_close(fa.ModelScorer(model)(images, targets), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("insert,most_first", [(False, True), (True, True), (False, False)])
def test_curves_equal_slow_reference(case, insert, most_first):
    model, images, targets, maps = case
    fractions = [0, 0.1, 0.25, 0.5, 0.9, 1.0]
    substrate = fa.gaussian_blur(images) if insert else None
    before = model_snapshot(model)
    fast = fa.perturbation_curves(fa.ModelScorer(model), images, targets, maps, fractions, insert=insert,
                                  most_relevant_first=most_first, substrate=substrate, batch_size=7)
    assert_model_unchanged(before, model_snapshot(model))
    for b in range(3):
        ref = slow_curve(model, images[b], targets[b], maps[b], fractions, insert, most_first,
                         None if substrate is None else substrate[b])
        assert np.allclose(fast[b].numpy(), ref, atol=1e-5), (b, fast[b], ref)


def test_metrics_equal_trapezoids_of_reference_curves(case):
    model, images, targets, maps = case
    out = fa.perturbation_metrics(fa.ModelScorer(model), images, targets, maps, steps=8, batch_size=1000)
    grid = [i / 8 for i in range(9)]
    chefer = [i / 10 for i in range(10)]
    blurred = fa.gaussian_blur(images)
    for b in range(3):
        def area(y, x):
            return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))
        expected = {
            "deletion_auc": area(slow_curve(model, images[b], targets[b], maps[b], grid), grid),
            "insertion_auc": area(slow_curve(model, images[b], targets[b], maps[b], grid, insert=True,
                                             substrate=blurred[b]), grid),
            "pos_perturbation_auc": area(slow_curve(model, images[b], targets[b], maps[b], chefer), chefer),
            "neg_perturbation_auc": area(slow_curve(model, images[b], targets[b], maps[b], chefer,
                                                    most_first=False), chefer),
        }
        for k, v in expected.items():
            assert abs(float(out[k][b]) - v) < 1e-5, (k, b)


def test_batch_size_does_not_change_results(case):
    model, images, targets, maps = case
    scorer = fa.ModelScorer(model)
    a = fa.perturbation_metrics(scorer, images, targets, maps, steps=4, batch_size=1)
    b = fa.perturbation_metrics(scorer, images, targets, maps, steps=4, batch_size=500)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6)


def test_blur_is_rise_gkern():
    from scipy import ndimage

    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    gkern = ndimage.gaussian_filter(delta, 5)  # RISE evaluation.py: gkern(klen=11, nsig=5)
    image = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    image[0, 0, 5, 5] = 1
    assert np.abs(fa.gaussian_blur(image)[0, 0].numpy() - gkern[::-1, ::-1]).max() < 1e-12


def test_class_targets_score_the_logit():
    import timm

    torch.manual_seed(5)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=32, depth=2).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(fa.ModelScorer(model)(images, torch.tensor([3, 1])),
                               logits[[0, 1], [3, 1]], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ pointing games
def test_pointing_game_hand_made():
    gt = np.zeros((4, 4), bool)
    gt[0, 0] = True
    m = np.zeros((4, 4))
    m[3, 3] = 1
    assert fa.pointing_game(m, gt) == 0.0
    m[0, 0] = 1  # a tie between a pixel in and one out: a hit
    assert fa.pointing_game(m, gt) == 1.0
    assert np.isnan(fa.pointing_game(m, np.zeros((4, 4))))
    # energy: mass inside over all mass
    m = np.arange(16, dtype=float).reshape(4, 4)
    gt = np.zeros((4, 4))
    gt[2:, 1:3] = 1
    assert fa.energy_pointing_game(m, gt) == pytest.approx((9 + 10 + 13 + 14) / m.sum())
    assert fa.energy_pointing_game(np.zeros((4, 4)), gt) == pytest.approx(4 / 16)  # all zero: uniform
    with pytest.raises(ValueError, match="non-negative"):
        fa.energy_pointing_game(m - 1, gt)


def test_pointing_game_resizes_the_map_as_the_benchmark():
    heat = torch.zeros(8, 8)
    heat[6, 1] = 1
    gt = np.zeros((224, 224), bool)
    gt[180:224, 0:60] = True
    assert fa.pointing_game(heat, gt) == 1.0 and fa.pointing_game(heat.flip(0), gt) == 0.0


def test_pointing_game_equals_quantus():
    quantus = pytest.importorskip("quantus")
    rng = np.random.default_rng(0)
    a = rng.random((12, 1, 8, 8))
    a[:4] = np.round(a[:4] * 2) / 2  # ties of the maximum
    s = (rng.random((12, 1, 8, 8)) > 0.7).astype(float)
    x = rng.random((12, 1, 8, 8))
    y = np.zeros(12, dtype=int)
    ref = quantus.PointingGame(normalise=False, disable_warnings=True)(
        model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s, channel_first=True)
    ours = [fa.pointing_game(a[i, 0], s[i, 0]) for i in range(12)]
    assert [float(v) for v in ref] == ours


def test_summary_and_random_map():
    rows = [{"faithfulness": {"legrad": {"deletion_auc": 0.2, "pointing_game": 1.0},
                              "random": {"deletion_auc": 0.4, "pointing_game": float("nan")}}},
            {"faithfulness": {"legrad": {"deletion_auc": 0.4, "pointing_game": 0.0},
                              "random": {"deletion_auc": 0.6, "pointing_game": 1.0}}}, {}]
    s = fa.FaithfulnessScoring.summarise(rows)
    assert s["legrad"]["deletion_auc"] == pytest.approx(0.3) and s["legrad"]["pointing_game"] == 0.5
    assert s["random"]["pointing_game"] == 1.0 and s["random"]["insertion_auc"] is None
    assert torch.equal(fa.random_map("a", (4, 5)), fa.random_map("a", (4, 5)))
    assert not torch.equal(fa.random_map("a", (4, 5)), fa.random_map("b", (4, 5)))


# ------------------------------------------------------------------ eval.py --faithfulness
def test_eval_faithfulness_end_to_end(tmp_path, capsys):
    import json

    import eval as eval_cli
    from avlegrad.data.synthetic import generate_synthetic
    from test_eval import TINY_CLIP

    root = generate_synthetic(tmp_path / "synthetic", num_clips=4, seed=3)
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    base = ["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
            "--workers", "0", "--batch-size", "3", "--out", str(tmp_path / "run"), "--method", "legrad,similarity"]
    assert eval_cli.main(base) == 0  # first without: the clips are scored again when it is asked for
    capsys.readouterr()
    assert eval_cli.main(base + ["--faithfulness", "--faithfulness-steps", "4", "--faithfulness-batch", "5"]) == 0
    table = capsys.readouterr().out
    assert "del AUC" in table and "random" in table
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "run" / "clips.jsonl").read_text().splitlines()]
    assert all("faithfulness" in r for r in rows) and len(rows) == 4
    for method in ("legrad", "similarity", "random"):
        for key in fa.METRICS:
            expected = np.mean([r["faithfulness"][method][key] for r in rows])
            assert summary["methods"][method][key] == pytest.approx(expected)
    assert summary["methods"]["legrad"]["n"] == 4  # the box figures are still there
    # a clip's figures are the module's on that clip's own image, target and map
    assert set(rows[0]["faithfulness"]) == {"legrad", "similarity", "random"}
    from avlegrad import LeGrad
    from avlegrad.data import create_dataset
    from avlegrad.eval.run import EvalCollate
    from avlegrad.eval.targets import TextTargets
    from avlegrad.models import load_clip

    model, cfg = load_clip(str(config), "none")
    dataset = create_dataset("synthetic", root)
    records, _, images = EvalCollate(cfg, cfg["size"][0])([dataset[i] for i in range(3)])
    targets = TextTargets(model, str(config), "a photo of a {}.")(records, "cpu")
    direct = fa.FaithfulnessScoring(model, steps=4).score(images, targets, {"legrad": LeGrad(model)(images, targets)},
                                                          records)
    for i in range(3):
        for method in ("legrad", "random"):
            for key, value in direct[i][method].items():
                assert rows[i]["faithfulness"][method][key] == pytest.approx(value, abs=1e-6), (i, method, key)


def test_eval_faithfulness_needs_an_explainer(tmp_path):
    import eval as eval_cli

    assert eval_cli.main(["--dataset", "synthetic", "--root", str(tmp_path / "s"), "--method", "center",
                          "--faithfulness", "--out", str(tmp_path / "run")]) == 2


def test_negatives_get_the_perturbation_metrics_only():
    """An extended set's negative (``boxes == []``, ``box_format None``) has no ground truth: it
    used to reach ``metrics.gt_map([], None)`` ("unknown box format None")."""
    from types import SimpleNamespace

    negative = SimpleNamespace(clip_id="neg", boxes=[], box_format=None, mask=None)
    positive = SimpleNamespace(clip_id="pos", boxes=[[0, 0, 112, 112]], box_format="pixels", mask=None)
    assert fa.record_ground_truth(negative) is None and not fa.has_boxes(negative)
    assert fa.record_ground_truth(positive)[:112, :112].all()
    model = make_tiny_clip()
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    maps = {"legrad": torch.rand(2, 32, 32)}
    rows = fa.FaithfulnessScoring(model, steps=2).score(images, targets, maps, [negative, positive])
    for method in ("legrad", "random"):
        assert set(rows[0][method]) == set(fa.METRICS) - {"pointing_game", "energy_pointing_game"}
        assert set(rows[1][method]) == set(fa.METRICS)


def test_steps_are_checked():
    for steps in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            fa.check_steps(steps)
        with pytest.raises(ValueError, match="`faithfulness_steps`"):
            fa.FaithfulnessScoring(make_tiny_clip(), steps=steps)


def test_eval_faithfulness_extended_split_and_steps(tmp_path, caplog):
    """``--split extended --faithfulness``: negatives scored without pointing games; the step count
    is stored per clip and in summary.json, and a rerun with another count scores the clips again
    (never mixes them); ``--faithfulness-steps 0`` is a one-line error before any model loads."""
    import json

    import eval as eval_cli
    from avlegrad.data.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path / "synthetic", num_clips=4, seed=6)
    out = tmp_path / "run"
    base = ["--dataset", "synthetic", "--root", str(root), "--split", "extended", "--method", "legrad",
            "--workers", "0", "--out", str(out), "--faithfulness"]
    assert eval_cli.main(base + ["--faithfulness-steps", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert summary["faithfulness_steps"] == 2 and all(r["faithfulness_steps"] == 2 for r in rows)
    negatives = [r for r in rows if r["negative"]]
    assert negatives and len(negatives) < len(rows)
    for r in rows:
        assert "deletion_auc" in r["faithfulness"]["legrad"]
        assert ("pointing_game" in r["faithfulness"]["legrad"]) == (not r["negative"])
    legrad, random = summary["methods"]["legrad"], summary["methods"]["random"]
    assert legrad["faithfulness_n"] == random["faithfulness_n"] == random["n"] == len(rows)
    positives = [r["faithfulness"]["legrad"]["pointing_game"] for r in rows if not r["negative"]]
    assert legrad["pointing_game"] == pytest.approx(np.mean(positives))

    assert eval_cli.main(base + ["--faithfulness-steps", "3"]) == 0  # every clip scored again, with 3 steps
    again = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert len(again) == len(rows) and all(r["faithfulness_steps"] == 3 for r in again)
    assert json.loads((out / "summary.json").read_text())["faithfulness_steps"] == 3
    # with 2 steps the deletion curve has 3 points, with 3 steps 4: the AUCs differ
    assert any(a["faithfulness"]["legrad"]["deletion_auc"] != b["faithfulness"]["legrad"]["deletion_auc"]
               for a, b in zip(rows, again))

    caplog.clear()
    for flag in ("--faithfulness-steps", "--faithfulness-batch"):
        assert eval_cli.main(["--dataset", "synthetic", "--root", str(tmp_path / "none"), "--faithfulness",
                              flag, "0", "--out", str(tmp_path / "x")]) == 2
        assert f"{flag} must be an integer >= 1, got 0" in caplog.text
