"""train.py's configuration: every key with its default and meaning (``DEFAULTS``), YAML files
and ``--set key=value`` overrides on top of it; unknown keys are errors."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

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
        "mix": {                      # mixing two clips' sounds, targets mixed alike (avlegrad/train/mix.py)
            "prob": 0.0,              # share of each micro-batch's clips whose sound gets another clip's added
            "ratio": [0.25, 0.75],    # the clip's own amplitude weight, uniform in this range; the other's: the rest
            "gate_prob": 0.0,         # each of the two sounds is switched on and off in spans with this probability
            "gate_on_s": [0.25, 0.6],  # the spans' lengths in seconds, uniform: on ...
            "gate_off_s": [0.2, 0.5],  # ... and off
        },
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
        elif isinstance(base.get(key), dict) and not free:  # a section given a value: say which keys it has
            raise ValueError(f"{where}: {dotted} is a section of keys {sorted(base[key])}, not a value; "
                             f"set one of them, e.g. {dotted}.{sorted(base[key])[0]}=...")
        else:
            base[key] = copy.deepcopy(value if free else _checked_type(base.get(key), value, dotted, where))


def _checked_type(default, value, dotted: str, where: str):
    """``value`` for a key whose default is ``default``: a number where a number is expected (YAML
    reads ``1e-3`` as text: such text is converted), a flag where a flag is; null is always allowed."""
    if value is None or default is None or isinstance(default, (dict, list)):
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where}: {dotted} must be {type(default).__name__} like its default {default!r}, "
                         f"got {value!r}")
    return float(value) if isinstance(default, float) else value


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
        raise ValueError(f"`overrides` {item!r}: expected key=value, e.g. train.lr=1e-4")
    key, text = item.split("=", 1)
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = _parse_value(text)
    _merge(cfg, nested, where=f"`overrides` {item}")


def load_config(path=None, overrides=()) -> dict:
    """Defaults, updated by a YAML file and then by ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"config file {path} not found")
        with open(Path(path).expanduser()) as f:
            try:
                user = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                where = getattr(e, "problem_mark", None)
                at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
                raise ValueError(f"{path}: not a valid YAML config{at}: "
                                 f"{getattr(e, 'problem', None) or type(e).__name__}") from None
            except UnicodeDecodeError:
                raise ValueError(f"{path}: not a YAML config (not text)") from None
        if not isinstance(user, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, found {type(user).__name__}")
        _merge(cfg, user, where=str(path))
    for item in overrides or ():
        apply_override(cfg, item)
    return cfg


# keys whose values must be at least this large (a batch of 0 clips, 0 epochs: nothing to train)
LOWER_BOUNDS = {"train.epochs": 1, "train.batch_size": 1, "train.accum_steps": 1, "train.max_steps": 1,
                "train.save_every_steps": 1, "train.log_every_steps": 1, "train.val_every_epochs": 1,
                "train.warmup_steps": 0, "data.frames_per_clip": 1, "data.num_workers": 0,
                "data.targets_batch_size": 1}
POSITIVE = ("data.audio_seconds", "train.lr", "train.temperature_init")


def check_values(cfg: dict) -> None:
    """Raise ValueError (one line, naming the key) for values no run can use."""
    def get(dotted):
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        return node

    for key, least in LOWER_BOUNDS.items():
        value = get(key)
        if value is not None and value < least:
            raise ValueError(f"{key} must be >= {least}, got {value!r}")
    for key in POSITIVE:
        value = get(key)
        if value is not None and not value > 0:
            raise ValueError(f"{key} must be > 0, got {value!r}")
    seed = get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:  # numpy's range
        raise ValueError(f"seed must be in [0, 2**32), got {seed!r}")
    fraction = get("data.val_fraction")
    if fraction is not None and not 0 <= fraction < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {fraction!r}")
    from .mix import check_mix

    check_mix(get("train.mix"))


def plain_config(value):
    """``value`` with paths as strings and tuples as lists: what YAML and weights-only loading accept."""
    if isinstance(value, dict):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
