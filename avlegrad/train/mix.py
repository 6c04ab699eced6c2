"""Sound mixing for train.py (``train.mix``): mixup of two clips' sounds with soft targets.

Each chosen clip's sound becomes ``lam * a + (1 - lam) * b``, ``b`` the sound of another clip
of the same micro-batch and ``lam`` uniform in ``train.mix.ratio``; each of the two sources may
first be switched on and off in spans (``gate_prob``, spans of ``gate_on_s`` / ``gate_off_s``
seconds, :func:`avlegrad.data.world.intermittent_gate`). The clip's target is then the mix of the
two pictures' targets with the same weights: InfoNCE with soft labels and the distillation
target ``normalize(lam * t_a + (1 - lam) * t_b)``. Mixup with mixed targets is how PANNs (Kong et
al. 2020) and AST (Gong et al. 2021) train; here it teaches the encoder that a clip may hold two
sources and that a source need not sound all the time, which is what explaining *when* a
picture's sound is heard asks of it (docs/world.md, "Training with mixed sounds").

The draws come from ``numpy.random.default_rng([seed, epoch, micro-batch, rank, MIX_STREAM])``:
a resumed run mixes exactly as the uninterrupted one.
"""
from __future__ import annotations

import numpy as np
import torch

MIX_STREAM = 6607  # keeps the mixing draws apart from every other stream seeded from the run's seed
MIN_SPAN_S = 0.01  # gate spans shorter than this switch a sound at audio rate (and round to 0 samples)


def _span(value, key: str, low: float, high: float | None, inclusive: bool = False) -> tuple[float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if ok:
        a, b = float(value[0]), float(value[1])
        ok = (low <= a if inclusive else low < a) and a <= b and (high is None or b <= high)
    if not ok:
        bound = (f"in ({low}, {high}]" if high is not None else
                 f"at least {low} s" if inclusive else f"above {low}")
        raise ValueError(f"train.mix.{key} must be [low, high] with low <= high, both {bound}; got {value!r}")
    return a, b


def check_mix(mix: dict) -> dict:
    """``train.mix`` validated: ``{prob, ratio, gate_prob, gate_on_s, gate_off_s}`` with floats;
    ValueError naming the key otherwise."""
    if not isinstance(mix, dict):
        raise ValueError(f"train.mix must be a mapping of prob, ratio, gate_prob, gate_on_s, gate_off_s; got {mix!r}")
    out = {}
    for key in ("prob", "gate_prob"):
        v = mix[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"train.mix.{key} must be a probability in [0, 1], got {v!r}")
        out[key] = float(v)
    out["ratio"] = _span(mix["ratio"], "ratio", 0.0, 1.0)
    out["gate_on_s"] = _span(mix["gate_on_s"], "gate_on_s", MIN_SPAN_S, None, inclusive=True)
    out["gate_off_s"] = _span(mix["gate_off_s"], "gate_off_s", MIN_SPAN_S, None, inclusive=True)
    return out


def mix_batch(waveforms: torch.Tensor, mix: dict, sample_rate: int, rng: np.random.Generator):
    """Mix a micro-batch's sounds: ``waveforms`` ``[B, T]`` -> ``(mixed [B, T], weights [B, B])``.

    ``weights[i]`` says how much of each clip's picture clip ``i``'s sound now holds: ``lam_i`` at
    ``i`` and ``1 - lam_i`` at its partner for a mixed clip, one-hot for the others (rows sum to 1).
    ``mix``: :func:`check_mix`'s output; ``rng``: all the draws. A batch of one is left as it is.
    """
    b, n = waveforms.shape
    weights = torch.eye(b, dtype=torch.float32, device=waveforms.device)
    if b < 2 or mix["prob"] <= 0:
        return waveforms, weights
    from ..data.world import intermittent_gate

    chosen = np.flatnonzero(rng.random(b) < mix["prob"])
    partners = (chosen + rng.integers(1, b, size=len(chosen))) % b  # never the clip itself
    lams = rng.uniform(*mix["ratio"], size=len(chosen))

    def gated(k: int) -> torch.Tensor:
        # only the gate is drawn on the host; the sounds stay where they are (the GPU in training)
        if rng.random() < mix["gate_prob"]:
            gate = intermittent_gate(n, sample_rate, rng, mix["gate_on_s"], mix["gate_off_s"])
            return waveforms[k] * torch.from_numpy(gate).to(waveforms)
        return waveforms[k]

    out = waveforms.clone()
    for i, p, lam in zip(chosen.tolist(), partners.tolist(), lams.tolist()):
        out[i] = lam * gated(i) + (1 - lam) * gated(p)
        weights[i, i], weights[i, p] = lam, 1 - lam
    return out, weights


def mix_rng(seed: int, epoch: int, micro: int, rank: int) -> np.random.Generator:
    """The draws of one micro-batch (see the module docstring)."""
    return np.random.default_rng([int(seed), int(epoch), int(micro), int(rank), MIX_STREAM])
