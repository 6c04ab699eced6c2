"""The model-adapter contract, checked over EVERY registered adapter (parametrised from the
registry, so a new family is covered by adding its module): replaying the blocks equals the
model's own forward, the model is left unchanged, LeGrad equals a slow reference written here
from the definition on the adapter's primitives, every baseline runs where it is defined.
Also: the registries, the fp32 cosine under autocast, the input layout, no import cycles."""
import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from avlegrad.explain import (EXPLAINERS, LeGrad, UnsupportedModelError, create_explainer, list_explainers,
                              per_target_gradients, register_explainer)
from avlegrad.explain.adapters import (PatchLayout, adapter_for, cosines, register_adapter, registered_adapters,
                                       supported_models, supported_models_markdown)
from conftest import assert_model_unchanged, model_snapshot

ADAPTERS = {entry.name: entry for entry in registered_adapters()}


def example(name):
    model, shape = ADAPTERS[name].cls.example_model()
    return model, shape


def slow_legrad(vit, image, target, layers):
    """LeGrad from the definition on the adapter's primitives: one image ``[1, C, H, W]``, one
    target (unit embedding ``[D]`` or class index), attention materialised, every block in one
    graph, one ``autograd.grad`` per explained layer; the grid map ``[gh, gw]``, unnormalised."""
    grid = vit.grid(*image.shape[-2:])
    x = vit.embed(image)
    attentions, outputs = [], []
    for block in vit.blocks:
        q, k, v = vit.qkv(block, x, grid)
        A = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = vit.finish_block(block, x, A @ v)
        attentions.append(A)
        outputs.append(x)
    total = 0
    for layer in layers:
        if vit.attention_pool is not None:  # attention-pooled: the gradient site is the pooler's attention
            q, k, v = vit.pool_qkv(vit.pool_keys(outputs[layer].detach()))  # over this block's tokens
            A = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)  # [1, heads, latents, keys]
            # the family's own score rule (cosine; CoCa's raw dot product, checked from the official
            # code in tests/test_legrad_coca.py)
            s = vit.pool_score(A @ v, target[None, None])[0, 0]
            g = torch.autograd.grad(s, A)[0]
            # mean over heads of the first latent's row, at the patch keys
            total = total + g.clamp(min=0).mean(dim=1)[0, 0, vit.num_prefix_tokens - vit.pool_key_offset:]
            continue
        if isinstance(target, int):
            s = vit.layer_logits(outputs[layer])[0, target]
        else:
            s = F.normalize(vit.layer_embedding(outputs[layer]), dim=-1)[0] @ target
        g = torch.autograd.grad(s, attentions[layer], retain_graph=True)[0]
        # patch keys: after the prefix tokens, up to the last token (keys after the tokens are not patches)
        total = total + g.clamp(min=0).mean(dim=(1, 2))[0, vit.num_prefix_tokens:x.shape[1]]
    return total.reshape(grid)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_replaying_the_blocks_equals_the_models_forward(name):
    model, (C, H, W) = example(name)
    vit = adapter_for(model)
    assert type(vit) is ADAPTERS[name].cls and vit.channels == C
    torch.manual_seed(0)
    images = torch.randn(3, C, H, W)
    with torch.no_grad():
        ours, theirs = vit.replayed_forward(images), vit.model_forward(images)
    assert ours.shape == theirs.shape == (3, vit.embed_dim)
    assert (ours - theirs).abs().max().item() < 1e-5
    # the block pieces agree with the fused block: q/k/v -> materialised attention -> finish
    x = vit.embed(images)
    grid = vit.grid(H, W)
    assert x.shape[1] == vit.num_prefix_tokens + grid[0] * grid[1]
    q, k, v = vit.qkv(vit.blocks[0], x, grid)
    torch.testing.assert_close(vit.finish_block(vit.blocks[0], x, vit.attention_probs(q, k) @ v),
                               vit.block_forward(vit.blocks[0], x, grid), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_legrad_equals_the_slow_reference(name):
    model, (C, H, W) = example(name)
    explainer = LeGrad(model, layer_index=0)
    vit = explainer.vit
    torch.manual_seed(1)
    images = torch.randn(2, C, H, W)
    targets = torch.randn(2, 2, vit.embed_dim)
    maps = explainer(images, targets)
    for b in range(2):
        for kk in range(2):
            grid = slow_legrad(vit, images[b:b + 1], F.normalize(targets[b, kk], dim=0), range(vit.num_layers))
            up = vit.layout.to_input(grid[None, None], (H, W))[0, 0]
            ref = (up - up.min()) / (up.max() - up.min())
            assert (maps[b, kk] - ref).abs().max().item() < 1e-5
    if vit.num_classes:  # class targets: the class logit
        classes = torch.tensor([[1, vit.num_classes - 1], [0, 2]])
        maps = explainer(images, classes)
        grid = slow_legrad(vit, images[1:2], 2, range(vit.num_layers))
        up = vit.layout.to_input(grid[None, None], (H, W))[0, 0]
        assert (maps[1, 1] - (up - up.min()) / (up.max() - up.min())).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_explainer_leaves_the_model_unchanged(name):
    model, (C, H, W) = example(name)
    model.train()
    before = model_snapshot(model)
    vit = adapter_for(model)
    ran = []
    for method in list_explainers():
        if EXPLAINERS[method].undefined_for(vit):
            with pytest.raises(UnsupportedModelError, match="not defined for"):
                create_explainer(method, model)
            continue
        maps = create_explainer(method, model)(torch.randn(2, C, H, W), torch.randn(2, 2, vit.embed_dim))
        assert maps.shape == (2, 2, H, W) and maps.dtype == torch.float32
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
        ran.append(method)
    assert "legrad" in ran and "gradcam" in ran
    assert_model_unchanged(before, model_snapshot(model))


def test_the_supported_message_is_generated_from_the_registry():
    text = supported_models()
    for entry in registered_adapters():
        assert entry.cls.supported and entry.cls.supported in text
    with pytest.raises(UnsupportedModelError, match="cannot explain a torch.nn.modules.linear.Linear. Supported: "):
        adapter_for(torch.nn.Linear(2, 2))
    assert [e.priority for e in registered_adapters()] == sorted((e.priority for e in registered_adapters()),
                                                                 reverse=True)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="adapter named 'timm' is already registered"):
        register_adapter("timm", matches=lambda m: False)(type("Other", (ADAPTERS["timm"].cls,), {}))
    with pytest.raises(ValueError, match="explainer named 'legrad' is already registered"):
        register_explainer("legrad")(type("Other", (LeGrad,), {}))


