"""Training an audio encoder into a frozen CLIP image space (what ``train.py`` runs).

The targets are the frozen open_clip image tower's embeddings of each clip's frames, computed
once and cached on disk. The audio encoder learns to land on them: symmetric InfoNCE with a
learnable temperature (as CLIP), plus an optional cosine distillation term.

Runs are reproducible and resumable bit for bit (on the CPU; on GPUs up to nondeterministic
kernels unless ``train.deterministic``): the data order and audio crops derive from
``(seed, epoch, clip index)`` only, and a checkpoint holds the model, optimizer, scheduler,
step and every process's RNG states. ``torchrun`` gives DDP (nccl on CUDA, gloo on CPU); rank 0
writes checkpoints and logs.

Layout of ``output_dir``: ``config.yaml`` (the resolved config), ``train.log``, ``log.csv``
(one row per logged train step and per validation), ``tb/`` (TensorBoard), ``checkpoints/``
(``last.pt`` for ``--resume``; ``best.pt`` (best held-out recall@1) and ``final.pt``: encoder only,
for ``create_audio_encoder(PATH)``).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import logging
import math
import os
import random
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from .audio.base import crop_or_pad
from .audio.clip_space import clip_embed_dim, create_clip_tower, tower_fingerprint
from .audio.factory import (CheckpointError, create_audio_encoder, encoder_checkpoint, load_checkpoint_file,
                            save_checkpoint_file)
from .data.media import MediaError, load_audio, load_frame, video_info
from .data.annotations import AnnotationNotFoundError, find_annotation, read_id_list, read_vggss_json
from .data.record import ClipFiles, locate_clip
from .distributed import DistInfo, all_gather_objects, all_gather_rows, init_distributed
from .download import cache_root

log = logging.getLogger("avlegrad.training")

# Every config key, its default and what it means. A YAML file or ``--set key=value`` overrides
# them; unknown keys are errors (typos would otherwise be silently ignored).
DEFAULTS = {
    "output_dir": "runs/audio",       # checkpoints/, log.csv, tb/, train.log, config.yaml
    "seed": 0,                        # data order, crops, model init
    "device": None,                   # null: cuda (cuda:LOCAL_RANK under torchrun) if available, else cpu
    "dist_backend": None,             # null: nccl on CUDA, gloo on CPU
    "clip": {                         # the frozen image tower whose space the audio encoder learns
        "model": "ViT-B-16",          # open_clip model name (any label when model_cfg is given)
        "pretrained": "openai",       # open_clip tag, checkpoint path, or null (random init from init_seed)
        "model_cfg": None,            # open_clip.CLIP kwargs for a tower not in open_clip's registry
        "init_seed": 0,               # seed that makes a random-init tower (pretrained: null) reproducible
    },
    "encoder": {                      # create_audio_encoder(name, checkpoint, **rest); clip_* and embed_dim
        "name": "timm",               # are filled in from `clip`
    },
    "data": {
        "root": None,                 # prepared (frames/<id>.jpg + audio/<id>.wav) or raw (videos/<id>.mp4)
        "train_list": None,           # text file, one clip id per line (blank lines and # comments skipped)
        "val_list": None,             # held-out clip ids; null: hold out val_fraction of train_list
        "val_fraction": 0.0,          # used when val_list is null; the split is fixed by `seed`
        "audio_seconds": 10.0,        # training/validation window (random/central); shorter audio is zero-padded
        "frames_per_clip": 1,         # raw videos: frames sampled evenly, embeddings averaged; prepared: its one frame
        "vggss_annotations": None,    # VGG-SS annotations, a JSON list of {"file": id, ...}; training refuses
                                      # those ids. null: where data/download_annotations.py puts it
        "targets_cache": None,        # folder of cached CLIP targets; null: <cache>/targets
        "num_workers": 4,             # DataLoader workers (audio decoding, frame decoding)
        "targets_batch_size": 64,     # frames per image-tower forward when computing the targets
    },
    "train": {
        "epochs": 30,                 # the LR schedule spans epochs * steps_per_epoch optimizer steps
        "batch_size": 128,            # per process and micro-batch: the InfoNCE negatives
        "accum_steps": 1,             # micro-batches per optimizer step
        "lr": 1e-3,
        "min_lr_ratio": 0.01,         # cosine decays to lr * min_lr_ratio
        "warmup_steps": 500,          # linear warm-up (optimizer steps)
        "weight_decay": 0.05,         # not applied to biases, norms and the temperature
        "grad_clip_norm": 1.0,        # null: no clipping
        "temperature_init": 0.07,     # logit scale starts at 1/0.07, clamped to [1, 100] as CLIP does
        "learn_temperature": True,
        "distill_weight": 0.0,        # weight of the cosine distillation term mean(1 - cos(audio, image))
        "gather_negatives": True,     # under torchrun: InfoNCE over every process's batch, as one process
                                      # with the whole batch would; false: each process's own batch only
        "amp": True,                  # bf16 autocast on CUDA (no effect on CPU)
        "deterministic": False,       # deterministic CUDA kernels (slower); CPU runs are deterministic anyway
        "max_steps": None,            # stop after this many optimizer steps (the schedule still spans `epochs`)
        "save_every_steps": 1000,     # also saved at every epoch end and when stopping
        "log_every_steps": 10,
        "val_every_epochs": 1,
        "progress": True,             # tqdm bar on rank 0
    },
}
FREE_KEYS = {"encoder", "clip.model_cfg"}  # free-form dicts: any key is accepted
CSV_FIELDS = ["split", "step", "epoch", "lr", "loss", "infonce", "distill", "logit_scale", "r1", "r5", "clips"]


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def _merge(base: dict, new: dict, where: str, prefix: str = "") -> None:
    """Deep-merge ``new`` into ``base``; keys must exist in ``base`` except inside FREE_KEYS sections."""
    parent = prefix.rstrip(".")
    free = any(parent == f or parent.startswith(f + ".") for f in FREE_KEYS)
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base and not free:
            raise ValueError(f"{where}: unknown config key {dotted!r}; known keys"
                             f"{' in ' + repr(parent) if parent else ''}: {sorted(base)}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)


def _parse_value(text: str):
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            pass
    return value


def apply_override(cfg: dict, item: str) -> None:
    """Apply one ``key.sub=value`` (value parsed as YAML) to ``cfg`` in place."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-4")
    key, text = item.split("=", 1)
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _parse_value(text)
    _merge(cfg, nested, where=f"--set {item}")


