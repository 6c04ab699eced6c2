"""A tiny CLIP for the procedural world of :mod:`avlegrad.data.world`, trained on the CPU in minutes.

No pretrained CLIP can be fetched offline, so this one stands in for it: an ``open_clip.CLIP``
with a small ViT (``WORLD_CLIP_CONFIG``: 64 px, patch 8, 6 blocks of width 128), trained
contrastively on world pictures and their captions, tokenised by open_clip's default
``SimpleTokenizer``. The captions say what is where ("a red disc at the top left and a blue
square on the right"), so the embedding has to keep track of each object's place, as captions of
real photos often do (with bare object lists the tower localizes about as well under LeGrad, but
dense patch similarity becomes a much stronger baseline; docs/world.md). A picture's positives
are all captions that say the same (a multi-positive InfoNCE: a batch holds several pictures of
the same content, and calling them negatives of one another would only add noise).

The result is saved as a state-dict file (``clip.pt``, half precision: the token embedding of the
49,408-word vocabulary dominates it) plus the model config (``clip_config.json``, the keyword
arguments of ``open_clip.CLIP``, which is also open_clip's model-config format)::

    cfg = json.load(open("checkpoints/world/clip_config.json"))
    model, preprocess_cfg = avlegrad.models.load_clip("world-clip", pretrained="checkpoints/world/clip.pt",
                                                      model_cfg=cfg)

``train.py --config configs/world_audio.yaml`` then trains an audio encoder into its frozen image
space; ``package_audio_checkpoint`` makes that checkpoint travel with ``clip.pt``. The whole
chain, its timings and results: ``docs/world.md``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import world

log = logging.getLogger("avlegrad.world_clip")

REPO_ROOT = Path(__file__).resolve().parents[1]
# the shipped clip.pt, clip_config.json, audio.pt: package data (an installed avlegrad has them too);
# checkpoints/world in a checkout is a link to this folder
WORLD_CHECKPOINTS = Path(__file__).resolve().parent / "assets" / "world"
CLIP_FILE, CONFIG_FILE, AUDIO_FILE = "clip.pt", "clip_config.json", "audio.pt"
WORLD_CLIP_NAME = "world-clip"  # the label the tower goes by (clip.model in configs/world_audio.yaml)

WORLD_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 6, "head_width": 32},
    # open_clip's default tokenizer: 77 tokens, 49,408 words (its ids need the whole table)
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PICTURE_STREAM = 0xC11B  # CLIP pictures draw from [seed, index, this]: never a benchmark clip's stream
RENDER_SIZE = 160  # pictures are drawn at the benchmark's frame size, then resized as eval does


# --------------------------------------------------------------------------------------------
# data: world pictures and captions, rendered in memory
# --------------------------------------------------------------------------------------------
def _cell(box) -> int:
    """The 3 x 3 cell of a box's centre (0 = top left ... 8 = bottom right), as position_phrase cuts it."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return 3 * (int(cy >= 0.4) + int(cy > 0.6)) + int(cx >= 0.4) + int(cx > 0.6)


def _render_chunk(args) -> tuple[np.ndarray, list[str], list[int]]:
    seed, indices, image_size, render_size, classes, positions = args
    from PIL import Image
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    images, captions, keys = [], [], []
    for index in indices:
        rng = np.random.default_rng([seed, index, PICTURE_STREAM])
        scene = world.make_scene(rng, render_size, classes)
        frame = scene.frame
        # 4:2:0 chroma subsampling, as the H.264 benchmark clips have it
        yuv = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
        frame = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        # the resize eval.py (models.image_tensor) and train.py (open_clip's transform) apply
        images.append(np.asarray(Image.fromarray(frame).resize((image_size, image_size), Image.BICUBIC)))
        boxes = [o.box for o in scene.objects] if positions else None
        captions.append(world.caption(scene.names, rng, boxes))
        if positions:  # what the caption says: each class and its cell
            keys.append(sum(1 << (9 * classes.index(o.name) + _cell(o.box)) for o in scene.objects))
        else:
            keys.append(sum(1 << classes.index(n) for n in scene.names))
    return np.stack(images), captions, keys


