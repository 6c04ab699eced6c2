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

Modules: :mod:`.config` (every key, its default and meaning), :mod:`.data` (clip lists, cached
CLIP targets, audio batches), :mod:`.model` (encoder + temperature, InfoNCE, optimizer, schedule,
retrieval metrics), :mod:`.trainer` (the run).
"""
from .config import DEFAULTS, apply_override, load_config
from .data import EpochBatchSampler, compute_targets, load_clip_frames, locate_clips, split_ids
from .model import ContrastiveModel, build_encoder, info_nce
from .trainer import resolve_run, run, train

__all__ = ["DEFAULTS", "ContrastiveModel", "EpochBatchSampler", "apply_override", "build_encoder",
           "compute_targets", "info_nce", "load_clip_frames", "load_config", "locate_clips", "resolve_run",
           "run", "split_ids", "train"]
