"""Perception Encoder Audio-Visual (PE-AV, ``transformers`` ``PeAudioVideoModel``,
``facebook/pe-av-*``, Apache-2.0) as an audio encoder, and its frame tower as the image tower
LeGrad explains (:mod:`avlegrad.explain.adapters.pe_av`).

PE-AV embeds audio and video into one space: ``PeAudioVideoModel.forward`` scores
``audio_embeds = audio_model.audio_head(audio_encoder(input_values).pooler_output)`` against
``video_embeds = video_model.video_head(video_encoder(pixel_values_videos).pooler_output)``
(``logits_audio_video``). :class:`PeAVAudioEncoder` computes ``audio_embeds``; the tower it pairs
with is the same checkpoint's video branch (``load_clip`` dispatches here, :func:`load_pe_av_tower`),
so ``--audio-encoder pe-av`` explains PE-AV's own frame tower, as ``imagebind`` does its own.

Audio preprocessing (transformers ``PeAudioFeatureExtractor``): mono float at 48 kHz (the feature
extractor's ``sampling_rate``; a local checkpoint's ``preprocessor_config.json`` may say otherwise),
reflect-padded at the end to a multiple of the codec's hop (``dac_config.hop_length``, 1920
samples = 40 ms), with a padding mask of ones; a clip is never padded with its batch-mates (all
clips of a batch have one length), so embeddings are batch independent. The shortest clip is one
hop. Frames: ``PeVideoVideoProcessor``: resized (bilinear) to the frame tower's size (336 px for
``pe-av-large``), mean/std of the timm Perception Encoder config (0.5, 0.5).

Weights: ``PeAudioVideoModel.from_pretrained(model_id)`` from the Hugging Face cache (downloaded
when the hub is reachable), or a local folder holding the checkpoint (``checkpoint=FOLDER``, or
``--audio-encoder FOLDER``); offline without a cached copy, one line names the model id and the
local-path option. ``pretrained=False`` builds random weights from ``config`` (a
``PeAudioVideoConfig`` dict) under ``seed``; its tower is rebuilt identically from the same
config and seed.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .base import AudioEncoder
from .factory import TrainingContract, register_audio_encoder

DEFAULT_MODEL = "facebook/pe-av-large"
MODEL_PREFIX = "facebook/pe-av"
TAG = "pe-av"  # clip_pretrained naming the checkpoint of clip_model (Hugging Face cache / hub)
SAMPLE_RATE = 48000  # PeAudioFeatureExtractor's default sampling_rate
MODEL_TYPE = "pe_audio_video"


def tiny_config(**overrides) -> dict:
    """A small ``PeAudioVideoConfig`` (as a dict) for tests and offline examples: a 3-block
    Perception Encoder frame tower on 32 px frames (8 px patches), 2-layer audio, video and
    audio-video transformers, a 2-stage codec (hop 8 samples), a 1-layer text model."""
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2,
                sep_token_id=1)
    vision = dict(architecture="vit_pe_core_tiny_patch16_384", num_labels=24, global_pool="map", do_pooling=True,
                  model_args=dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4,
                                  attn_pool_num_heads=4, ref_feat_shape=(2, 2)))
    enc = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=12)
    dac = dict(encoder_hidden_size=4, downsampling_ratios=[2, 4], codebook_dim=8, hidden_size=16)
    cfg = dict(text_config=text, audio_video_config=dict(audio_config=dict(dac_config=dac, **enc),
                                                         video_config=dict(vision_config=vision, **enc), **enc))
    cfg.update(overrides)
    return cfg


MIN_TRANSFORMERS = (5, 13)  # the first release whose PE-AV codec (PeAudioDacEncoder) has its checkpoints' widths


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("PE-AV needs transformers >= 5.13 (pip install -e \".[hf]\")") from None
    version = tuple(int(v) for v in transformers.__version__.split(".")[:2] if v.isdigit())
    if not hasattr(transformers, "PeAudioVideoModel") or version < MIN_TRANSFORMERS:
        raise ImportError(f"PE-AV needs transformers >= 5.13, found {transformers.__version__} "
                          "(pip install -e \".[hf]\")")
    return transformers


# transformers 5.24's ``auto_docstring`` checks the docstring of the methods ``PeVideoModel.__init__``
# defines, every time one is built, and ``print``s an "[ERROR] `padding_mask_videos` is part of ...'s
# signature, but not documented" line to stdout for each (its own docstring gap, nothing wrong with
# the model); the library drops exactly those lines so a user's output is not littered with them.
_DOCSTRING_CHECK = ("[ERROR] `", "but not documented. Make sure to add it to the docstring")


@contextlib.contextmanager
def _without_docstring_check_lines():
    """Capture stdout while a PE-AV model is built; write back every line but transformers'
    docstring-check messages (:data:`_DOCSTRING_CHECK`)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        kept = [line for line in buffer.getvalue().splitlines(keepends=True)
                if not (line.startswith(_DOCSTRING_CHECK[0]) and _DOCSTRING_CHECK[1] in line)]
        if kept:
            sys.stdout.write("".join(kept))


