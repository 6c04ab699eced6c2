"""Creating the CLIP image/text model, with errors that say what to download and where."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .download import RANDOM_WEIGHTS  # noqa: F401 (re-exported: a `pretrained` meaning random weights)
from .download import WeightsUnavailableError, hub_reachable  # noqa: F401 (re-exported)

# autocast precision by name (None: no autocast): the one table of eval, localize, analyze and the app
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _offline_if_hub_unreachable(pretrained):
    """Weights named by a tag come from the Hugging Face hub: offline where it cannot be reached."""
    offline = pretrained is not None and not Path(pretrained).expanduser().is_file() and not hub_reachable()
    if not offline:
        yield
        return
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def load_clip(model_name: str, pretrained: str | None = None, device="cpu", model_cfg: dict | None = None,
              init_seed: int = 0):
    """An open_clip CLIP model in eval mode with frozen parameters, and its preprocessing config.

    ``model_name``: an open_clip name (``ViT-B-16``) or a path to an open_clip model-config JSON
    (``{"embed_dim": ..., "vision_cfg": ..., "text_cfg": ...}``); or any label when ``model_cfg``
    (the keyword arguments of ``open_clip.CLIP``, ``"custom_text": true`` for ``CustomTextCLIP``)
    describes the architecture. ``pretrained``: an open_clip tag (``openai``,
    ``laion2b_s32b_b79k``), a local checkpoint file, or None/"none" for random weights, drawn
    from ``init_seed`` without touching the caller's RNG (so a resumed, multi-process or later
    run rebuilds the same model; a warning says the weights are random).

    PE-AV (``transformers``): a ``facebook/pe-av-*`` name with ``pretrained="pe-av"`` (the Hugging
    Face cache / hub), a local checkpoint folder, or random weights from a ``PeAudioVideoConfig``
    dict as ``model_cfg``; the model is the checkpoint's video branch (``PeVideoModel``, explained
    at its frame tower; ``avlegrad/audio/pe_av.py``).
    """
    import open_clip

    from .audio.imagebind_clip import is_imagebind_tower
    from .audio.pe_av import is_pe_av_tower

    if model_cfg is None and is_imagebind_tower(model_name, pretrained):
        return _load_imagebind_clip(pretrained, device)
    if is_pe_av_tower(model_name, pretrained, model_cfg):  # a transformers PE-AV video branch (audio/pe_av.py)
        from .audio.pe_av import load_pe_av_tower

        model, cfg = load_pe_av_tower(model_name, pretrained, model_cfg, init_seed)
        return model.to(device), cfg
    if pretrained in RANDOM_WEIGHTS:
        logging.getLogger("avlegrad").warning(
            "%s has RANDOM weights (pretrained=%r): maps and scores are not meaningful", model_name, pretrained)
        pretrained = None
    if model_cfg is None:
        if str(model_name).endswith(".json"):
            model_name = _register_config(model_name)
        elif model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {model_name!r}; open_clip knows e.g. ViT-B-32, ViT-B-16, "
                             f"ViT-L-14, ViT-H-14 (open_clip.list_models() lists all), or pass a model-config JSON")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained is not None and not Path(pretrained).expanduser().is_file() and pretrained not in tags:
            raise ValueError(f"pretrained={pretrained!r} is neither a file nor a tag of {model_name}; "
                             f"its tags: {', '.join(tags) or 'none'}")
    elif pretrained is not None and not Path(pretrained).expanduser().is_file():
        missing = "file not found; " if Path(pretrained).suffix else ""
        raise ValueError(f"pretrained {pretrained!r}: {missing}with a custom model_cfg, pretrained must be a "
                         f"state-dict file (or none for random weights)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init_seed))
        if model_cfg is not None:
            model = _build_from_cfg(model_cfg)
            if pretrained is not None:
                from .audio.factory import load_checkpoint_file

                state = load_checkpoint_file(Path(pretrained).expanduser())
                model.load_state_dict(state.get("state_dict", state))
        else:
            try:
                with _offline_if_hub_unreachable(pretrained):
                    model = open_clip.create_model(model_name, pretrained=pretrained)
            except RuntimeError as e:
                if "download" not in str(e).lower() and "not found" not in str(e).lower():
                    raise
                raise WeightsUnavailableError(
                    f"cannot get the weights {pretrained!r} of {model_name} ({e}). Download them once on a "
                    f"machine with internet (open_clip caches them under ~/.cache/huggingface), or pass the "
                    f"path of a local checkpoint file as `pretrained`") from None
    model.requires_grad_(False)
    model.eval().to(device)
    # as open_clip's factory does, keep the full preprocessing config on the model (custom ones too)
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.get_model_preprocess_cfg(model))
    set_model_preprocess_cfg(model, cfg)
    return model, cfg


DEFAULT_TOWER = ("ViT-B-16", "openai")  # the image tower when neither an audio encoder nor a model names one


class ModelPair(NamedTuple):
    """What :func:`load_pair` loads: the CLIP model and its preprocessing config, the tower's name
    and weights as loaded, and the audio encoder (None without one)."""

    clip: torch.nn.Module
    cfg: dict
    name: str
    pretrained: str | None
    encoder: torch.nn.Module | None


def load_pair(audio_encoder=None, model: str | None = None, pretrained: str | None = None,
              device="cpu") -> ModelPair:
    """An audio encoder and the CLIP image tower it is used with, by the one policy every entry
    point (``evaluate``, ``Localizer.from_names``, the web app) follows:

    - ``audio_encoder`` (a registered name or a ``train.py`` checkpoint, or an encoder already
      built; None: a tower alone) is created in eval mode on ``device``;
    - with an encoder and neither ``model`` nor ``pretrained``: the tower the encoder was trained
      against (its ``clip_tower_spec``: open_clip name or model config, weights, seed);
    - otherwise open_clip's ``model`` (default ``ViT-B-16``) with ``pretrained`` (default
      ``openai``; ``none``/``random``: random weights), and an encoder refuses a tower that is not
      its own (``check_pair``) before anything is loaded.

    Raises ValueError (one line) for an encoder whose tower file is missing or that names no tower,
    and for a refused pair; the loaders' own errors (missing weights, bad checkpoint) pass through.
    """
    encoder = audio_encoder
    if isinstance(audio_encoder, (str, os.PathLike)):
        from .audio import create_audio_encoder

        encoder = create_audio_encoder(str(audio_encoder), device=device).eval()
    if encoder is not None and model is None and pretrained is None:
        if getattr(encoder, "missing_tower_file", None):
            raise ValueError(encoder.missing_tower_file)
        spec = encoder.clip_tower_spec  # the tower the encoder was trained against
        if spec["model"] is None:
            raise ValueError(f"audio encoder {str(audio_encoder)!r} does not name its CLIP tower; give model and "
                             "pretrained")
        clip, cfg = load_clip(spec["model"], spec["pretrained"], device=device, model_cfg=spec["model_cfg"],
                              init_seed=spec["init_seed"])
        return ModelPair(clip, cfg, spec["model"], spec["pretrained"], encoder)
    name = model or DEFAULT_TOWER[0]
    pretrained = pretrained if pretrained is not None else DEFAULT_TOWER[1]
    if encoder is not None:
        encoder.check_pair(name, None if pretrained in RANDOM_WEIGHTS else pretrained)
    clip, cfg = load_clip(name, pretrained, device=device)
    return ModelPair(clip, cfg, name, pretrained, encoder)


def _load_imagebind_clip(pretrained, device):
    """ImageBind's own image and text towers as an open_clip CLIP (see ``audio/imagebind_clip.py``)."""
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from .audio.imagebind_clip import IMAGEBIND_TAG, load_imagebind_clip

    model = load_imagebind_clip(None if str(pretrained).lower() == IMAGEBIND_TAG else pretrained)
    model.requires_grad_(False)
    model.eval().to(device)
    # CLIP's defaults (bicubic, OpenAI mean/std) are ImageBind's (data.load_and_transform_vision_data)
    cfg = merge_preprocess_dict(PreprocessCfg(), {"size": tuple(model.visual.image_size)})
    set_model_preprocess_cfg(model, cfg)
    return model, cfg


