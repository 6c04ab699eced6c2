"""Shared fixtures: tiny randomly initialised models (nothing can be downloaded here)."""
import contextlib
import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tiny_clip(seed: int = 0, image_size=32, patch_size=8, width=64, layers=3, heads=4,
                   embed_dim=32, **vision_extra):
    """A small open_clip CLIP with every parameter randomised (no unit LayerNorms, no zero
    biases), so tests do not pass by accident of a special initialisation."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=dict(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                        head_width=width // heads, **vision_extra),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.ndim == 1:  # norm scales stay positive, near 1
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif p.ndim == 1 or name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def model_snapshot(model):
    """Everything a call could change on a model: weights, flags, grads, modes, hooks, patches."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "storage": {k: v.data_ptr() for k, v in model.state_dict().items()},  # not swapped for a copy
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": {k: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      len(getattr(m, "_backward_pre_hooks", {})))
                  for k, m in model.named_modules()},
        "patched": {k: sorted(a for a in vars(m) if a in ("forward", "attention", "_embeds", "_pos_embed"))
                    for k, m in model.named_modules()},
    }


def assert_model_unchanged(before: dict, after: dict) -> None:
    for key in before:
        if key == "state":
            assert before["state"].keys() == after["state"].keys()
            for name, value in before["state"].items():
                assert torch.equal(after["state"][name], value), name
        elif key == "grads":
            assert all(after["grads"][k] is v for k, v in before["grads"].items())
        else:
            assert after[key] == before[key], key


@pytest.fixture
def tiny_clip():
    return make_tiny_clip()


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_directory(directory, handler=QuietHandler):
    """A local http.server on 127.0.0.1 serving ``directory``; yields its base url."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def explained_images(monkeypatch):
    """How many images eval.py's explainers were asked to explain (a list of batch sizes)."""
    from avlegrad.eval import run

    seen = []
    real = run.create_explainer

    def counting(name, model, **kw):
        explainer = real(name, model, **kw)
        return lambda images, targets: seen.append(len(images)) or explainer(images, targets)

    monkeypatch.setattr(run, "create_explainer", counting)
    return seen


def count_live_frames(localizer, monkeypatch) -> list:
    """Wrap ``localizer.explain`` so that each call first records how many decoded frames
    (``localize.Frame`` objects still holding pixels) are alive; returns the list it fills."""
    import gc

    from avlegrad import localize

    alive = []
    explain = localizer.explain

    def counting_explain(frames, audio):
        alive.append(sum(type(o) is localize.Frame and o.rgb is not None for o in gc.get_objects()))
        explain(frames, audio)

    monkeypatch.setattr(localizer, "explain", counting_explain)
    return alive