def load_config(path=None, overrides=()) -> dict:
    """Defaults, updated by a YAML file and then by ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        with open(path) as f:
            user = yaml.safe_load(f) or {}
        if not isinstance(user, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, found {type(user).__name__}")
        _merge(cfg, user, where=str(path))
    for item in overrides or ():
        apply_override(cfg, item)
    return cfg


def plain_config(value):
    """``value`` with paths as strings and tuples as lists: what YAML and weights-only loading accept."""
    if isinstance(value, dict):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# --------------------------------------------------------------------------------------------
# RNG state (plain tensors and Python types, so torch.load(weights_only=True) reads it back)
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------------
# clip lists
# --------------------------------------------------------------------------------------------
def refuse_vggss_test_ids(ids_by_list: dict[str, list[str]], annotations) -> None:
    """Raise ValueError if a training/validation list holds VGG-SS test clips; warn if unchecked."""
    if annotations is not None and not Path(annotations).expanduser().is_file():
        raise FileNotFoundError(f"data.vggss_annotations {annotations} not found")
    try:
        path = find_annotation("vggss.json", "vggss", annotations=annotations)
    except AnnotationNotFoundError as e:
        log.warning("cannot check that no VGG-SS test clip is used for training: %s", e)
        return
    test = set(read_vggss_json(path))
    for name, ids in ids_by_list.items():
        bad = [i for i in ids if Path(i).stem in test or i in test]
        if bad:
            raise ValueError(f"{name}: {len(bad)} of {len(ids)} clips are VGG-SS test clips (listed in {path}), "
                             f"e.g. {bad[:5]}; remove them: the benchmark's clips must never be trained on")


def split_ids(cfg: dict) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids) from ``data.train_list`` and ``data.val_list`` / ``data.val_fraction``."""
    data = cfg["data"]
    if not data["train_list"]:
        raise ValueError("data.train_list is not set: name a text file with one clip id per line")
    train = read_id_list(data["train_list"])
    if data["val_list"]:
        val = read_id_list(data["val_list"])
        val_set = set(val)
        overlap = [i for i in train if i in val_set]
        if overlap:
            log.warning("%d clips of %s are also in the validation list %s; they are left out of training (e.g. %s)",
                        len(overlap), data["train_list"], data["val_list"], overlap[:3])
            train = [i for i in train if i not in val_set]
    elif data["val_fraction"]:
        order = np.random.default_rng(cfg["seed"]).permutation(len(train))
        n_val = int(math.ceil(float(data["val_fraction"]) * len(train)))
        held = set(order[:n_val].tolist())
        val = [i for k, i in enumerate(train) if k in held]
        train = [i for k, i in enumerate(train) if k not in held]
    else:
        val = []
    return train, val


def locate_clips(root, ids: list[str]) -> tuple[list[ClipFiles], dict[str, str]]:
    """Files of each clip that has both a picture and a sound source; reasons for the others."""
    found, skipped = [], {}
    for clip_id in ids:
        files = locate_clip(root, clip_id)
        if files is None:
            skipped[clip_id] = f"no files under {root}"
        elif files.frame is None and files.video is None:
            skipped[clip_id] = f"no frame image and no video ({files.audio})"
        elif files.audio is None and files.video is None:
            skipped[clip_id] = f"no audio file and no video ({files.frame})"
        else:
            found.append(files)
    return found, skipped


def _log_skipped(skipped: dict[str, str], what: str) -> None:
    if skipped:
        log.warning("%s: %d clips skipped", what, len(skipped))
        for clip_id, reason in skipped.items():
            log.warning("  skipped %s: %s", clip_id, reason)