def _build_from_cfg(model_cfg: dict):
    import open_clip

    cfg = dict(model_cfg)
    custom_text = cfg.pop("custom_text", False)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        return cls(**cfg)
    except TypeError as e:
        raise ValueError(f"clip model_cfg {model_cfg!r} is not a valid open_clip {cls.__name__} config: {e}") from None


def _register_config(path) -> str:
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} does not exist")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model config {path} is not valid JSON ({e})") from None
    if "vision_cfg" not in cfg or "embed_dim" not in cfg:
        raise ValueError(f"model config {path} lacks 'embed_dim' or 'vision_cfg' (open_clip's model-config format)")
    open_clip.add_model_config(path)
    return path.stem


def encode_text(model, model_name: str, prompts: list[str]) -> torch.Tensor:
    """CLIP text embeddings ``[P, D]`` (float32) of ``prompts``, with the model's own tokenizer."""
    import open_clip

    if type(model).__name__ == "PeVideoModel":  # a PE-AV tower (load_clip): its text tower and tokenizer
        from .audio.pe_av import encode_text as pe_av_text

        return pe_av_text(model, prompts)
    name = Path(model_name).stem if str(model_name).endswith(".json") else model_name  # as registered
    device = next(model.parameters()).device
    with torch.no_grad():
        return model.encode_text(open_clip.get_tokenizer(name)(prompts).to(device)).float()


def image_tensor(frame, preprocess_cfg: dict, size: int | None = None) -> torch.Tensor:
    """``[H, W, 3]`` uint8 RGB -> normalised ``[3, S, S]`` float, resized WITHOUT cropping.

    The box benchmarks annotate the full frame, so the image is squashed to S x S (EZ-VSL's
    ``Resize((224, 224))``) rather than centre-cropped as CLIP's own preprocessing does.
    """
    from PIL import Image

    size = size or preprocess_cfg["size"][0]
    resample = Image.BICUBIC if preprocess_cfg.get("interpolation", "bicubic") == "bicubic" else Image.BILINEAR
    img = Image.fromarray(frame).resize((size, size), resample)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(preprocess_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"]).view(3, 1, 1)
    return (x - mean) / std


def create_clip_tower(model: str, pretrained: str | None = None, model_cfg: dict | None = None,
                      init_seed: int = 0, device=None) -> tuple[torch.nn.Module, object]:
    """A frozen open_clip model in eval mode and its eval image transform (PIL image -> tensor):
    :func:`load_clip` plus open_clip's transform, for training."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    tower, cfg = load_clip(model, pretrained, device=device or "cpu", model_cfg=model_cfg, init_seed=init_seed)
    return tower, image_transform_v2(PreprocessCfg(**cfg), is_train=False)