def render_world(num_images: int, seed: int, image_size: int, render_size: int = RENDER_SIZE,
                 classes=tuple(world.CLASSES), workers: int = 1,
                 positions: bool = False) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``num_images`` world pictures ``[N, S, S, 3]`` uint8, their captions, and what each caption
    says as a bitmask ``[N]``: the set of classes, or with ``positions`` (captions that say where
    each object is) the set of (class, 3 x 3 cell) pairs. The same seed gives the same pictures."""
    classes = list(classes)
    chunks = [list(range(s, min(s + 500, num_images))) for s in range(0, num_images, 500)]
    jobs = [(seed, c, image_size, render_size, classes, positions) for c in chunks]
    if workers > 1 and len(chunks) > 1:
        import multiprocessing as mp

        # fork where there is one: no need for a __main__ guard in the caller (the workers only
        # run numpy and OpenCV)
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(job) for job in jobs]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    captions = [c for p in parts for c in p[1]]
    keys = torch.tensor([k for p in parts for k in p[2]])
    return images, captions, keys


def to_model_input(images: torch.Tensor, preprocess_cfg: dict) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` -> normalised float ``[B, 3, S, S]`` (the model's mean and std)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(preprocess_cfg["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------
# the model, the loss, the loop
# --------------------------------------------------------------------------------------------
def tokenizer(context_length: int = 77):
    """open_clip's default ``SimpleTokenizer`` (what ``open_clip.get_tokenizer`` gives a model
    outside its registry, e.g. for ``eval.py --target text``)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def build_world_clip(model_cfg: dict | None = None, seed: int = 0):
    """A randomly initialised ``open_clip.CLIP`` of ``model_cfg`` (default ``WORLD_CLIP_CONFIG``)."""
    from .models import _build_from_cfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build_from_cfg(model_cfg or WORLD_CLIP_CONFIG)