def test_cosines_are_fp32_under_bf16_autocast():
    """The one cosine every explainer uses (LeGrad's and the baselines'): fp32 scores even
    where autocast would compute the product in bf16."""
    torch.manual_seed(2)
    embedding = torch.randn(3, 40)
    targets = F.normalize(torch.randn(3, 2, 40), dim=-1)
    exact = torch.einsum("bd,bkd->bk", F.normalize(embedding.double(), dim=-1), targets.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = cosines(embedding.bfloat16(), targets)
        naive = torch.einsum("bd,bkd->bk", F.normalize(embedding.bfloat16().float(), dim=-1), targets)
    assert scores.dtype == torch.float32
    assert naive.dtype == torch.bfloat16  # what the baselines' own cosine gave before
    assert (scores.double() - exact).abs().max() < 1e-2  # bf16 input rounding only
    model, (C, H, W) = example("open_clip")
    vit = adapter_for(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = vit.tokens_before(torch.randn(2, C, H, W), vit.num_layers)
        assert vit.model_scores(tokens, F.normalize(torch.randn(2, 3, vit.embed_dim), dim=-1)).dtype == torch.float32


def test_per_target_gradients_is_one_backward_per_column():
    torch.manual_seed(3)
    x = torch.randn(2, 5, requires_grad=True)
    w = torch.randn(3, 5)
    total = (x[:, None, :] * w).sum(-1) ** 2  # [B, K]
    got = per_target_gradients(total, x, lambda g: g * 1)
    for kk in range(3):
        expected = 2 * (x * w[kk]).sum(-1, keepdim=True) * w[kk]
        torch.testing.assert_close(got[:, kk], expected)


def test_patch_layout_strided_and_tiled():
    tiled = PatchLayout(3, (8, 8))
    assert tiled.grid(32, 48) == (4, 6)
    with pytest.raises(ValueError, match="image size 30x32 is not a multiple of the patch size 8x8"):
        tiled.grid(30, 32)
    grid = torch.rand(2, 1, 4, 6)
    torch.testing.assert_close(tiled.to_input(grid, (32, 48)),
                               F.interpolate(grid, scale_factor=8, mode="bilinear", align_corners=False))
    # an AST-style spectrogram layout: 16x16 patches every 10 bins (overlapping), one channel
    ast_like = PatchLayout(1, (16, 16), stride=(10, 10))
    assert ast_like.grid(128, 1024) == ((128 - 16) // 10 + 1, (1024 - 16) // 10 + 1)
    assert ast_like.to_input(torch.rand(1, 1, 12, 101), (128, 1024)).shape == (1, 1, 128, 1024)
    with pytest.raises(ValueError, match="smaller than one patch"):
        ast_like.grid(8, 100)


def test_wrong_channel_count_names_the_expected_layout():
    model, (C, H, W) = example("open_clip")
    with pytest.raises(ValueError, match=r"images must be a tensor \[B, 3, H, W\], got \(1, 1, 32, 32\)"):
        LeGrad(model)(torch.randn(1, 1, H, W), torch.randn(1, adapter_for(model).embed_dim))


def _module_imports(path: Path, package: str) -> set:
    """The avlegrad.explain modules ``path`` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("avlegrad.explain")}
    return found


def test_no_import_cycles_within_explain():
    root = Path(__file__).resolve().parents[1] / "avlegrad" / "explain"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path, name if is_package else name.rsplit(".", 1)[0])
    graph = {name: {m for m in _module_imports(path, package) if m in modules and m != name}
             for name, (path, package) in modules.items()}
    # importing a submodule imports its package first: a package importing its own submodule is fine,
    # a submodule importing its package's __init__ (or anything that comes back) is a cycle
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert "avlegrad.explain.adapters.base" in graph and len(graph) >= 8


def test_a_spectrogram_vit_with_overlapping_patches_is_explained_by_the_same_legrad():
    """An AST-like model: one input channel, a 16 x 64 "spectrogram", 8 x 8 patches every 6 bins
    (overlapping). Its adapter only states that layout; the replay equals the model's own forward
    and LeGrad equals the slow reference, with maps on the input's size."""
    from timm.models.vision_transformer import VisionTransformer

    from avlegrad.explain.adapters import TimmViT
    from avlegrad.explain.adapters.base import randomised_example

    def build():
        t = VisionTransformer(img_size=(16, 64), patch_size=8, in_chans=1, embed_dim=64, depth=3, num_heads=4,
                              num_classes=5)
        t.patch_embed.proj = torch.nn.Conv2d(1, 64, 8, stride=6)
        t.patch_embed.grid_size = (2, 10)
        t.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + 20, 64))
        return t

    class SpectrogramViT(TimmViT):  # what such a family's adapter adds: its input layout
        @property
        def layout(self):
            return PatchLayout(1, (8, 8), stride=(6, 6))

    model = randomised_example(build, seed=41)
    vit = SpectrogramViT(model)
    torch.manual_seed(42)
    spec = torch.randn(2, 1, 16, 64)
    assert vit.grid(16, 64) == (2, 10)
    with torch.no_grad():
        assert (vit.replayed_forward(spec) - vit.model_forward(spec)).abs().max().item() < 1e-5
    explainer = LeGrad(model, layer_index=0)
    explainer.vit = vit  # as adapter_for would give, were the family registered
    maps = explainer(spec, torch.tensor([[1, 4], [0, 2]]))
    assert maps.shape == (2, 2, 16, 64)
    grid = slow_legrad(vit, spec[1:2], 2, range(3))
    up = vit.layout.to_input(grid[None, None], (16, 64))[0, 0]
    assert (maps[1, 1] - (up - up.min()) / (up.max() - up.min())).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match=r"images must be a tensor \[B, 1, H, W\]"):
        explainer(torch.randn(1, 3, 16, 64), torch.tensor([0]))


def test_the_readme_supported_list_is_the_registry():
    """README's supported-models list is generated from the registry: one line per adapter of the
    package, its ``supported`` text (``python scripts/update_supported_models.py`` rewrites it when an
    adapter is added; adapters registered from outside the package are not listed)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- supported-models")
    block = readme[readme.index("\n", start) + 1:readme.index("<!-- /supported-models -->")]
    assert block.strip() == supported_models_markdown(), "run python scripts/update_supported_models.py"
    shipped = [e for e in registered_adapters() if e.cls.__module__.startswith("avlegrad.")]
    assert len(block.strip().splitlines()) == len(shipped)