def build_random_model(config: dict, seed: int = 0):
    """A random-weight ``PeAudioVideoModel`` from a config dict, drawn from ``seed`` without
    touching the caller's random state (so the audio encoder and the tower built from the same
    config and seed are the same model), in eval mode."""
    transformers = _transformers()
    try:
        cfg = transformers.PeAudioVideoConfig(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"PE-AV config {config!r} is not a valid PeAudioVideoConfig: {e}") from None
    with torch.random.fork_rng(devices=[]), _without_docstring_check_lines():
        torch.manual_seed(int(seed))
        model = transformers.PeAudioVideoModel(cfg)
    return model.eval()


def is_pe_av_folder(path) -> bool:
    """Whether ``path`` is a folder holding a PE-AV checkpoint (its config.json's model_type)."""
    config = Path(str(path)).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def _hub_reachable() -> bool:
    from ..download import hub_reachable

    return hub_reachable()


def load_pretrained_model(model_id: str = DEFAULT_MODEL, path=None):
    """``PeAudioVideoModel.from_pretrained`` in fp32 and eval mode, from the local folder ``path``
    or, for ``model_id``, the Hugging Face cache (the hub when reachable). Raises
    ``WeightsUnavailableError`` (one line: the model id and the local-path option) when neither
    holds the weights, ``ValueError`` for a ``path`` that is not a PE-AV checkpoint folder."""
    from ..download import WeightsUnavailableError

    transformers = _transformers()
    if path is not None:
        folder = Path(str(path)).expanduser()
        if not is_pe_av_folder(folder):
            raise ValueError(f"{folder} is not a PE-AV checkpoint folder (a config.json with model_type "
                             f"{MODEL_TYPE!r}, as `hf download` writes with a local folder)")
        source, offline = str(folder), True
    else:
        source, offline = model_id, not _hub_reachable()
    try:
        config = _config(transformers, source, offline)
        with _without_docstring_check_lines():
            model = transformers.PeAudioVideoModel.from_pretrained(source, config=config, local_files_only=offline,
                                                                   dtype=torch.float32)
    except OSError as e:
        where = "not in the Hugging Face cache and the hub cannot be reached" if offline else str(e).splitlines()[0]
        raise WeightsUnavailableError(
            f"cannot load the PE-AV weights {source!r} ({where}): run `hf download {model_id}` once "
            f"on a machine with internet (cached under ~/.cache/huggingface), or give the folder holding them: "
            f"create_audio_encoder('pe-av', checkpoint=FOLDER) (`audio_encoder`=FOLDER)") from None
    return model.eval()


def _config(transformers, source: str, offline: bool):
    """The checkpoint's ``PeAudioVideoConfig``, its frame tower's classifier width read back.

    transformers 5.24 saves the frame tower's config with ``TimmWrapperConfig.to_dict`` (the width as
    ``label_names``, one per output, beside a ``num_classes`` that may be stale), but
    ``PeVideoEncoderConfig`` rebuilds it without ``TimmWrapperConfig.from_dict``, ignoring both: a
    saved PE-AV then reloads with a 2-output head and fails on the size mismatch. The width is
    passed here as ``num_labels`` (the number of label names, else ``num_classes``)."""
    config, _ = transformers.PeAudioVideoConfig.get_config_dict(source, local_files_only=offline)
    vision = config.get("audio_video_config", {}).get("video_config", {}).get("vision_config")
    if isinstance(vision, dict) and "num_labels" not in vision:
        names = vision.pop("label_names", None)
        width = len(names) if isinstance(names, list) and names else vision.get("num_classes")
        if width:
            vision["num_labels"] = int(width)
            vision.pop("num_classes", None)
    return transformers.PeAudioVideoConfig.from_dict(config)


