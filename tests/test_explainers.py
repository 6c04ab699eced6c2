"""The baseline explainers against slow references written from their papers' definitions
(tests/reference.py), the shared interface, and the model-unchanged guarantee."""
import pytest
import torch

import eval as eval_cli
from avlegrad.explain import create_explainer, list_explainers
from conftest import assert_model_unchanged, make_tiny_clip, model_snapshot
from reference import REFERENCES

BASELINES = sorted(REFERENCES)


def reference_maps(name, model, images, targets):
    ref = REFERENCES[name]
    return torch.stack([torch.stack([ref(model.visual, images[b:b + 1], targets[b, k])
                                     for k in range(targets.shape[1])])
                        for b in range(images.shape[0])])


def test_every_method_is_registered():
    # explainers added as their own module are tested in their own file (see docs/extending.md)
    assert set(BASELINES) | {"legrad"} <= set(list_explainers())
    with pytest.raises(ValueError, match="unknown explainer 'nope'; choose from legrad"):
        create_explainer("nope", make_tiny_clip())


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("size", [(32, 32), (48, 24)])
def test_equals_reference(tiny_clip, name, size):
    torch.manual_seed(11)
    images, targets = torch.randn(2, 3, *size), torch.randn(2, 2, 32)
    maps = create_explainer(name, tiny_clip)(images, targets)
    assert maps.shape == (2, 2, *size) and maps.dtype == torch.float32
    ref = reference_maps(name, tiny_clip, images, targets)
    assert (maps - ref).abs().max().item() < 1e-5
    assert maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("name", BASELINES)
def test_batch_independence_and_one_target_form(tiny_clip, name):
    torch.manual_seed(12)
    images, targets = torch.randn(3, 3, 32, 32), torch.randn(3, 32)
    explainer = create_explainer(name, tiny_clip)
    together = explainer(images, targets)
    assert together.shape == (3, 32, 32)
    alone = explainer(images[1:2], targets[1:2])[0]
    assert (alone - together[1]).abs().max().item() < 1e-6


@pytest.mark.parametrize("name", BASELINES + ["legrad"])
def test_frozen_model_gives_the_same_maps(tiny_clip, name):
    torch.manual_seed(15)
    images, targets = torch.randn(2, 3, 32, 32), torch.randn(2, 32)
    expected = create_explainer(name, tiny_clip)(images, targets)
    tiny_clip.requires_grad_(False)
    torch.testing.assert_close(create_explainer(name, tiny_clip)(images, targets), expected)


def test_target_free_methods_ignore_the_target(tiny_clip):
    torch.manual_seed(13)
    images = torch.randn(2, 3, 32, 32)
    for name in ("attention", "rollout"):
        explainer = create_explainer(name, tiny_clip)
        torch.testing.assert_close(explainer(images, torch.randn(2, 32)), explainer(images, torch.randn(2, 32)))


@pytest.mark.parametrize("name", BASELINES)
def test_model_left_exactly_as_found(name):
    model = make_tiny_clip(seed=14).train()
    before = model_snapshot(model)
    create_explainer(name, model)(torch.randn(2, 3, 40, 32), torch.randn(2, 2, 32))
    assert_model_unchanged(before, model_snapshot(model))


def test_eval_runs_every_method_in_one_pass(tmp_path, capsys):
    import json

    from avlegrad.data.synthetic import generate_synthetic
    from test_eval import TINY_CLIP

    root = generate_synthetic(tmp_path / "synthetic", num_clips=4, seed=1)
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    methods = "legrad,similarity,rollout,gradcam,chefercam,attention"
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--model", str(config),
                          "--pretrained", "none", "--workers", "0", "--method", methods,
                          "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    for name in methods.split(",") + ["center (prior)"]:
        assert f"\n{name} " in table
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["methods"]) == methods.split(",") + ["center"]
    assert all(figures["n"] == 4 for figures in summary["methods"].values())


@pytest.mark.parametrize("name", sorted(list_explainers()))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_refused_naming_them(tiny_clip, name, bad):
    """A NaN/inf pixel used to give an all-zero map without a word; now a one-line ValueError."""
    images, targets = torch.randn(5, 3, 32, 32), torch.randn(5, 32)
    images[1, 0, 3, 4] = bad
    images[4, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf values: 2 of 5 images \(batch indices 1, 4\)") as e:
        create_explainer(name, tiny_clip)(images, targets)
    assert "\n" not in str(e.value)
    create_explainer(name, tiny_clip)(images[[0, 2, 3]], targets[[0, 2, 3]])  # the finite ones are fine
