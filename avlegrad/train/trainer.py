"""The training run: ``run``/``train`` and the ``Trainer`` loop, checkpoints, logs and RNG state."""
from __future__ import annotations

import contextlib
import copy
import csv
import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from ..audio.factory import CheckpointError, encoder_checkpoint, load_checkpoint_file, save_checkpoint_file
from ..data.annotations import read_id_list
from ..distributed import DistInfo, all_gather_objects, init_distributed
from .config import CSV_FIELDS, DEFAULTS, _merge, apply_override, check_values, load_config, plain_config
from .data import (ClipAudioDataset, EpochBatchSampler, _log_skipped, build_clip_tower, collate_clips,
                   compute_targets, locate_clips, refuse_vggss_test_ids, split_ids)
from .mix import check_mix, mix_batch, mix_rng
from .model import (ContrastiveModel, NonFiniteError, _autocast, build_encoder, build_optimizer, evaluate,
                    warmup_cosine)

log = logging.getLogger(__name__)


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
            log.warning("`resume`: no checkpoint at %s, starting a new run", path)
            return cfg, None
        raise FileNotFoundError(f"`resume` {path}: checkpoint not found")
    stored = load_checkpoint_file(path).get("config")
    if stored is None:
        raise CheckpointError(path, "holds no training config: not a train.py checkpoint")
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, stored, where=str(path))
    for item in overrides or ():
        apply_override(cfg, item)
    return cfg, path


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the resumable checkpoint is."""


class _StopRequest:
    """Under torchrun, Ctrl-C (SIGINT, which torchrun passes on to each worker's process group) and
    torchrun's own SIGTERM only set a flag, from the start of ``train`` on: the processes agree on it
    when setup is done, at each micro-batch (with the loss's finiteness, in the same all-reduce) and
    after an epoch's validation, finish that optimizer step and write ``last.pt`` together, which
    needs every process (torchrun kills them 30 s after its signal). A single process keeps Python's
    KeyboardInterrupt. Only the main thread can install handlers: elsewhere, none. Re-entrant."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal = None
        self._old, self._depth = {}, 0

    def _handle(self, signum, frame):
        if self.signal is None:
            self.signal = signal.Signals(signum).name

    def __enter__(self):
        if self._depth == 0 and self.enabled:
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for s, handler in self._old.items():
                signal.signal(s, handler)
            self._old = {}
        return False


class StoppedWithRank0(RuntimeError):
    """Raised on the other processes when rank 0's validation failed (rank 0 says why)."""


@contextlib.contextmanager
def _signals_held(enabled: bool):
    """SIGINT / SIGTERM blocked in this thread while ``enabled`` (under torchrun); one that comes
    meanwhile is delivered (to the stop flag) when the block is lifted. DataLoader worker processes
    started meanwhile inherit the block until :func:`_worker_apart` has moved them out of torchrun's
    reach: torchrun passes its signal on to each worker's whole process group, and torch's own SIGTERM
    handler in a DataLoader worker dies of a signal its parent did not send (a loader error at once)."""
    if not enabled or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_apart(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` under torchrun: the worker leaves the process group torchrun
    signals (its parent stops it, as always, with its own SIGTERM), dropping a signal held since it
    started."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # a held one is dropped when unblocked below
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's terminate() still ends it


def _worker_options(d: DistInfo, num_workers: int) -> dict:
    """DataLoader arguments for the stop under torchrun: :func:`_worker_apart`, and on Linux the
    ``fork`` start method (spawn's and forkserver's helper processes unblock the signals; Python
    3.14 makes forkserver the default)."""
    if not d.enabled or num_workers == 0:
        return {}
    return {"worker_init_fn": _worker_apart, **({"multiprocessing_context": "fork"} if sys.platform == "linux" else {})}


RUN_FILES = ("log.csv", "train.log", "config.yaml")  # with checkpoints/ and tb/: what a run writes


def check_output_dir(output_dir, overwrite: bool = False) -> None:
    """A new run (no ``--resume``) never replaces another run's checkpoints and logs silently:
    refused when ``output_dir`` holds checkpoints or a log with rows, unless ``overwrite``, which
    deletes them first. Unwritable folders and files in the way are one-line errors."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {output_dir} is a file, not a folder")
    checkpoints = sorted((output_dir / "checkpoints").glob("*.pt"))
    log_csv = output_dir / "log.csv"
    has_log = log_csv.is_file() and len(log_csv.read_text().splitlines()) > 1
    if checkpoints or has_log:
        if not overwrite:
            what = ", ".join(p.relative_to(output_dir).as_posix() for p in checkpoints) or "log.csv"
            raise ValueError(f"output_dir {output_dir} holds a run ({what}); continue it with `resume`, replace it "
                             f"with `overwrite`, or set another output_dir")
        log.warning("`overwrite`: deleting the earlier run's checkpoints and logs in %s", output_dir)
        for path in checkpoints + [output_dir / name for name in RUN_FILES]:
            path.unlink(missing_ok=True)
        shutil.rmtree(output_dir / "tb", ignore_errors=True)
    try:
        (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = output_dir / "checkpoints" / f".write-test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output_dir {output_dir}: cannot write there ({e.strerror or e})") from None


def run(config=None, overrides=(), resume=None, overwrite: bool = False) -> dict:
    """Resolve the config (see ``resolve_run``) and train. Without ``resume``, an ``output_dir``
    that holds another run is refused unless ``overwrite`` (see ``check_output_dir``)."""
    cfg, checkpoint = resolve_run(config, overrides, resume)
    check_values(cfg)
    if resume is None:
        check_output_dir(cfg["output_dir"], overwrite)
    return train(cfg, resume_from=checkpoint)


def train(cfg: dict, resume_from=None) -> dict:
    """Train an audio encoder as ``cfg`` says; returns a summary (checkpoint path, step, metrics)."""
    cfg = plain_config(cfg)
    check_values(cfg)
    d = init_distributed(cfg["device"], cfg["dist_backend"])
    # under torchrun a stop signal only sets a flag from here on (setup included): a process dying
    # of it while the others wait in a collective would give them a transport error
    with _StopRequest(d.enabled) as stop:
        return _train(cfg, d, resume_from, stop)


def _train(cfg: dict, d: DistInfo, resume_from, stop: "_StopRequest") -> dict:
    output_dir = Path(cfg["output_dir"])
    if d.is_main:
        try:
            (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"output_dir {output_dir}: cannot write there ({e.strerror or e})") from None
    d.barrier()
    logger = logging.getLogger("avlegrad")
    level = logger.level
    handlers = _setup_logging(output_dir, d)
    try:
        return Trainer(cfg, d, output_dir, stop_request=stop).fit(resume_from)
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(level)
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


class Trainer:
    """One training run: data and targets, model, optimizer, the loop, checkpoints and logs."""

    def __init__(self, cfg: dict, d: DistInfo, output_dir: Path, stop_request: _StopRequest | None = None):
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
        self.stop_request, self.stopping = stop_request or _StopRequest(d.enabled), False  # Ctrl-C under torchrun

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
            raise ValueError(f"{len(self.train_clips)} usable training clips (of {len(train_ids)} listed in "
                             f"{data['train_list']}, looked for under data.root {data['root']}) are too few for "
                             f"batch_size={self.batch} x accum_steps={self.accum} x {d.world_size} processes")
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
        self.mix = check_mix(t["mix"])
        self.num_samples = int(round(float(self.data["audio_seconds"]) * self.sample_rate))
        min_samples = self.encoder.min_samples  # clips shorter than the encoder's minimum are skipped
        self.train_set = ClipAudioDataset(self.train_clips, self.train_targets, self.sample_rate,
                                          self.num_samples, self.seed, random_crop=True, min_samples=min_samples)
        self.val_loader = None
        if self.val_clips:
            val_set = ClipAudioDataset(self.val_clips, self.val_targets, self.sample_rate, self.num_samples,
                                       self.seed, random_crop=False, min_samples=min_samples)
            batches = [[(0, i) for i in range(s, min(s + self.batch, len(val_set)))]
                       for s in range(0, len(val_set), self.batch)]
            workers = int(self.data["num_workers"])
            self.val_loader = torch.utils.data.DataLoader(val_set, batch_sampler=batches, collate_fn=collate_clips,
                                                          num_workers=workers, **_worker_options(d, workers))

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
            failure = None
            if self.d.is_main:
                try:
                    with _signals_held(self.d.enabled):  # its workers start inside; the stop flag is read after
                        m = evaluate(self.encoder, self.val_loader, self.val_targets,
                                     self.model.logit_scale.exp().item(), self.d.device, bool(self.t["amp"]))
                except Exception as e:  # raised below on every process, not here alone (the others
                    failure = e         # would wait at the barrier until the process group timed out)
            self._stop_together(failure)
            if self.d.is_main:
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

    def _any_process(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process (one all-reduce under torch.distributed: every process
        calls it at the same point)."""
        if not self.d.enabled:
            return flag
        held = torch.tensor([float(flag)], device=self.d.device)
        dist.all_reduce(held, op=dist.ReduceOp.MAX)
        return bool(held.item())

    def _stop_together(self, failure: Exception | None) -> None:
        """Raise rank 0's validation ``failure`` on every process at once under torch.distributed (the
        others raise :class:`StoppedWithRank0`, which the command line ends quietly: rank 0 says why)."""
        if self._any_process(failure is not None) and failure is None:
            raise StoppedWithRank0("stopped with rank 0, whose validation failed")
        if failure is not None:
            raise failure

    def _interrupt_agreed(self) -> bool:
        """Under torchrun, whether any process got its stop signal (every process calls it)."""
        return self._any_process(self.stop_request.signal is not None)

    def _interrupted(self) -> TrainingInterrupted:
        return TrainingInterrupted(f"interrupted at step {self.step}: saved "
                                   f"{self.output_dir / 'checkpoints' / 'last.pt'}; continue with `resume`")

    # --- the loop ------------------------------------------------------------------------------
    def fit(self, resume_from=None) -> dict:
        with self.stop_request:  # (already entered by train(): then nothing more)
            return self._fit(resume_from)

    def _fit(self, resume_from) -> dict:
        d, t = self.d, self.t
        if self._interrupt_agreed():  # a signal during the setup (data, targets, model)
            raise TrainingInterrupted("interrupted before the first training step: no checkpoint was written; "
                                      "run the same command again")
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
        try:
            for epoch in range(start_epoch, self.epochs if not stopped else start_epoch):
                stopped = self.train_epoch(epoch)
                if stopped:
                    log.info("stopped at step %d (train.max_steps=%s)", self.step, t["max_steps"])
                    break
                self.end_of_epoch(epoch)  # writes last.pt
                # a signal during the validation: stop here, unless only final.pt is left to write
                if epoch + 1 < self.epochs and self._interrupt_agreed():
                    raise self._interrupted()
        except TrainingInterrupted:  # stopped together under torchrun: last.pt is written
            raise
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._save_on_interrupt()) from None
        except NonFiniteError as e:
            last = self.output_dir / "checkpoints" / "last.pt"
            kept = (f"the last good checkpoint is kept: {last} (continue from it with `resume` after fixing the "
                    f"cause, e.g. a lower train.lr)") if last.is_file() else "no checkpoint had been written yet"
            raise NonFiniteError(f"{e}; training stopped, {kept}") from None
        finally:
            if d.is_main and self.writer is not None:
                self.writer.flush()
        if d.is_main:
            self.writer.close()
        if not stopped:
            self.save("final.pt", full=False)
        d.barrier()
        name = "last.pt" if stopped else "final.pt"
        return {"checkpoint": str(self.output_dir / "checkpoints" / name), "step": self.step, "rank": d.rank,
                "finished": not stopped, "best_r1": self.best_r1, "num_train_clips": len(self.train_clips),
                "num_val_clips": len(self.val_clips)}

    def _save_on_interrupt(self) -> str:
        """Ctrl-C: write ``last.pt`` at the last completed optimizer step (the weights, optimizer and
        schedule agree there; micro-batches accumulated since are dropped) so ``--resume`` continues."""
        if self.d.enabled:  # the signals were not caught (train() not run from the main thread): the
            # others may not reach the collective that saving needs
            return (f"interrupted at step {self.step}, signals not caught outside the main thread: no checkpoint "
                    f"is written; `resume` continues from the last saved one")
        if self.step == 0:
            return "interrupted before the first optimizer step; nothing to save"
        self.optimizer.zero_grad(set_to_none=True)
        self.save("last.pt")
        return (f"interrupted at step {self.step}: saved {self.output_dir / 'checkpoints' / 'last.pt'}; "
                f"continue with `resume`")

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
            generator=torch.Generator().manual_seed(self.seed + epoch),  # keeps loaders off the global RNG
            **_worker_options(d, int(self.data["num_workers"])))
        bar = tqdm(total=self.steps_per_epoch, initial=first // accum, desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=not (d.is_main and t["progress"]), leave=False)
        started = time.time()
        max_steps = t["max_steps"]
        self.ddp.train()
        with _signals_held(d.enabled):  # while the workers start
            batches = iter(loader)
        for micro, item in enumerate(batches, start=first):
            if item is None:  # no readable clip in this micro-batch
                waves = torch.zeros(0, self.num_samples, device=d.device)
                targets = torch.zeros(0, self.embed_dim, device=d.device)
            else:
                waves = item[0].to(d.device, non_blocking=True)
                targets = item[1].to(d.device, non_blocking=True)
            mix_weights = None
            if self.mix["prob"] > 0:  # drawn from (seed, epoch, micro-batch, rank): a resumed run mixes alike
                waves, mix_weights = mix_batch(waves, self.mix, self.sample_rate,
                                               mix_rng(self.seed, epoch, micro, d.rank))
            sync = (micro + 1) % accum == 0
            with (self.ddp.no_sync() if d.enabled and not sync else contextlib.nullcontext()):
                with _autocast(d.device, bool(t["amp"])):
                    loss, parts = (self.ddp(waves, targets) if mix_weights is None  # unmixed: the plain call
                                   else self.ddp(waves, targets, mix_weights))
                finite = torch.isfinite(loss.detach()).float()
                if d.enabled:  # every process stops together, whichever saw it (or got Ctrl-C)
                    go_on = torch.tensor(float(self.stop_request.signal is None), device=finite.device)
                    agreed = torch.stack([finite, go_on])
                    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
                    finite, self.stopping = agreed[0], self.stopping or not agreed[1].item()
                if not finite.item():  # before the backward and the step: the weights are still good
                    raise NonFiniteError(f"step {self.step + 1} (epoch {epoch + 1}): the training loss is "
                                         f"{loss.item()} (on this or another process)")
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
            if self.stopping:  # every process is here, after the same step
                self.save("last.pt")
                bar.close()
                d.barrier()
                raise self._interrupted()
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