def multi_positive_infonce(image: torch.Tensor, text: torch.Tensor, keys: torch.Tensor,
                           logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every caption naming the same set of objects as a picture is a
    positive of it (target: uniform over those), and the other way round."""
    logits = logit_scale * image @ text.t()
    positives = (keys[:, None] == keys[None, :]).float()
    targets = positives / positives.sum(1, keepdim=True)
    i2t = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(targets * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


@torch.no_grad()
def set_accuracy(model, images: torch.Tensor, keys: torch.Tensor, preprocess_cfg: dict,
                 classes=tuple(world.CLASSES), batch_size: int = 256) -> float:
    """Zero-shot: the share of pictures whose best-matching caption, among captions of every
    possible set of up to 3 classes, names exactly the objects in the picture."""
    import itertools

    classes = list(classes)
    sets = [c for r in range(1, 4) for c in itertools.combinations(range(len(classes)), r)]
    captions = [world.caption([classes[i] for i in s]) for s in sets]
    set_keys = torch.tensor([sum(1 << i for i in s) for s in sets])
    text = F.normalize(model.encode_text(tokenizer()(captions)), dim=-1)
    hits = 0
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], preprocess_cfg)
        best = (F.normalize(model.encode_image(x), dim=-1) @ text.t()).argmax(1)
        hits += int((set_keys[best] == keys[start:start + batch_size]).sum())
    return hits / len(images)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def train_world_clip(out_dir, *, num_images: int = 12000, epochs: float = 6.0, batch_size: int = 128,
                     lr: float = 1e-3, weight_decay: float = 0.1, warmup_steps: int = 100, seed: int = 0,
                     val_images: int = 500, model_cfg: dict | None = None, workers: int = 2,
                     threads: int | None = None, log_every: int = 50, positions: bool = True,
                     render_size: int = RENDER_SIZE) -> dict:
    """Train the world CLIP and write ``out_dir/clip.pt`` + ``clip_config.json`` (+ ``clip_train.json``,
    the settings, timings and figures). Pictures come from seed ``seed`` (training) and
    ``seed + 1`` (validation), on random streams no benchmark clip of ``generate_synthetic``
    uses. ``positions``: captions say where each object is ("a red disc at the top left"); a
    picture's positives are then the captions naming the same objects in the same 3 x 3 cells.
    ``render_size``: the pictures are drawn at this size and resized to the model's input, as
    the benchmark's frames are. Returns the ``clip_train.json`` dict."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    from .audio.factory import save_checkpoint_file

    out_dir = Path(out_dir)
    model_cfg = json.loads(json.dumps(model_cfg or WORLD_CLIP_CONFIG))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        started = time.time()
        size = model_cfg["vision_cfg"]["image_size"]
        images, captions, keys = render_world(num_images, seed, size, render_size, workers=workers,
                                              positions=positions)
        val_x, _, val_keys = render_world(val_images, seed + 1, size, render_size)
        model = build_world_clip(model_cfg, seed)
        preprocess_cfg = merge_preprocess_dict(PreprocessCfg(), open_clip.get_model_preprocess_cfg(model))
        tokens = tokenizer(model_cfg["text_cfg"]["context_length"])(captions)
        render_s = time.time() - started
        log.info("rendered %d + %d pictures in %.1f s", num_images, val_images, render_s)

        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=lr)
        steps_per_epoch = num_images // batch_size
        total = max(1, int(round(epochs * steps_per_epoch)))
        generator = torch.Generator().manual_seed(seed)
        model.train()
        history = []
        step, running = 0, 0.0
        train_started = time.time()
        while step < total:
            order = torch.randperm(num_images, generator=generator)
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                idx = order[b * batch_size:(b + 1) * batch_size]
                batch = images[idx]
                if not positions:  # captions without places do not say left or right
                    flip = torch.rand(len(idx), generator=generator) < 0.5
                    batch[flip] = batch[flip].flip(2)
                for group in optimizer.param_groups:
                    group["lr"] = lr * _lr_factor(step, total, warmup_steps)
                image = F.normalize(model.encode_image(to_model_input(batch, preprocess_cfg)), dim=-1)
                text = F.normalize(model.encode_text(tokens[idx]), dim=-1)
                loss = multi_positive_infonce(image, text, keys[idx], model.logit_scale.exp())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
                running += loss.item()
                if step % log_every == 0 or step == total:
                    n = log_every if step % log_every == 0 else step % log_every
                    history.append({"step": step, "loss": running / n, "seconds": round(time.time() - train_started, 1)})
                    log.info("step %d/%d loss %.4f (%.0f s)", step, total, running / n, time.time() - train_started)
                    running = 0.0
        train_s = time.time() - train_started
        model.eval()
        accuracy = set_accuracy(model, val_x, val_keys, preprocess_cfg)
        log.info("held-out pictures: the caption naming exactly their objects ranks first for %.1f%%", 100 * accuracy)

        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).clone()
                 for k, v in model.state_dict().items()}
        save_checkpoint_file(state, out_dir / CLIP_FILE)
        (out_dir / CONFIG_FILE).write_text(json.dumps(model_cfg, indent=1) + "\n")
        report = {"model_cfg": model_cfg, "num_images": num_images, "val_images": val_images, "epochs": epochs,
                  "steps": total, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                  "warmup_steps": warmup_steps, "seed": seed, "positions": positions, "render_size": render_size, "threads": torch.get_num_threads(),
                  "render_seconds": round(render_s, 1), "train_seconds": round(train_s, 1),
                  "total_seconds": round(time.time() - started, 1), "val_set_accuracy": accuracy,
                  "final_loss": history[-1]["loss"] if history else None, "history": history,
                  "torch": torch.__version__, "open_clip": open_clip.__version__}
        (out_dir / "clip_train.json").write_text(json.dumps(report, indent=1) + "\n")
        return report
    finally:
        torch.set_num_threads(old_threads)