# --------------------------------------------------------------------------------------------
# targets: CLIP image embeddings of the frames, computed once and cached
# --------------------------------------------------------------------------------------------
def frame_times(duration: float, count: int) -> list[float]:
    """``count`` times spread evenly over a video (centres of equal segments)."""
    return [duration * (k + 0.5) / count for k in range(count)]


def load_clip_frames(files: ClipFiles, frames_per_clip: int) -> list[np.ndarray]:
    """The prepared frame, or ``frames_per_clip`` frames sampled evenly from the video."""
    if files.frame is not None:
        return [load_frame(files.frame)]
    if frames_per_clip == 1:
        return [load_frame(files.video)]  # the middle frame
    duration = video_info(files.video)["duration"]
    if not duration:
        raise MediaError(files.video, "unknown duration: cannot sample frames evenly")
    return [load_frame(files.video, time=t) for t in frame_times(duration, frames_per_clip)]


class _FrameDataset(torch.utils.data.Dataset):
    def __init__(self, clips: list[ClipFiles], frames_per_clip: int, preprocess):
        self.clips, self.frames_per_clip, self.preprocess = clips, frames_per_clip, preprocess

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        from PIL import Image

        try:
            frames = load_clip_frames(self.clips[i], self.frames_per_clip)
        except MediaError as e:
            return i, None, str(e)
        return i, torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]), ""


def _as_list(batch):
    return batch


@torch.no_grad()
def _embed_frames(tower, clips, cfg, d: DistInfo, preprocess) -> tuple[torch.Tensor, dict[str, str]]:
    data = cfg["data"]
    loader = torch.utils.data.DataLoader(
        _FrameDataset(clips, int(data["frames_per_clip"]), preprocess), batch_size=8,
        num_workers=int(data["num_workers"]), collate_fn=_as_list)
    out = torch.zeros(len(clips), clip_embed_dim(tower))
    failed: dict[str, str] = {}
    pending: list[tuple[int, torch.Tensor]] = []

    def flush():
        frames = torch.cat([f for _, f in pending]).to(d.device)
        emb = tower.encode_image(frames, normalize=True).float().cpu()
        start = 0
        for i, f in pending:
            out[i] = F.normalize(emb[start:start + len(f)].mean(0), dim=0)
            start += len(f)
        pending.clear()

    from tqdm import tqdm

    for batch in tqdm(loader, desc="CLIP targets", disable=not (d.is_main and cfg["train"]["progress"])):
        for i, frames, reason in batch:
            if frames is None:
                failed[clips[i].clip_id] = reason
                continue
            pending.append((i, frames))
            if sum(len(f) for _, f in pending) >= int(data["targets_batch_size"]):
                flush()
    if pending:
        flush()
    return out, failed


def _safe_name(text) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))[:60]


def build_clip_tower(cfg: dict, device) -> tuple[nn.Module, object]:
    """The frozen image tower of ``cfg['clip']`` and its image transform."""
    c = cfg["clip"]
    return create_clip_tower(c["model"], c["pretrained"], c["model_cfg"], c["init_seed"], device=device)


def _picture_files_signature(clips: list[ClipFiles]) -> str:
    """sha256 of the path, size and modification time of every clip's frame or video file: a
    clip re-encoded or regenerated under the same id invalidates the cache (its content may differ)."""
    h = hashlib.sha256()
    for c in clips:
        for f in (c.frame, c.video):
            if f is not None:
                st = Path(f).stat()
                h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def compute_targets(clips: list[ClipFiles], cfg: dict, d: DistInfo, split: str,
                    tower=None) -> tuple[list[ClipFiles], torch.Tensor]:
    """CLIP targets ``[N, D]`` of the clips whose frames decode (and those clips), from the cache if valid.

    The cache file is keyed by the tower (name, weights tag, sha256 of its image weights), the
    image preprocessing, the frame settings, the clip id list and the size and modification time
    of every picture file; any change gives a new file.
    Under DDP each process embeds a shard, rank 0 merges them. ``tower``: ``(model, transform)``
    from ``build_clip_tower`` (built here if None).
    """
    clip_cfg, data = cfg["clip"], cfg["data"]
    tower, preprocess = tower if tower is not None else build_clip_tower(cfg, d.device)
    ids = [c.clip_id for c in clips]
    key = {"clip_model": clip_cfg["model"], "clip_pretrained": clip_cfg["pretrained"],
           "clip_model_cfg": clip_cfg["model_cfg"], "tower_sha256": tower_fingerprint(tower),
           "preprocess": repr(preprocess), "frames_per_clip": int(data["frames_per_clip"]),
           "num_clips": len(ids), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
           "files_sha256": _picture_files_signature(clips)}
    if d.enabled:  # rank 0's key for all: nodes with their own copies of the data may see other mtimes
        key = all_gather_objects(d, key)[0]
    key_hash = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(data["targets_cache"]).expanduser() if data["targets_cache"] else cache_root() / "targets"
    path = folder / f"{_safe_name(clip_cfg['model'])}-{_safe_name(clip_cfg['pretrained'] or 'random')}-{key_hash}.pt"

    cached = None
    if path.is_file():
        try:
            cached = load_checkpoint_file(path)
        except CheckpointError as e:
            log.warning("ignoring unreadable targets cache (%s); recomputing", e)
        if cached is not None and cached.get("key") != key:
            log.warning("targets cache %s was made for other settings; recomputing", path)
            cached = None
    if cached is None:
        shard = list(range(d.rank, len(clips), d.world_size))
        log.info("%s: computing CLIP targets of %d clips with %s (%s)", split, len(clips), clip_cfg["model"],
                 clip_cfg["pretrained"] or f"random init, seed {clip_cfg['init_seed']}")
        emb, failed = _embed_frames(tower, [clips[i] for i in shard], cfg, d, preprocess)
        if d.enabled:
            part = path.with_name(f"{path.name}.part{d.rank}of{d.world_size}")
            save_checkpoint_file({"index": torch.tensor(shard), "targets": emb, "failed": failed}, part)
            d.barrier()
            if d.is_main:
                targets = torch.zeros(len(clips), emb.shape[1])
                failed = {}
                for r in range(d.world_size):
                    p = path.with_name(f"{path.name}.part{r}of{d.world_size}")
                    piece = load_checkpoint_file(p)
                    targets[piece["index"]] = piece["targets"]
                    failed.update(piece["failed"])
                    p.unlink()
        else:
            targets = emb
        if d.is_main:
            save_checkpoint_file({"key": key, "ids": ids, "targets": targets, "failed": failed}, path)
            log.info("%s: CLIP targets cached in %s", split, path)
        d.barrier()
        cached = load_checkpoint_file(path)
    else:
        log.info("%s: CLIP targets read from cache %s", split, path)
    failed = cached["failed"]
    if d.is_main:
        _log_skipped(failed, f"{split}: unreadable frames")
    keep = [k for k, c in enumerate(clips) if c.clip_id not in failed]
    return [clips[k] for k in keep], cached["targets"][keep].clone()


