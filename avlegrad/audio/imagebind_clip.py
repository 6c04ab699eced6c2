"""ImageBind's own image (and text) tower, loaded from ``imagebind_huge.pth`` into open_clip's ViT-H-14.

The LeGrad paper explains the image tower ImageBind's audio tower was trained against. ImageBind
says that tower is OpenCLIP ViT-H-14 (``laion2b_s32b_b79k``), frozen; this module does not assume
it: it reads the vision (and text) trunk and head from the audio encoder's own file and builds
an ordinary open_clip ``CLIP`` from them, which every explainer already supports. The tag
``"imagebind"`` names that tower (``load_clip("ViT-H-14", "imagebind")``, the default image
tower of ``--audio-encoder imagebind``); ``laion2b_s32b_b79k`` stays accepted as an option.
``benchmarks/imagebind_vs_laion2b.py`` measures how far the two towers' embeddings differ.

The mapping, read from facebookresearch/ImageBind (``imagebind/models/imagebind_model.py``
``ImageBindModel._create_modality_*`` and ``imagebind_huge``; ``multimodal_preprocessors.py``
``PadIm2Video``, ``PatchEmbedGeneric``, ``RGBDTPreprocessor``, ``TextPreprocessor``;
``transformer.py`` ``SimpleTransformer``/``BlockWithMasking``; ``helpers.py``
``SelectElement``, ``SelectEOSAndProject``, ``LearnableLogitScaling``):

* vision stem: ``PadIm2Video(repeat, 2)`` then ``Conv3d(3, 1280, kernel (2, 14, 14), stride the
  same, no bias)``. An image is repeated over the 2 frames, so the 3-D conv equals a 2-D conv
  whose kernel is the sum of the 3-D kernel over its temporal axis (``weight.sum(dim=2)``);
  that is open_clip's ``conv1``. ``cls_token`` [1, 1, W] -> ``class_embedding``;
  ``pos_embedding_helper.pos_embed`` [1, 257, W] -> ``positional_embedding``.
* vision trunk: ``pre_transformer_layer.0`` (LayerNorm, eps 1e-6) -> ``ln_pre``; blocks
  ``norm_1``, ``attn`` (``nn.MultiheadAttention``, no bias_kv), ``norm_2``, ``mlp.fc1/fc2`` (GELU)
  -> ``ln_1``, ``attn``, ``ln_2``, ``mlp.c_fc/c_proj``; no LayerScale.
* vision head: LayerNorm (eps 1e-6) -> class token -> ``Linear(1280, 1024, bias=False)``:
  ``ln_post`` and ``proj = weight.T``; the postprocessor only L2-normalises.
* text: ``token_embedding``, ``pos_embed`` [1, 77, W] -> ``positional_embedding``; the causal
  trunk (no pre-LN) -> ``transformer``; head ``SelectEOSAndProject(LayerNorm(eps 1e-6), Linear(no
  bias))`` at the argmax token -> ``ln_final``, ``text_projection = weight.T``; the
  postprocessor's learnt ``log_logit_scale`` -> ``logit_scale``.

Every LayerNorm of ImageBind uses eps 1e-6 (open_clip's default is 1e-5), so the tower is
built with ``norm_kwargs={"eps": 1e-6}``. Preprocessing is CLIP's (224, bicubic, the OpenAI
mean/std: ImageBind's ``data.load_and_transform_vision_data``), open_clip's default.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .factory import CheckpointError

# the one ImageBind file holds the audio encoder (imagebind.py) and this image tower
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
IMAGEBIND_FILENAME = "imagebind_huge.pth"
# Not published by the authors and not computable here (no download possible). When None, the
# download is not checked; the digest of what was downloaded is written next to it
# (``imagebind_huge.pth.sha256``) so it can be recorded here once known.
IMAGEBIND_SHA256: str | None = None
IMAGEBIND_TAG = "imagebind"
VISION, TEXT = "vision", "text"
EPS = 1e-6


def is_imagebind_state(state: dict) -> bool:
    """Whether a state dict is ImageBind's (it holds the vision trunk's official keys)."""
    return any(k.startswith("modality_trunks.vision.") for k in state)


def _block_count(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _block_entries(state: dict, src: str, dst: str, layers: int) -> dict:
    """ImageBind ``BlockWithMasking`` keys -> open_clip ``ResidualAttentionBlock`` keys."""
    names = {"attn.in_proj_weight": "attn.in_proj_weight", "attn.in_proj_bias": "attn.in_proj_bias",
             "attn.out_proj.weight": "attn.out_proj.weight", "attn.out_proj.bias": "attn.out_proj.bias",
             "norm_1.weight": "ln_1.weight", "norm_1.bias": "ln_1.bias",
             "norm_2.weight": "ln_2.weight", "norm_2.bias": "ln_2.bias",
             "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
             "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias"}
    return {f"{dst}{i}.{ours}": state[f"{src}blocks.{i}.{theirs}"]
            for i in range(layers) for theirs, ours in names.items()}


def clip_state_dict(state: dict, source="state dict") -> tuple[dict, dict]:
    """ImageBind's official state dict -> (an open_clip ``CLIP`` state dict, the ``CLIP`` keyword
    arguments that fit it except the head counts). Tensors are copied out (a memory-mapped file
    can be closed). A missing key or an unexpected shape raises :class:`CheckpointError`."""
    if "state_dict" in state and isinstance(state["state_dict"], dict) and not is_imagebind_state(state):
        state = state["state_dict"]
    if not is_imagebind_state(state):
        sample = ", ".join(list(state)[:5])
        raise CheckpointError(source, f"holds no ImageBind vision weights (no 'modality_trunks.vision.' keys); "
                              f"its keys begin: {sample}")
    pv, tv, hv = "modality_preprocessors.vision.", "modality_trunks.vision.", "modality_heads.vision."
    pt, tt, ht = "modality_preprocessors.text.", "modality_trunks.text.", "modality_heads.text."
    try:
        conv3d = state[pv + "rgbt_stem.proj.1.weight"]  # [W, 3, T, p, p]
        if conv3d.ndim != 5 or conv3d.shape[1] != 3:
            raise CheckpointError(source, f"the vision stem is {tuple(conv3d.shape)}, not a Conv3d [W, 3, T, p, p]")
        width, patch = conv3d.shape[0], conv3d.shape[-1]
        pos = state[pv + "pos_embedding_helper.pos_embed"]
        grid = round((pos.shape[1] - 1) ** 0.5)
        if grid * grid + 1 != pos.shape[1]:
            raise CheckpointError(source, f"vision pos_embed {tuple(pos.shape)} is not 1 + a square grid")
        layers = _block_count(state, tv)
        out = {
            # a 2-frame repeat of the image through the 3-D conv = the 2-D conv of the kernel summed over time
            "visual.conv1.weight": conv3d.float().sum(dim=2).to(conv3d.dtype),
            "visual.class_embedding": state[pv + "cls_token"].reshape(width),
            "visual.positional_embedding": pos[0],
            "visual.ln_pre.weight": state[tv + "pre_transformer_layer.0.weight"],
            "visual.ln_pre.bias": state[tv + "pre_transformer_layer.0.bias"],
            "visual.ln_post.weight": state[hv + "0.weight"],
            "visual.ln_post.bias": state[hv + "0.bias"],
            "visual.proj": state[hv + "2.weight"].t(),
            **_block_entries(state, tv, "visual.transformer.resblocks.", layers),
        }
        embed_dim = out["visual.proj"].shape[1]
        text_pos = state[pt + "pos_embed"]
        text_width = text_pos.shape[-1]
        text_layers = _block_count(state, tt)
        vocab = state[pt + "token_embedding.weight"].shape[0]
        out.update({
            "token_embedding.weight": state[pt + "token_embedding.weight"],
            "positional_embedding": text_pos[0],
            "ln_final.weight": state[ht + "proj.0.weight"],
            "ln_final.bias": state[ht + "proj.0.bias"],
            "text_projection": state[ht + "proj.1.weight"].t(),
            "logit_scale": state["modality_postprocessors.text.1.log_logit_scale"].reshape(()),
            **_block_entries(state, tt, "transformer.resblocks.", text_layers),
        })
    except KeyError as e:
        raise CheckpointError(source, f"ImageBind weights lack {e.args[0]!r} (not the imagebind_huge layout)") from None
    cfg = dict(
        embed_dim=int(embed_dim),
        vision_cfg=dict(image_size=grid * patch, patch_size=patch, width=width, layers=layers,
                        mlp_ratio=state[tv + "blocks.0.mlp.fc1.weight"].shape[0] / width,
                        norm_kwargs={"eps": EPS}),
        text_cfg=dict(context_length=text_pos.shape[1], vocab_size=vocab, width=text_width, layers=text_layers,
                      norm_kwargs={"eps": EPS}),
    )
    return {k: v.detach().clone() for k, v in out.items()}, cfg


def imagebind_clip(state: dict, source="state dict", vision_heads: int = 16, text_heads: int = 16):
    """An open_clip ``CLIP`` holding ImageBind's image and text towers (eval mode), from its state dict.

    ``vision_heads``/``text_heads``: attention heads (``imagebind_huge``: 16 and 16; shapes do not
    say). The result's ``encode_image`` equals ImageBind's vision output before its L2 norm.
    """
    import open_clip

    weights, cfg = clip_state_dict(state, source)
    cfg["vision_cfg"]["head_width"] = cfg["vision_cfg"]["width"] // int(vision_heads)
    cfg["text_cfg"]["heads"] = int(text_heads)
    with torch.device("meta"):
        model = open_clip.CLIP(**cfg)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(source, f"ImageBind towers do not fit open_clip's CLIP built with {cfg}: {e}") from None
    # buffers not in the state dict (the text causal mask) are rebuilt on the CPU
    n = model.context_length
    model.register_buffer("attn_mask", torch.full((n, n), float("-inf")).triu_(1), persistent=False)
    return model.eval()


def load_imagebind_clip(checkpoint=None, progress: bool = True):
    """ImageBind (huge)'s image and text towers as an open_clip ``CLIP``: from ``checkpoint`` (the
    official ``imagebind_huge.pth``, or None for the cached copy the ImageBind audio encoder
    uses, downloaded when absent: 4.5 GB, CC-BY-NC 4.0)."""
    from ..download import pretrained_weights_file
    from .factory import load_weights_mmap

    if checkpoint is None:
        checkpoint = pretrained_weights_file("ImageBind", IMAGEBIND_URL, IMAGEBIND_FILENAME,
                                             sha256=IMAGEBIND_SHA256, progress=progress)
    checkpoint = Path(checkpoint).expanduser()
    return imagebind_clip(load_weights_mmap(checkpoint), source=checkpoint)


def is_imagebind_tower(model_name: str, pretrained) -> bool:
    """``ViT-H-14`` with the tag ``imagebind`` or an ImageBind checkpoint file (its vision keys)."""
    from ..download import RANDOM_WEIGHTS

    if str(model_name).replace("/", "-") != "ViT-H-14" or pretrained in RANDOM_WEIGHTS:
        return False
    if str(pretrained).lower() == IMAGEBIND_TAG:
        return True
    path = Path(str(pretrained)).expanduser()
    if not path.is_file() or path.suffix not in (".pth", ".pt"):
        return False
    from .factory import load_weights_mmap

    try:
        return is_imagebind_state(load_weights_mmap(path))
    except CheckpointError:
        return False