def load_world_models(directory=WORLD_CHECKPOINTS, device="cpu"):
    """The shipped (or any packaged) world models: ``(clip model, its preprocessing config,
    audio encoder)``, the CLIP frozen and both in eval mode; the audio checkpoint's relative CLIP
    path is resolved against ``directory`` (by ``create_audio_encoder``)."""
    from .audio import create_audio_encoder
    from .models import load_clip

    directory = Path(directory)
    cfg = json.loads((directory / CONFIG_FILE).read_text())
    model, preprocess_cfg = load_clip(WORLD_CLIP_NAME, pretrained=str(directory / CLIP_FILE), device=device,
                                      model_cfg=cfg)
    audio = create_audio_encoder(str(directory / AUDIO_FILE), device=device)  # resolves the CLIP path
    audio.check_pair(WORLD_CLIP_NAME, str(directory / CLIP_FILE))
    return model, preprocess_cfg, audio


# --------------------------------------------------------------------------------------------
# audio-encoder checkpoints that travel with the CLIP file
# --------------------------------------------------------------------------------------------
def package_audio_checkpoint(src, dst, clip_file=None) -> Path:
    """Copy a ``train.py`` checkpoint to ``dst`` as an encoder-only checkpoint whose stored
    ``clip_pretrained`` is the CLIP file's path RELATIVE to ``dst``'s folder (``clip.pt`` when
    they lie side by side), so the pair works wherever the folder is cloned; ``eval.py`` resolves
    such a path against the checkpoint's folder. ``clip_file``: the CLIP file as it lies now
    (default: the stored path, relative to the current directory)."""
    from .audio.factory import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint_file, save_checkpoint_file

    src, dst = Path(src), Path(dst)
    ckpt = load_checkpoint_file(src)
    if ckpt.get("format") != CHECKPOINT_FORMAT or "encoder" not in ckpt:
        raise CheckpointError(src, "is not an avlegrad audio-encoder checkpoint (written by train.py)")
    kwargs = dict(ckpt["encoder"]["kwargs"])
    clip_file = Path(clip_file if clip_file is not None else kwargs.get("clip_pretrained") or "")
    if not clip_file.is_file():
        raise FileNotFoundError(f"the CLIP file {clip_file} of {src} does not exist; pass clip_file=")
    kwargs["clip_pretrained"] = Path(os.path.relpath(clip_file.resolve(), dst.resolve().parent)).as_posix()
    packed = {"format": ckpt["format"], "version": ckpt["version"],
              "encoder": {"name": ckpt["encoder"]["name"], "kwargs": kwargs}, "state_dict": ckpt["state_dict"]}
    for key in ("config", "summary"):  # how it was trained (its audio window, ...)
        if key in ckpt:
            packed[key] = ckpt[key]
    save_checkpoint_file(packed, dst)
    return dst


def save_untrained_audio_encoder(config, dst, overrides=(), clip_file=None) -> Path:
    """The audio encoder of a ``train.py`` config at its initialisation (the weights a run of
    that config starts from), packaged as :func:`package_audio_checkpoint` does: the untrained
    control for the trained encoder."""
    import tempfile

    from .audio.factory import encoder_checkpoint, save_checkpoint_file
    from .train import build_encoder, load_config

    cfg = load_config(config, overrides)
    model_cfg = cfg["clip"]["model_cfg"]
    if model_cfg is None:
        raise ValueError(f"{config}: clip.model_cfg is not set; the world audio config gives the tower's config")
    torch.manual_seed(int(cfg["seed"]))  # as training.Trainer does before building the encoder
    encoder = build_encoder(cfg, int(model_cfg["embed_dim"]), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "untrained.pt"
        save_checkpoint_file(encoder_checkpoint(encoder, summary={"step": 0, "untrained": True}, config=cfg), raw)
        return package_audio_checkpoint(raw, dst, clip_file)
