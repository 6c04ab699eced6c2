"""train.py's data: the clip lists, the CLIP targets (the frozen image tower's embeddings of each
clip's frames, computed once and cached) and the audio, whose order and crops derive from
``(seed, epoch, clip index)`` only."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio.base import crop_or_pad
from ..data.media import waveform_problem
from ..audio.clip_space import clip_embed_dim, tower_fingerprint
from ..models import create_clip_tower
from ..audio.factory import CheckpointError, load_checkpoint_file, save_checkpoint_file
from ..data.annotations import AnnotationNotFoundError, find_annotation, read_id_list, read_vggss_json
from ..data.media import MediaError, load_audio, load_frame, video_info
from ..data.record import ClipFiles, locate_clip
from ..distributed import DistInfo, all_gather_objects
from ..download import cache_root

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# clip lists
# --------------------------------------------------------------------------------------------
def refuse_vggss_test_ids(ids_by_list: dict[str, list[str]], annotations) -> None:
    """Raise ValueError if a training/validation list holds VGG-SS test clips; warn if unchecked."""
    if annotations is not None and not Path(annotations).expanduser().is_file():
        raise FileNotFoundError(f"data.vggss_annotations {annotations} not found")
    try:
        path = find_annotation("vggss.json", "vggss", annotations=annotations, named=True)
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
                 seed: int, random_crop: bool, min_samples: int = 1):
        self.clips, self.targets, self.min_samples = clips, targets, int(min_samples)
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
            problem = str(e)
        else:  # as in evaluation: too short for the encoder, NaN/inf or silent audio is never trained on
            problem = waveform_problem(audio, self.min_samples, self.sample_rate)
        if problem:
            if i not in self._warned:
                self._warned.add(i)
                log.warning("skipped clip %s: %s", files.clip_id, problem)
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
