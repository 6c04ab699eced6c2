"""train.py's model and objective: the audio encoder with a learnable temperature, symmetric
InfoNCE (negatives gathered over processes under torchrun) plus an optional cosine distillation
term, AdamW with warm-up and cosine decay, and held-out retrieval metrics."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..audio.factory import TOWER_KWARGS, create_audio_encoder, training_contract
from ..distributed import all_gather_rows


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


def soft_info_nce(audio: torch.Tensor, image: torch.Tensor, weights: torch.Tensor, logit_scale: torch.Tensor,
                  all_audio: torch.Tensor | None = None, all_image: torch.Tensor | None = None,
                  offset: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE with soft labels, for mixed sounds (``train.mix``): audio row ``i`` holds
    the pictures of these rows with ``weights[i]`` (``[b, b]``, rows sum to 1), so its audio->image
    cross-entropy has those weights as its target distribution; image ``j``'s image->audio target
    is column ``j`` of ``weights`` normalised to sum 1. Mean over these rows; ``all_*``/``offset`` as
    for :func:`info_nce`, which this equals when ``weights`` is the identity."""
    all_audio = audio if all_audio is None else all_audio
    all_image = image if all_image is None else all_image
    b = len(audio)
    rows = weights.new_zeros(b, len(all_image))
    rows[:, offset:offset + b] = weights
    cols = weights.t() / weights.sum(0)[:, None]
    columns = weights.new_zeros(b, len(all_audio))
    columns[:, offset:offset + b] = cols
    audio_to_image = -(rows * F.log_softmax(logit_scale * audio @ all_image.t(), dim=1)).sum(1).mean()
    image_to_audio = -(columns * F.log_softmax(logit_scale * image @ all_audio.t(), dim=1)).sum(1).mean()
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

    def forward(self, waveforms, targets, mix_weights=None):
        """``mix_weights`` ``[b, b]``: how much of each row's picture each (mixed) sound holds
        (:func:`avlegrad.train.mix.mix_batch`); None: every sound is its own clip's."""
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
        if mix_weights is None:
            contrastive = info_nce(audio, image, self.logit_scale.exp(), all_audio, all_image, offset)
            distill = (1 - (audio * image).sum(-1)).mean()
        else:  # a mixed sound's targets: its pictures' targets in the same proportions
            w = mix_weights.to(image)
            contrastive = soft_info_nce(audio, image, w, self.logit_scale.exp(), all_audio, all_image, offset)
            distill = (1 - (audio * F.normalize(w @ image, dim=-1)).sum(-1)).mean()
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


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite numbers (a loss, an embedding): the run must stop."""


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
    if not torch.isfinite(audio).all():  # NaN never ranks below its own image: recall would read 1.0
        raise NonFiniteError(f"{int((~torch.isfinite(audio)).any(1).sum())} of {len(audio)} validation "
                             f"embeddings are NaN or infinite: the encoder's weights have diverged")
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
    contract = training_contract(name)  # what the registry declares train.py may do with it
    if not contract.trainable:
        raise ValueError(f"audio encoder {name!r} cannot be trained: {contract.reason}")
    for key in TOWER_KWARGS:
        if key in kwargs:
            raise ValueError(f"encoder.{key} is set from the clip section; remove it from encoder")
    if contract.embed_dim is not None:  # a fixed width (Wav2CLIP: 512): the tower must match it
        if contract.embed_dim != embed_dim:
            raise ValueError(f"audio encoder {name!r} embeds into {contract.embed_dim} dimensions (fixed), but the "
                             f"CLIP tower {cfg['clip']['model']} embeds into {embed_dim}: pick a tower of that width")
        if kwargs.pop("embed_dim", embed_dim) != embed_dim:
            raise ValueError(f"audio encoder {name!r} has a fixed embed_dim of {embed_dim}; remove encoder.embed_dim")
    elif kwargs.get("embed_dim", embed_dim) != embed_dim:
        raise ValueError(f"encoder.embed_dim={kwargs['embed_dim']} but the CLIP tower {cfg['clip']['model']} "
                         f"embeds into {embed_dim} dimensions")
    else:
        kwargs["embed_dim"] = embed_dim
    clip = cfg["clip"]
    tower = dict(clip_model=clip["model"], clip_pretrained=clip["pretrained"], clip_model_cfg=clip["model_cfg"],
                 clip_init_seed=clip["init_seed"])
    kwargs.update({k: v for k, v in tower.items() if k in contract.tower_kwargs})
    return create_audio_encoder(name, checkpoint=checkpoint, device=device, **kwargs).train()