# --------------------------------------------------------------------------------------------
# audio data: order and crops derive from (seed, epoch, index) only
# --------------------------------------------------------------------------------------------
class ClipAudioDataset(torch.utils.data.Dataset):
    """Items are ``(epoch, index)`` keys -> ``(waveform [L], target [D], index)``, or None if unreadable.

    ``random_crop``: the window starts at an offset drawn from ``(seed, epoch, index)`` (training);
    otherwise the central window (validation). Unreadable audio is logged and skipped.
    """

    def __init__(self, clips: list[ClipFiles], targets: torch.Tensor, sample_rate: int, num_samples: int,
                 seed: int, random_crop: bool):
        self.clips, self.targets = clips, targets
        self.sample_rate, self.num_samples = sample_rate, num_samples
        self.seed, self.random_crop = seed, random_crop
        self._warned: set[int] = set()

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, key):
        epoch, i = key
        files = self.clips[i]
        try:
            audio, _ = load_audio(files.audio or files.video, sample_rate=self.sample_rate)
        except MediaError as e:
            if i not in self._warned:
                self._warned.add(i)
                log.warning("skipped clip %s: %s", files.clip_id, e)
            return None
        spare = max(len(audio) - self.num_samples, 0)
        if self.random_crop:
            start = int(np.random.default_rng([self.seed, epoch, i]).integers(0, spare + 1))
        else:
            start = spare // 2
        return torch.from_numpy(crop_or_pad(audio, self.num_samples, start)), self.targets[i], i


def collate_clips(items):
    """Stack the readable items: ``(waveforms [B, L], targets [B, D], indices [B])``; B may be 0."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    waves, targets, index = zip(*items)
    return torch.stack(waves), torch.stack(targets), torch.tensor(index)


class EpochBatchSampler:
    """One process's micro-batches of ``(epoch, index)`` keys for one epoch, from batch ``start`` on.

    The permutation is drawn from ``(seed, epoch)``; process ``rank`` takes every ``world``-th
    index of it (the tail that does not fill a batch on every process is dropped).
    """

    def __init__(self, num_items: int, batch_size: int, num_batches: int, seed: int, epoch: int,
                 rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch_size, self.num_batches = num_items, batch_size, num_batches
        self.seed, self.epoch, self.rank, self.world, self.start = seed, epoch, rank, world, start

    def __len__(self):
        return max(self.num_batches - self.start, 0)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        mine = order[self.rank::self.world]
        for b in range(self.start, self.num_batches):
            yield [(self.epoch, int(i)) for i in mine[b * self.batch_size:(b + 1) * self.batch_size]]


# --------------------------------------------------------------------------------------------
# model and loss
# --------------------------------------------------------------------------------------------
def info_nce(audio: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor,
             all_audio: torch.Tensor | None = None, all_image: torch.Tensor | None = None,
             offset: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE of matching (audio, image) unit-vector pairs, mean over these rows.

    With ``all_audio``/``all_image`` (the whole batch over processes, these rows at ``offset``),
    these rows are scored against every pair of it: the terms of these rows in the whole batch's loss.
    """
    all_audio = audio if all_audio is None else all_audio
    all_image = image if all_image is None else all_image
    labels = offset + torch.arange(len(audio), device=audio.device)
    audio_to_image = F.cross_entropy(logit_scale * audio @ all_image.t(), labels)
    image_to_audio = F.cross_entropy(logit_scale * image @ all_audio.t(), labels)
    return (audio_to_image + image_to_audio) / 2


