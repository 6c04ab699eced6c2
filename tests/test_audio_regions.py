"""scripts/audio_relevance_by_region.py: the per-patch decomposition behind docs/world.md's "Why silence"."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("_script_regions", REPO / "scripts" / "audio_relevance_by_region.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_patch_regions_by_hand():
    """2-band x 2-frame patches on 4 bands x 7 frames (a 2 x 4 grid, its last column half padding)."""
    regions = _script().patch_regions
    mask = np.zeros((4, 7), bool)
    mask[0:2, 0:2] = True              # patch (0, 0): all object
    mask[2, 2] = True                  # patch (1, 1): a quarter object -> not the object's
    active = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    other = np.array([0, 0, 0, 1, 1, 0, 0], bool)
    got = regions(mask, active, other, (2, 2), (2, 4))
    # column 0: the object heard -> (0, 0) object, (1, 0) mixed; column 1 (frames 2, 3): object and
    # other heard -> mixed; column 2 (frames 4, 5): frame 4 other only, frame 5 neither -> mixed;
    # column 3 (frame 6 and padding): silence
    expected = np.array([[0, -1, -1, 2], [-1, -1, -1, 2]])
    np.testing.assert_array_equal(got, expected)
    other[5] = True                    # column 2 now the other sound's alone
    np.testing.assert_array_equal(regions(mask, active, other, (2, 2), (2, 4))[:, 2], [1, 1])
    # a column wholly beyond the clip's frames (padding) is not counted
    assert (regions(mask, active, other, (2, 2), (2, 5))[:, 4] == -1).all()


def _world_vit():
    from avlegrad.audio import create_audio_encoder
    from avlegrad.eval.audio import AUDIO_VIT_FILE
    from avlegrad.world_clip import WORLD_CHECKPOINTS

    path = WORLD_CHECKPOINTS / AUDIO_VIT_FILE
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return create_audio_encoder(str(path)).eval()


def test_block_cells_are_audio_legrad_raw_cells():
    """The script's cells, ReLU'd and averaged over heads (and over the N queries, whose rows other than
    the class token's get no gradient), placed on the input, are AudioLeGrad's raw map of that block."""
    from avlegrad.explain.audio import AudioLeGrad, grid_to_input

    enc = _world_vit()
    ex = AudioLeGrad(enc, layer_index=-1)
    wave = torch.randn(1, 16000) * 0.05
    target = torch.nn.functional.normalize(torch.randn(1, enc.embed_dim), dim=-1)
    cells, attention, layout = _script().block_cells(ex, wave, target, ex.adapter.num_layers - 1)
    tokens = ex.adapter.prefix + layout.grid[0] * layout.grid[1]
    assert cells.shape == attention.shape == (enc.backbone.blocks[-1].attn.num_heads, *layout.grid)
    assert torch.all(attention >= 0) and attention.sum(dim=(1, 2)).max() <= 1 + 1e-6
    expected = ex.raw_maps(ex.adapter.clips(wave)[0], target[:, None])[0, 0, 0]
    got = grid_to_input(cells.clamp(min=0).mean(0) / tokens, layout)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)


def test_script_on_generated_mixtures(tmp_path, capsys):
    from avlegrad.data.synthetic import generate_synthetic

    _world_vit()
    root = generate_synthetic(tmp_path / "syn", num_clips=3, seed=4)
    out = tmp_path / "regions.json"
    assert _script().main(["--root", str(root), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["clips"] == 3 and summary["block"] == 3
    assert summary["regions"] and set(summary["regions"]) <= {"object", "other sound", "silence"}
    for row in summary["regions"].values():
        assert row["patches"] > 0 and 0 <= row["positive_share"] <= 1 and row["mean_relu"] >= 0
    assert "class-token attention" in capsys.readouterr().out