def _sample_rate(path) -> int:
    """The feature extractor's sampling rate stored beside a local checkpoint, else 48 kHz."""
    if path is not None:
        config = Path(str(path)).expanduser() / "preprocessor_config.json"
        try:
            return int(json.loads(config.read_text()).get("sampling_rate", SAMPLE_RATE))
        except (OSError, ValueError, TypeError):
            pass
    return SAMPLE_RATE


class PeAVAudioEncoder(AudioEncoder):
    """PE-AV's audio branch: mono waveforms ``[B, T]`` at ``sample_rate`` (48 kHz) -> ``audio_embeds``
    ``[B, D]`` in PE-AV's audio-visual space (``D`` the text width, 1024 for pe-av-large).

    Holds only the audio encoder and ``audio_head`` of ``model`` (a ``PeAudioVideoModel``);
    ``clip_model`` / ``clip_pretrained`` / ``clip_model_cfg`` / ``clip_init_seed`` name the same
    checkpoint, whose frame tower :func:`load_pe_av_tower` loads. ``encode`` follows
    ``PeAudioFeatureExtractor`` + ``PeAudioModel.get_audio_embeds`` exactly.
    """

    def __init__(self, model, model_id: str = DEFAULT_MODEL, pretrained: str | None = TAG,
                 config: dict | None = None, seed: int = 0, sample_rate: int = SAMPLE_RATE):
        audio = model.audio_model
        embed_dim = audio.audio_head.proj.out_features
        super().__init__(sample_rate, embed_dim, model_id, pretrained, config, seed)
        self.audio_encoder = audio.audio_encoder
        self.audio_head = audio.audio_head
        self.hop_length = int(audio.audio_encoder.config.dac_config.hop_length)
        self.config = dict(model_id=model_id, pretrained=pretrained is not None, config=config, seed=int(seed))

    @property
    def min_samples(self) -> int:
        """One codec hop (1920 samples, 40 ms at 48 kHz): shorter clips give no audio token."""
        return self.hop_length

    def preprocess(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T]`` -> (``input_values`` ``[B, 1, T']``, ``padding_mask`` ``[B, T']`` of ones), ``T'``
        the next multiple of the hop, reflect-padded as ``PeAudioFeatureExtractor``."""
        x = waveforms.float()
        pad = -x.shape[1] % self.hop_length
        if pad:
            x = F.pad(x.unsqueeze(1), (0, pad), mode="reflect").squeeze(1)
        return x.unsqueeze(1), torch.ones(x.shape, dtype=torch.int32, device=x.device)

    def encode(self, waveforms: torch.Tensor) -> torch.Tensor:
        weight = self.audio_head.proj.weight
        values, mask = self.preprocess(waveforms.to(weight.device))
        out = self.audio_encoder(input_values=values.to(weight.dtype), padding_mask=mask)
        return self.audio_head(out.pooler_output)


def is_pe_av_tower(model_name, pretrained=None, model_cfg=None) -> bool:
    """Whether ``load_clip(model_name, pretrained, model_cfg)`` names a PE-AV frame tower."""
    return (str(model_name).startswith(MODEL_PREFIX) or str(pretrained).lower() == TAG
            or (isinstance(model_cfg, dict) and "audio_video_config" in model_cfg)
            or (pretrained not in (None, "") and is_pe_av_folder(pretrained)))


def load_pe_av_tower(model_name: str, pretrained=None, model_cfg: dict | None = None, init_seed: int = 0):
    """The video branch (``PeVideoModel``) of a PE-AV checkpoint, frozen and in eval mode, and its
    frame preprocessing config (open_clip's keys: size, mean, std, interpolation).

    ``pretrained``: ``"pe-av"`` (``model_name`` from the Hugging Face cache / hub), a local
    checkpoint folder, or None/"none" with ``model_cfg`` (a config dict: random weights drawn from
    ``init_seed``, the audio encoder's twin)."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from ..download import RANDOM_WEIGHTS

    if pretrained in RANDOM_WEIGHTS:
        import logging

        what = model_name if not model_cfg else f"the PE-AV frame tower of the given config (not {model_name}'s)"
        logging.getLogger("avlegrad").warning(
            "%s has RANDOM weights (pretrained=%r): maps and scores are not meaningful", what, pretrained)
        model = build_random_model(model_cfg or {}, init_seed)  # default: PeAudioVideoConfig's defaults
    elif str(pretrained).lower() == TAG:
        model = load_pretrained_model(model_name)
    else:
        model = load_pretrained_model(model_name, path=pretrained)
    video = model.video_model
    video.requires_grad_(False)
    # where encode_text finds the checkpoint's tokenizer (none for random weights)
    video.avlegrad_tokenizer = None if pretrained in RANDOM_WEIGHTS else (
        model_name if str(pretrained).lower() == TAG else str(pretrained))
    trunk = video.video_encoder.embedder.vision_model.timm_model
    size = tuple(trunk.patch_embed.img_size)
    pretrained_cfg = getattr(trunk, "pretrained_cfg", {}) or {}
    cfg = merge_preprocess_dict(PreprocessCfg(), {
        "size": size, "mean": tuple(pretrained_cfg.get("mean", (0.5, 0.5, 0.5))),
        "std": tuple(pretrained_cfg.get("std", (0.5, 0.5, 0.5))), "interpolation": "bilinear"})
    return video.eval(), cfg


def encode_text(video, prompts: list[str]) -> torch.Tensor:
    """Text embeddings ``[P, D]`` (float32) in the video embedding's space: ``text_video_head`` of
    the text model's first token, as ``PeVideoModel.forward`` computes ``text_video_embeds``, with the
    checkpoint's own tokenizer (padding, attention mask). ``video``: a tower :func:`load_pe_av_tower`
    loaded; ValueError (one line) for one without a tokenizer (random weights)."""
    from transformers import AutoTokenizer

    source = getattr(video, "avlegrad_tokenizer", None)
    if source is None:
        raise ValueError("this PE-AV tower has no tokenizer (random weights, or not loaded by "
                         "avlegrad.models.load_clip): text targets need a PE-AV checkpoint's tokenizer")
    offline = Path(source).expanduser().is_dir() or not _hub_reachable()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    device = video.text_video_head.proj.weight.device
    batch = tokenizer(list(prompts), padding=True, return_tensors="pt").to(device)
    with torch.no_grad():
        out = video.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               output_hidden_states=True)
        return video.text_video_head(out.hidden_states[-1][:, 0]).float()


@register_audio_encoder("pe-av", training=TrainingContract(False, "PE-AV's audio branch is used as published "
                                                                 "(its DAC codec runs without gradients)"),
                        test_config={"pretrained": False, "config": tiny_config()},
                        directory=is_pe_av_folder)
def pe_av(checkpoint=None, model_id: str = DEFAULT_MODEL, pretrained: bool = True, config: dict | None = None,
          seed: int = 0) -> PeAVAudioEncoder:
    """PE-AV's audio encoder, paired with the same checkpoint's frame tower.

    ``checkpoint``: a local folder holding a PE-AV checkpoint (the local-path option); None:
    ``model_id`` (default ``facebook/pe-av-large``; also ``facebook/pe-av-base``, ...) from the
    Hugging Face cache or hub. ``pretrained=False`` (and no checkpoint): random weights from
    ``config`` (a ``PeAudioVideoConfig`` dict, default the library's defaults) under ``seed``.
    """
    if checkpoint is not None:
        folder = str(Path(str(checkpoint)).expanduser().resolve())
        model = load_pretrained_model(model_id, path=folder)
        encoder = PeAVAudioEncoder(model, model_id, folder, sample_rate=_sample_rate(folder))
        encoder.config["checkpoint"] = folder
        return encoder.eval()
    if pretrained:
        return PeAVAudioEncoder(load_pretrained_model(model_id), model_id, TAG).eval()
    config = dict(config) if config is not None else {}
    return PeAVAudioEncoder(build_random_model(config, seed), model_id, None, config, seed).eval()