class ContrastiveModel(nn.Module):
    """The audio encoder plus the learnable temperature, so DDP averages both.

    ``gather_negatives``: under torch.distributed, InfoNCE's negatives are every process's pairs;
    each process's loss is weighted by its share of the whole batch, so DDP's average of the
    gradients is exactly the gradient of the whole batch's loss.
    """

    def __init__(self, encoder: nn.Module, temperature_init: float, learn_temperature: bool,
                 distill_weight: float, gather_negatives: bool = True):
        super().__init__()
        self.encoder = encoder
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature_init)),
                                        requires_grad=learn_temperature)
        self.distill_weight = float(distill_weight)
        self.gather_negatives = bool(gather_negatives)

    def clamp_temperature(self):
        with torch.no_grad():
            self.logit_scale.clamp_(0, math.log(100))  # CLIP's bounds: scale in [1, 100]

    def forward(self, waveforms, targets):
        image = targets.float()
        dim = image.shape[1]
        if len(waveforms):
            audio = self.encoder(waveforms).float()
        else:  # no readable clip here: a zero that reaches every parameter, so DDP still gets a
            # gradient, and that (through the empty rows) joins the backward of the gather below
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            audio = image.new_zeros(0, dim) + zero
        all_audio, all_image, offset = audio, image, 0
        if self.gather_negatives:  # one gather for both: every process's rows, in rank order
            rows, offset = all_gather_rows(torch.cat([audio, image], dim=1))
            all_audio, all_image = rows[:, :dim], rows[:, dim:]
        if len(audio) == 0:
            zero = zero + all_audio.sum() * 0.0
            return zero, {"infonce": zero.detach(), "distill": zero.detach()}
        contrastive = info_nce(audio, image, self.logit_scale.exp(), all_audio, all_image, offset)
        distill = (1 - (audio * image).sum(-1)).mean()
        loss = contrastive + self.distill_weight * distill if self.distill_weight else contrastive
        gathered = self.gather_negatives and dist.is_available() and dist.is_initialized()
        share = len(audio) * (dist.get_world_size() if gathered else 1) / len(all_audio)
        return loss * share, {"infonce": contrastive.detach() * share, "distill": distill.detach() * share}


def build_optimizer(model: ContrastiveModel, cfg: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and name != "logit_scale" else no_decay).append(p)
    t = cfg["train"]
    return torch.optim.AdamW([{"params": decay, "weight_decay": float(t["weight_decay"])},
                              {"params": no_decay, "weight_decay": 0.0}], lr=float(t["lr"]))


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def evaluate(encoder: nn.Module, loader, targets: torch.Tensor, logit_scale: float, device, amp: bool) -> dict:
    """Audio -> image retrieval on held-out clips: recall@1/5 (ties count against) and InfoNCE."""
    was_training = encoder.training
    encoder.eval()
    embs, index = [], []
    for batch in loader:
        if batch is None:
            continue
        waves, _, idx = batch
        with _autocast(device, amp):
            embs.append(encoder(waves.to(device)).float().cpu())
        index.append(idx)
    encoder.train(was_training)
    if not embs:
        return {"r1": float("nan"), "r5": float("nan"), "loss": float("nan"), "clips": 0}
    audio, index = torch.cat(embs), torch.cat(index)
    image = targets[index].float()
    sim = audio @ image.t()
    # rank of the clip's own image: how many images score at least as high, itself excluded
    rank = (sim >= sim.diag()[:, None]).sum(1) - 1
    return {"r1": (rank < 1).float().mean().item(), "r5": (rank < 5).float().mean().item(),
            "loss": info_nce(audio, image, torch.tensor(logit_scale)).item(), "clips": len(audio)}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_encoder(cfg: dict, embed_dim: int, device) -> nn.Module:
    """The audio encoder named by ``cfg['encoder']``, placed in the space of ``cfg['clip']``."""
    kwargs = dict(cfg["encoder"])
    name = kwargs.pop("name")
    checkpoint = kwargs.pop("checkpoint", None)
    for key in ("clip_model", "clip_pretrained", "clip_model_cfg", "clip_init_seed"):
        if key in kwargs:
            raise ValueError(f"encoder.{key} is set from the clip section; remove it from encoder")
    if kwargs.get("embed_dim", embed_dim) != embed_dim:
        raise ValueError(f"encoder.embed_dim={kwargs['embed_dim']} but the CLIP tower {cfg['clip']['model']} "
                         f"embeds into {embed_dim} dimensions")
    clip = cfg["clip"]
    kwargs.update(embed_dim=embed_dim, clip_model=clip["model"], clip_pretrained=clip["pretrained"],
                  clip_model_cfg=clip["model_cfg"], clip_init_seed=clip["init_seed"])
    return create_audio_encoder(name, checkpoint=checkpoint, device=device, **kwargs).train()


# --------------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------------
def _setup_logging(output_dir: Path, d: DistInfo) -> list[logging.Handler]:
    logger = logging.getLogger("avlegrad")
    logger.setLevel(logging.INFO if d.is_main else logging.WARNING)
    fmt = logging.Formatter(f"%(asctime)s [rank {d.rank}] %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if d.is_main:
        handlers.append(logging.FileHandler(output_dir / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return handlers


class CsvLog:
    """``log.csv``: train and validation rows; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, resume_step: int | None, drop_val_at_resume: bool):
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    step = int(row["step"])
                    redone = drop_val_at_resume and row["split"] == "val"  # that validation runs again
                    if step < resume_step or (step == resume_step and not redone):
                        rows.append(row)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, **row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS).writerow({k: row.get(k, "") for k in CSV_FIELDS})


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def resolve_run(config=None, overrides=(), resume=None) -> tuple[dict, Path | None]:
    """The config of a run and the checkpoint it resumes from.

    ``resume``: None (new run), ``"auto"`` (``<output_dir>/checkpoints/last.pt`` if it exists,
    else a new run) or a checkpoint path. A resumed run uses the config stored in the
    checkpoint, with ``overrides`` applied again (e.g. ``train.max_steps=null``, more epochs).
    """
    cfg = load_config(config, overrides)
    if resume is None:
        return cfg, None
    path = Path(cfg["output_dir"]) / "checkpoints" / "last.pt" if resume == "auto" else Path(resume)
    if not path.is_file():
        if resume == "auto":
            log.warning("--resume: no checkpoint at %s, starting a new run", path)
            return cfg, None
        raise FileNotFoundError(f"--resume {path}: checkpoint not found")
    stored = load_checkpoint_file(path).get("config")
    if stored is None:
        raise CheckpointError(path, "holds no training config: not a train.py checkpoint")
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, stored, where=str(path))
    for item in overrides or ():
        apply_override(cfg, item)
    return cfg, path


def run(config=None, overrides=(), resume=None) -> dict:
    """Resolve the config (see ``resolve_run``) and train."""
    cfg, checkpoint = resolve_run(config, overrides, resume)
    return train(cfg, resume_from=checkpoint)


def train(cfg: dict, resume_from=None) -> dict:
    """Train an audio encoder as ``cfg`` says; returns a summary (checkpoint path, step, metrics)."""
    cfg = plain_config(cfg)
    d = init_distributed(cfg["device"], cfg["dist_backend"])
    output_dir = Path(cfg["output_dir"])
    if d.is_main:
        (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    d.barrier()
    logger = logging.getLogger("avlegrad")
    level = logger.level
    handlers = _setup_logging(output_dir, d)
    try:
        return Trainer(cfg, d, output_dir).fit(resume_from)
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(level)
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


class Trainer:
    """One training run: data and targets, model, optimizer, the loop, checkpoints and logs."""

    def __init__(self, cfg: dict, d: DistInfo, output_dir: Path):
        self.cfg, self.d, self.output_dir = cfg, d, output_dir
        self.t, self.data = cfg["train"], cfg["data"]
        self.seed = int(cfg["seed"])
        if self.t["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        if d.is_main:
            with open(output_dir / "config.yaml", "w") as f:
                yaml.safe_dump(cfg, f, sort_keys=False)
        self._prepare_data()
        self._build_model()
        self.step, self.best_r1, self.val_done_epoch = 0, -1.0, -1
        self.running = self._zero_running()

    # --- setup ---------------------------------------------------------------------------------
    def _prepare_data(self):
        cfg, data, d = self.cfg, self.data, self.d
        if not data["root"] or not Path(data["root"]).is_dir():
            raise FileNotFoundError(f"data.root {data['root']!r} is not a folder")
        train_ids, val_ids = split_ids(cfg)
        lists = {f"data.train_list {data['train_list']}": read_id_list(data["train_list"])}
        if data["val_list"]:  # checkpoints are chosen on it: benchmark clips do not belong there either
            lists[f"data.val_list {data['val_list']}"] = read_id_list(data["val_list"])
        refuse_vggss_test_ids(lists, data["vggss_annotations"])
        train_clips, missing = locate_clips(data["root"], train_ids)
        val_clips, val_missing = locate_clips(data["root"], val_ids)
        if d.is_main:
            _log_skipped(missing, "train: missing clips")
            _log_skipped(val_missing, "validation: missing clips")
        tower = build_clip_tower(cfg, d.device)  # needed only here: the targets never change
        self.train_clips, self.train_targets = compute_targets(train_clips, cfg, d, "train", tower)
        self.val_clips, self.val_targets = (compute_targets(val_clips, cfg, d, "validation", tower)
                                            if val_clips else ([], None))
        del tower
        if d.device.type == "cuda":
            torch.cuda.empty_cache()
        self.embed_dim = self.train_targets.shape[1]
        self.batch, self.accum = int(self.t["batch_size"]), int(self.t["accum_steps"])
        self.steps_per_epoch = (len(self.train_clips) // d.world_size // self.batch) // self.accum
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_clips)} usable training clips are too few for batch_size="
                             f"{self.batch} x accum_steps={self.accum} x {d.world_size} processes")
        self.epochs = int(self.t["epochs"])
        self.total_steps = self.epochs * self.steps_per_epoch
        log.info("train: %d clips, validation: %d clips, %d steps per epoch, %d steps in all",
                 len(self.train_clips), len(self.val_clips), self.steps_per_epoch, self.total_steps)

    def _build_model(self):
        t, d = self.t, self.d
        torch.manual_seed(self.seed)  # the same initial weights on every process
        self.encoder = build_encoder(self.cfg, self.embed_dim, d.device)
        self.model = ContrastiveModel(self.encoder, float(t["temperature_init"]), bool(t["learn_temperature"]),
                                      float(t["distill_weight"]), bool(t["gather_negatives"])).to(d.device)
        self.optimizer = build_optimizer(self.model, self.cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, int(t["warmup_steps"]), float(t["min_lr_ratio"])))
        self.ddp = self.model
        if d.enabled:
            # a 1-channel stem's weight grad [C, 1, k, k] has ambiguous strides; DDP warns, harmlessly
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[d.device] if d.device.type == "cuda" else None)
        self.sample_rate = self.encoder.sample_rate
        self.num_samples = int(round(float(self.data["audio_seconds"]) * self.sample_rate))
        self.train_set = ClipAudioDataset(self.train_clips, self.train_targets, self.sample_rate,
                                          self.num_samples, self.seed, random_crop=True)
        self.val_loader = None
        if self.val_clips:
            val_set = ClipAudioDataset(self.val_clips, self.val_targets, self.sample_rate, self.num_samples,
                                       self.seed, random_crop=False)
            batches = [[(0, i) for i in range(s, min(s + self.batch, len(val_set)))]
                       for s in range(0, len(val_set), self.batch)]
            self.val_loader = torch.utils.data.DataLoader(val_set, batch_sampler=batches, collate_fn=collate_clips,
                                                          num_workers=int(self.data["num_workers"]))

    @staticmethod
    def _zero_running() -> dict:
        return {"loss": 0.0, "infonce": 0.0, "distill": 0.0, "steps": 0}

    # --- checkpoints ---------------------------------------------------------------------------
    def save(self, name: str, full: bool = True):
        """Write ``checkpoints/<name>``; ``full`` adds what ``--resume`` needs (call on every process)."""
        extra = {"config": self.cfg,
                 "summary": {"step": self.step, "epoch": self.step / self.steps_per_epoch, "best_r1": self.best_r1}}
        if full:
            # every process contributes its RNG state and running loss sums; rank 0 writes
            per_rank = all_gather_objects(self.d, {"rng": get_rng_state(self.d.device), "running": self.running})
            extra["train_state"] = {
                "step": self.step, "logit_scale": self.model.logit_scale.detach().cpu().clone(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "per_rank": per_rank, "best_r1": self.best_r1, "val_done_epoch": self.val_done_epoch,
                "num_train_clips": len(self.train_clips), "world": self.d.world_size}
        if self.d.is_main:
            save_checkpoint_file(encoder_checkpoint(self.encoder, **extra), self.output_dir / "checkpoints" / name)

    def load(self, path):
        ckpt = load_checkpoint_file(path)
        if "train_state" not in ckpt:
            raise CheckpointError(path, "holds no training state (best.pt and final.pt are encoder-only); "
                                  "resume from checkpoints/last.pt")
        state = ckpt["train_state"]
        self.encoder.load_state_dict(ckpt["state_dict"])
        with torch.no_grad():
            self.model.logit_scale.copy_(state["logit_scale"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_r1, self.val_done_epoch = state["step"], state["best_r1"], state["val_done_epoch"]
        if state["num_train_clips"] != len(self.train_clips) or state["world"] != self.d.world_size:
            log.warning("resuming with %d clips on %d processes, the checkpoint had %d on %d: the run will not "
                        "repeat the uninterrupted one exactly", len(self.train_clips), self.d.world_size,
                        state["num_train_clips"], state["world"])
        mine = state["per_rank"][self.d.rank] if self.d.rank < len(state["per_rank"]) else state["per_rank"][0]
        set_rng_state(mine["rng"], self.d.device)
        self.running = dict(mine["running"])
        log.info("resumed from %s at step %d", path, self.step)

    # --- validation ----------------------------------------------------------------------------
    def end_of_epoch(self, epoch: int):
        """Validate (rank 0) if due, then write last.pt (and best.pt when recall@1 improved)."""
        improved = False
        due = (epoch + 1) % int(self.t["val_every_epochs"]) == 0 or epoch + 1 == self.epochs
        if self.val_loader is not None and due:
            if self.d.is_main:
                m = evaluate(self.encoder, self.val_loader, self.val_targets, self.model.logit_scale.exp().item(),
                             self.d.device, bool(self.t["amp"]))
                log.info("epoch %d step %d: validation R@1 %.4f R@5 %.4f loss %.4f (%d clips)", epoch + 1,
                         self.step, m["r1"], m["r5"], m["loss"], m["clips"])
                self.csv.write(split="val", step=self.step, epoch=epoch + 1, loss=m["loss"], r1=m["r1"],
                               r5=m["r5"], clips=m["clips"])
                for k in ("r1", "r5", "loss"):
                    self.writer.add_scalar(f"val/{k}", m[k], self.step)
                improved = m["r1"] > self.best_r1
                self.best_r1 = max(self.best_r1, m["r1"])
            self.d.barrier()
        self.val_done_epoch = epoch
        if improved:
            self.save("best.pt", full=False)
        self.save("last.pt")

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, resume_from=None) -> dict:
        d, t = self.d, self.t
        seed_everything(self.seed + d.rank)
        if resume_from is not None:
            self.load(resume_from)
        start_epoch = self.step // self.steps_per_epoch
        # a run stopped right at an epoch end, before that epoch's validation, validates first
        pending_val = start_epoch > 0 and self.val_done_epoch < start_epoch - 1
        self.writer = self.csv = None
        if d.is_main:
            from torch.utils.tensorboard import SummaryWriter

            resumed = resume_from is not None
            self.writer = SummaryWriter(str(self.output_dir / "tb"), purge_step=self.step + 1 if resumed else None)
            self.csv = CsvLog(self.output_dir / "log.csv", self.step if resumed else None, pending_val)
        if pending_val:
            self.end_of_epoch(start_epoch - 1)

        max_steps = t["max_steps"]
        stopped = max_steps is not None and self.step >= int(max_steps)
        for epoch in range(start_epoch, self.epochs if not stopped else start_epoch):
            stopped = self.train_epoch(epoch)
            if stopped:
                log.info("stopped at step %d (train.max_steps=%s)", self.step, t["max_steps"])
                break
            self.end_of_epoch(epoch)
        if d.is_main:
            self.writer.close()
        if not stopped:
            self.save("final.pt", full=False)
        d.barrier()
        name = "last.pt" if stopped else "final.pt"
        return {"checkpoint": str(self.output_dir / "checkpoints" / name), "step": self.step, "rank": d.rank,
                "finished": not stopped, "best_r1": self.best_r1, "num_train_clips": len(self.train_clips),
                "num_val_clips": len(self.val_clips)}

    def train_epoch(self, epoch: int) -> bool:
        """Train from the current step to the end of ``epoch``; True if stopped by ``train.max_steps``."""
        from tqdm import tqdm

        d, t, accum = self.d, self.t, self.accum
        first = (self.step - epoch * self.steps_per_epoch) * accum  # micro-batches already done (resume)
        sampler = EpochBatchSampler(len(self.train_set), self.batch, self.steps_per_epoch * accum, self.seed,
                                    epoch, d.rank, d.world_size, start=first)
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=int(self.data["num_workers"]),
            collate_fn=collate_clips, pin_memory=d.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed + epoch))  # keeps loaders off the global RNG
        bar = tqdm(total=self.steps_per_epoch, initial=first // accum, desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=not (d.is_main and t["progress"]), leave=False)
        started = time.time()
        max_steps = t["max_steps"]
        self.ddp.train()
        for micro, item in enumerate(loader, start=first):
            if item is None:  # no readable clip in this micro-batch
                waves = torch.zeros(0, self.num_samples, device=d.device)
                targets = torch.zeros(0, self.embed_dim, device=d.device)
            else:
                waves = item[0].to(d.device, non_blocking=True)
                targets = item[1].to(d.device, non_blocking=True)
            sync = (micro + 1) % accum == 0
            with (self.ddp.no_sync() if d.enabled and not sync else contextlib.nullcontext()):
                with _autocast(d.device, bool(t["amp"])):
                    loss, parts = self.ddp(waves, targets)
                (loss / accum).backward()
            self.running["loss"] += loss.item() / accum
            self.running["infonce"] += parts["infonce"].item() / accum
            self.running["distill"] += parts["distill"].item() / accum
            if not sync:
                continue
            if t["grad_clip_norm"]:
                nn.utils.clip_grad_norm_(self.model.parameters(), float(t["grad_clip_norm"]))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.model.clamp_temperature()
            self.step += 1
            self.running["steps"] += 1
            bar.update(1)
            if self.step % int(t["log_every_steps"]) == 0:
                self._log_train(epoch, bar)
            if max_steps is not None and self.step >= int(max_steps):
                self.save("last.pt")
                bar.close()
                return True
            if self.step % int(t["save_every_steps"]) == 0 and self.step % self.steps_per_epoch:
                self.save("last.pt")  # (the epoch end saves anyway)
        bar.close()
        log.info("epoch %d: %.1f s", epoch + 1, time.time() - started)
        return False

    def _log_train(self, epoch: int, bar):
        r = self.running
        means = torch.tensor([r[k] / r["steps"] for k in ("loss", "infonce", "distill")], dtype=torch.float64)
        if self.d.enabled:
            dist.all_reduce(means)
            means /= self.d.world_size
        self.running = self._zero_running()
        if self.d.is_main:
            row = dict(zip(("loss", "infonce", "distill"), means.tolist()),
                       lr=self.scheduler.get_last_lr()[0], logit_scale=self.model.logit_scale.exp().item())
            self.csv.write(split="train", step=self.step, epoch=epoch + 1, **row)
            for k, v in row.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
