"""train.py end to end on clips written here: learning, kill-and-resume, DDP on CPU, refusals."""
import csv
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avlegrad.audio import create_audio_encoder
from avlegrad.models import create_clip_tower
from avlegrad.data.media import write_audio, write_video
from avlegrad.distributed import DistInfo
from avlegrad.train import (EpochBatchSampler, apply_override, compute_targets, load_clip_frames,
                               load_config, locate_clips, split_ids)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny_cpu.yaml"
# each class: a frame colour and a tone pitch, so audio -> image retrieval is learnable
COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230), (235, 215, 40), (210, 50, 210), (40, 210, 210),
           (250, 140, 20), (120, 120, 120)]
PITCHES = [220, 330, 500, 750, 1100, 1650, 2500, 3700]


def _load_train_script():
    spec = importlib.util.spec_from_file_location("train_script", REPO / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_script = _load_train_script()


def make_clips(root: Path, per_class: int = 5, seconds: float = 1.5, sr: int = 16000) -> list[str]:
    """Clips in both layouts (prepared jpg + wav for even j, raw mp4 for odd j), plus broken ones."""
    rng = np.random.default_rng(0)
    ids = []
    (root / "frames").mkdir(parents=True)
    for k, (colour, pitch) in enumerate(zip(COLOURS, PITCHES)):
        for j in range(per_class):
            clip_id = f"c{k}_{j:02d}"
            frame = np.clip(np.array(colour)[None, None] + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
            t = np.arange(int(seconds * sr)) / sr
            audio = 0.4 * np.sin(2 * np.pi * pitch * rng.uniform(0.97, 1.03) * t) + rng.normal(0, 0.01, len(t))
            if j % 2:
                write_video(root / "videos" / f"{clip_id}.mp4", [frame] * 4, 8, audio=audio, sample_rate=sr)
            else:
                Image.fromarray(frame).save(root / "frames" / f"{clip_id}.jpg")
                write_audio(root / "audio" / f"{clip_id}.wav", audio, sr)
            ids.append(clip_id)
    (root / "videos" / "broken_video.mp4").write_bytes(b"not a video" * 100)  # frames fail: skipped early
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "frames" / "broken_audio.jpg")
    (root / "audio" / "broken_audio.wav").write_bytes(b"RIFF garbage")  # audio fails: skipped in the loader
    return ids + ["broken_video", "broken_audio", "missing_clip"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    ids = make_clips(root)
    val = [f"c{k}_{3 + k % 2:02d}" for k in range(len(COLOURS))]  # one clip per class, both layouts
    (root / "train.txt").write_text("# clip ids\n" + "\n".join(i for i in ids if i not in val) + "\n")
    (root / "val.txt").write_text("\n".join(val) + "\n")
    return root


@pytest.fixture(autouse=True)
def one_thread():
    # the CPU is shared: one intra-op thread avoids oversubscription (and keeps runs comparable)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))  # never the user's ~/.cache
    return tmp_path / "cache"


def args_for(clips, out, *extra):
    return ["--config", str(TINY), "--set", f"data.root={clips}", "--set", f"data.train_list={clips / 'train.txt'}",
            "--set", f"data.val_list={clips / 'val.txt'}", "--set", f"output_dir={out}",
            "--set", f"data.targets_cache={out.parent / 'targets'}", *extra]


def read_rows(out: Path, split: str) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row["split"] == split]


def test_training_learns_and_resumes_bit_for_bit(clips, tmp_path):
    # --- an uninterrupted run ---------------------------------------------------------------
    full = tmp_path / "full"
    summary = train_script.main(args_for(clips, full))
    steps = summary["step"]
    # 35 listed: missing_clip has no files, broken_video no frame; broken_audio is dropped by the loader
    assert summary["num_train_clips"] == 33 and summary["num_val_clips"] == 8
    assert summary["finished"] and steps == 6 * (33 // 8)  # 6 epochs of batches of 8
    losses = [float(r["loss"]) for r in read_rows(full, "train")]
    assert len(losses) == steps and np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])
    val = read_rows(full, "val")
    assert int(val[-1]["clips"]) == 8 and float(val[-1]["r1"]) >= 0.5  # chance: 1/8
    log_text = (full / "train.log").read_text()
    for reason in ("skipped missing_clip", "skipped broken_video", "skipped clip broken_audio",
                   "cannot check that no VGG-SS test clip"):
        assert reason in log_text
    assert {p.name for p in (full / "checkpoints").iterdir()} == {"last.pt", "best.pt", "final.pt"}

    # --- the final checkpoint is the trained encoder, with what rebuilds its tower -------------
    final = full / "checkpoints" / "final.pt"
    encoder = create_audio_encoder(str(final))
    same = create_audio_encoder("timm", checkpoint=final)
    assert not encoder.training and encoder.clip_model == "tiny-random-vit" and encoder.clip_pretrained is None
    x = torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.equal(encoder(x), same(x))
    cfg = load_config(TINY, [f"data.root={clips}", f"data.train_list={clips / 'train.txt'}",
                             f"data.val_list={clips / 'val.txt'}"])
    val_clips, _ = locate_clips(clips, split_ids(cfg)[1])
    tower, preprocess = create_clip_tower(**encoder.clip_tower_spec)
    encoder.check_pair("tiny-random-vit", None)
    with torch.no_grad():
        images = tower.encode_image(torch.stack([preprocess(Image.fromarray(load_clip_frames(c, 1)[0]))
                                                 for c in val_clips]), normalize=True)
    sounds = encoder.embed_files([c.audio or c.video for c in val_clips], duration=1.0)
    r1 = ((sounds @ images.t()).argmax(1) == torch.arange(len(val_clips))).float().mean().item()
    assert r1 >= 0.5

    # --- stopped after 4 steps, ran on to 5 and "killed" there, resumed from the step-4 save ---
    part = tmp_path / "part"
    assert train_script.main(args_for(clips, part, "--set", "train.max_steps=4"))["step"] == 4
    saved_at_4 = tmp_path / "at4.pt"
    shutil.copy(part / "checkpoints" / "last.pt", saved_at_4)
    train_script.main(args_for(clips, part, "--resume", "--set", "train.max_steps=5"))
    assert len(read_rows(part, "train")) == 5
    shutil.copy(saved_at_4, part / "checkpoints" / "last.pt")  # the kill: work after step 4 is lost
    summary = train_script.main(["--config", str(TINY), "--set", f"output_dir={part}", "--resume",
                                 "--set", "train.max_steps=null"])
    assert summary["finished"] and summary["step"] == steps
    assert "read from cache" in (part / "train.log").read_text()  # targets computed once
    assert (full / "log.csv").read_text() == (part / "log.csv").read_text()
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert torch.equal(a["train_state"]["logit_scale"], b["train_state"]["logit_scale"])
    opt_a, opt_b = a["train_state"]["optimizer"]["state"], b["train_state"]["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_targets_cache_is_keyed_by_frame_settings(clips, tmp_path):
    cfg = load_config(TINY, [f"data.root={clips}", f"data.train_list={clips / 'train.txt'}",
                             f"data.targets_cache={tmp_path / 't'}"])
    found, _ = locate_clips(clips, ["c0_00", "c0_01", "c1_01", "broken_video"])
    kept, one = compute_targets(found, cfg, DistInfo(), "train")
    assert [c.clip_id for c in kept] == ["c0_00", "c0_01", "c1_01"] and one.shape == (3, 32)
    assert torch.allclose(one.norm(dim=1), torch.ones(3))
    files = sorted((tmp_path / "t").iterdir())
    stamp = files[0].stat().st_mtime_ns
    _, again = compute_targets(found, cfg, DistInfo(), "train")
    assert torch.equal(again, one) and files[0].stat().st_mtime_ns == stamp
    apply_override(cfg, "data.frames_per_clip=3")
    _, three = compute_targets(found, cfg, DistInfo(), "train")
    assert len(list((tmp_path / "t").iterdir())) == 2  # a new key, a new file
    assert torch.allclose(three[0], one[0])  # a prepared clip has its one frame; these videos are static



def test_targets_cache_sees_a_picture_replaced_under_the_same_id(clips, tmp_path):
    root = tmp_path / "copy"
    for sub, suffix in (("frames", "jpg"), ("audio", "wav")):
        (root / sub).mkdir(parents=True)
        for clip_id in ("c0_00", "c1_00"):
            shutil.copy(clips / sub / f"{clip_id}.{suffix}", root / sub)
    cfg = load_config(TINY, [f"data.root={root}", f"data.targets_cache={tmp_path / 't'}"])
    found, _ = locate_clips(root, ["c0_00", "c1_00"])
    _, before = compute_targets(found, cfg, DistInfo(), "train")
    assert not torch.allclose(before[0], before[1])
    time.sleep(0.01)  # a regenerated clip: same id, other picture
    shutil.copy(root / "frames" / "c1_00.jpg", root / "frames" / "c0_00.jpg")
    _, after = compute_targets(found, cfg, DistInfo(), "train")
    assert len(list((tmp_path / "t").iterdir())) == 2
    assert torch.allclose(after[0], before[1]) and torch.equal(after[1], before[1])

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(clips, tmp_path, cache_home):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVLEGRAD_CACHE": str(cache_home)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(REPO / "train.py"), *args_for(clips, out, "--set", "train.batch_size=4", "--set", "train.epochs=2")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": checkpoint ") == 1  # only rank 0 reports
    assert "[rank 1]" not in (out / "train.log").read_text()  # rank 0 writes the logs
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["world"] == 2 and len(ckpt["train_state"]["per_rank"]) == 2
    encoder = create_audio_encoder(str(out / "checkpoints" / "final.pt"))
    assert encoder.embed_dim == 32 and not encoder.training
    steps_per_epoch = 33 // 2 // 4  # usable train clips, 2 processes, batches of 4
    assert ckpt["train_state"]["step"] == 2 * steps_per_epoch == len(read_rows(out, "train"))

    # InfoNCE's negatives come from both processes: the same as one process with batches of 8
    # (process r takes every 2nd clip of the epoch's order, so the global batches are the same clips)
    one = tmp_path / "one"
    train_script.main(args_for(clips, one, "--set", "train.batch_size=8", "--set", "train.epochs=2"))
    two_losses = [float(r["loss"]) for r in read_rows(out, "train")]
    one_losses = [float(r["loss"]) for r in read_rows(one, "train")]
    assert len(one_losses) == len(two_losses)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-4)
    final_two = torch.load(out / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    final_one = torch.load(one / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    for name, value in final_one.items():
        torch.testing.assert_close(final_two[name], value, rtol=1e-3, atol=1e-4, msg=name)



class _LinearAudio(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 4)

    def forward(self, waves):
        return torch.nn.functional.normalize(self.proj(waves), dim=-1)


def _gathered_gradients(rank, world, port, rows, out):
    import torch.distributed as dist
    from avlegrad.train import ContrastiveModel

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = ContrastiveModel(_LinearAudio(), 0.1, True, distill_weight=0.5)
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # averages the gradients over processes
    g = torch.Generator().manual_seed(1)
    waves, targets = torch.randn(sum(rows), 6, generator=g), torch.randn(sum(rows), 4, generator=g)
    targets = torch.nn.functional.normalize(targets, dim=-1)
    mine = slice(sum(rows[:rank]), sum(rows[:rank + 1]))
    for _ in range(2):  # a second step: DDP and the gathers must still be in step
        model.zero_grad()
        loss, _ = ddp(waves[mine], targets[mine])
        loss.backward()
    grads = [p.grad for p in model.parameters()]
    if rank == 0:
        torch.save(grads, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("rows", [(3, 2), (3, 0)])
def test_gathered_negatives_give_the_whole_batch_gradient(tmp_path, rows):
    """Unequal batches, one of them empty (every clip unreadable): no hang, and DDP's mean of the
    gradients is the gradient of one process's loss over the whole batch."""
    from avlegrad.train import ContrastiveModel

    out = tmp_path / "grads.pt"
    procs = torch.multiprocessing.spawn(_gathered_gradients, args=(2, _free_port(), rows, out), nprocs=2, join=False)
    deadline = time.time() + 120
    while not procs.join(timeout=1):
        if time.time() > deadline:  # a deadlock in the gathers: fail rather than hang CI
            for proc in procs.processes:
                proc.kill()
            pytest.fail(f"processes with batches {rows} did not finish: the gathers deadlocked")
    torch.manual_seed(0)
    model = ContrastiveModel(_LinearAudio(), 0.1, True, distill_weight=0.5)
    g = torch.Generator().manual_seed(1)
    waves, targets = torch.randn(sum(rows), 6, generator=g), torch.randn(sum(rows), 4, generator=g)
    loss, _ = model(waves, torch.nn.functional.normalize(targets, dim=-1))
    loss.backward()
    for gathered, whole in zip(torch.load(out), [p.grad for p in model.parameters()]):
        torch.testing.assert_close(gathered, whole, rtol=1e-5, atol=1e-6)

def test_vggss_test_ids_are_refused(clips, tmp_path, cache_home):
    entries = [{"file": name, "class": "x", "bbox": [[0, 0, 1, 1]]} for name in ("c3_01", "c5_02", "not_ours")]
    default = cache_home / "annotations" / "vggss" / "vggss.json"  # where download_annotations.py puts it
    default.parent.mkdir(parents=True)
    default.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"2 of \d+ clips are VGG-SS test clips.*c3_01"):
        train_script.main(args_for(clips, tmp_path / "a"))
    default.unlink()
    explicit = tmp_path / "vggss.json"
    explicit.write_text(json.dumps(entries[:1]))
    with pytest.raises(ValueError, match="1 of"):
        train_script.main(args_for(clips, tmp_path / "b", "--set", f"data.vggss_annotations={explicit}"))
    with pytest.raises(FileNotFoundError, match="vggss_annotations"):
        train_script.main(args_for(clips, tmp_path / "c", "--set", f"data.vggss_annotations={tmp_path / 'no.json'}"))


def test_config_errors_and_overrides(tmp_path):
    cfg = load_config(TINY, ["train.lr=1e-4", "encoder.frontend.n_mels=16", "data.val_list=null"])
    assert cfg["train"]["lr"] == 1e-4 and cfg["encoder"]["frontend"] == {"n_fft": 512, "hop_length": 160, "n_mels": 16}
    assert cfg["encoder"]["backbone"] == "test_convnext"  # a nested override keeps its siblings
    cfg = load_config(TINY, ["encoder.backbone_kwargs.drop_path_rate=0.1", "clip.model_cfg.vision_cfg.width=128"])
    assert cfg["encoder"]["backbone_kwargs"] == {"drop_path_rate": 0.1}
    assert cfg["clip"]["model_cfg"]["vision_cfg"] == {"image_size": 32, "patch_size": 8, "width": 128, "layers": 2,
                                                      "head_width": 16}
    assert cfg["data"]["val_list"] is None and cfg["clip"]["model_cfg"]["embed_dim"] == 32
    with pytest.raises(ValueError, match="unknown config key 'train.lrr'"):
        load_config(TINY, ["train.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  roots: x\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'data.roots'"):
        load_config(bad)
    with pytest.raises(ValueError, match="key=value"):
        load_config(TINY, ["train.lr"])
    with pytest.raises(ValueError, match="train.epochs must be int like its default 6, got 'abc'"):
        load_config(TINY, ["train.epochs=abc"])
    with pytest.raises(ValueError, match="train.amp must be bool"):
        load_config(TINY, ["train.amp=1"])
    # a section given a value: the section's name and keys, not a TypeError from deep inside
    with pytest.raises(ValueError, match=r"data is a section of keys \['audio_seconds'.*set one of them, e.g. data.audio_seconds="):
        load_config(TINY, ["data=5"])
    bad.write_text("train: null\n")
    with pytest.raises(ValueError, match=r"bad.yaml: train is a section of keys"):
        load_config(bad)
    assert load_config(TINY, ["train.lr=3e-4"])["train"]["lr"] == 3e-4  # YAML's text "3e-4" is a number here
    with pytest.raises(FileNotFoundError, match=r"^config file .*nope.yaml not found$"):  # not [Errno 2] ...
        load_config(tmp_path / "nope.yaml")


def test_batches_are_sharded_and_reproducible():
    def epoch_batches(rank, world, epoch, start=0):
        return list(EpochBatchSampler(23, 3, 3, seed=5, epoch=epoch, rank=rank, world=world, start=start))

    shards = [epoch_batches(r, 2, epoch=1) for r in range(2)]
    seen = [i for shard in shards for b in shard for _, i in b]
    assert len(seen) == len(set(seen)) == 18
    assert epoch_batches(0, 2, 1) == shards[0] and epoch_batches(0, 2, 2) != shards[0]
    assert epoch_batches(0, 2, 1, start=1) == shards[0][1:]


# ---------------------------------------------------------------------------------------------
# the training contract each registered encoder declares
# ---------------------------------------------------------------------------------------------

def tiny_run(clips, out, encoder: dict, embed_dim: int = 32):
    """One epoch of a few steps, no validation, of the tiny config with ``encoder`` as its encoder
    section and a tower of ``embed_dim`` dimensions."""
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg["encoder"] = encoder
    cfg["clip"]["model_cfg"]["embed_dim"] = embed_dim
    config = out.parent / f"{out.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg))
    args = args_for(clips, out, "--set", "train.epochs=1", "--set", "data.val_list=null")
    args[1] = str(config)
    return train_script.main(args)


@pytest.mark.parametrize("encoder, embed_dim", [
    ({"name": "wav2clip", "pretrained": False}, 512),
    ({"name": "imagebind", "pretrained": False, "width": 32, "depth": 1, "heads": 2, "target_length": 100}, 32),
])
def test_published_towers_fine_tune(clips, tmp_path, encoder, embed_dim):
    """ImageBind's and Wav2CLIP's audio towers train (random-weight tiny configs): Wav2CLIP raised a
    TypeError on the embed_dim / tower-config arguments train.py passes."""
    out = tmp_path / encoder["name"]
    summary = tiny_run(clips, out, encoder, embed_dim)
    assert summary["finished"] and summary["step"] > 0
    losses = [float(r["loss"]) for r in read_rows(out, "train")]
    assert len(losses) == summary["step"] and np.isfinite(losses).all()
    trained = create_audio_encoder(str(out / "checkpoints" / "final.pt"))
    assert trained.registry_name == encoder["name"] and trained.embed_dim == embed_dim
    assert trained.clip_model_cfg["embed_dim"] == embed_dim and trained.clip_pretrained is None
    with torch.no_grad():
        emb = trained(torch.randn(2, 16000))
    assert emb.shape == (2, embed_dim) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-4)
    tower, _ = create_clip_tower(**trained.clip_tower_spec)  # the checkpoint rebuilds the tower it learned
    assert tower.visual.output_dim == embed_dim


def test_encoder_contract_refusals(clips, tmp_path):
    from avlegrad.audio import TrainingContract, register_audio_encoder
    from avlegrad.audio.factory import _REGISTRY, _TRAINING

    # a fixed-width encoder with a tower of another width: one line naming both widths
    with pytest.raises(ValueError, match=r"'wav2clip' embeds into 512 dimensions \(fixed\).*embeds into 32"):
        tiny_run(clips, tmp_path / "w", {"name": "wav2clip", "pretrained": False})

    @register_audio_encoder("frozen-test", training=TrainingContract(False, "its weights are a lookup table"))
    def frozen(**kwargs):
        raise AssertionError("never built")

    @register_audio_encoder("undeclared-test")
    def undeclared(**kwargs):
        raise AssertionError("never built")

    try:
        with pytest.raises(ValueError, match="'frozen-test' cannot be trained: its weights are a lookup table"):
            tiny_run(clips, tmp_path / "f", {"name": "frozen-test"})
        with pytest.raises(ValueError, match="'undeclared-test' cannot be trained: .*declares no training contract"):
            tiny_run(clips, tmp_path / "u", {"name": "undeclared-test"})
    finally:
        for name in ("frozen-test", "undeclared-test"):
            _REGISTRY.pop(name), _TRAINING.pop(name)


def test_sound_mixing_trains_and_resumes_bit_for_bit(clips, tmp_path):
    """train.mix: the mixing draws follow (seed, epoch, micro-batch, rank), so a resumed run mixes
    as the uninterrupted one did; with mixing the objective differs from the unmixed run's."""
    mix = ["--set", "train.epochs=2", "--set", "train.mix.prob=1.0", "--set", "train.mix.gate_prob=1.0"]
    full = tmp_path / "full"
    summary = train_script.main(args_for(clips, full, *mix))
    assert summary["finished"] and summary["step"] == 2 * (33 // 8)
    plain = tmp_path / "plain"
    train_script.main(args_for(clips, plain, "--set", "train.epochs=2"))
    assert read_rows(full, "train")[0]["loss"] != read_rows(plain, "train")[0]["loss"]
    part = tmp_path / "part"
    train_script.main(args_for(clips, part, *mix, "--set", "train.max_steps=5"))
    summary = train_script.main(["--config", str(TINY), "--set", f"output_dir={part}", "--resume",
                                 "--set", "train.max_steps=null"])
    assert summary["finished"] and (full / "log.csv").read_text() == (part / "log.csv").read_text()
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _validation_failure(rank, world, port, kind, out):
    import torch.distributed as dist
    from avlegrad.distributed import DistInfo
    from avlegrad.train.model import NonFiniteError
    from avlegrad.train.trainer import Trainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    me = type("T", (), {"d": DistInfo(rank=rank, world_size=world), "_any_process": Trainer._any_process})()
    failure = None
    if rank == 0 and kind:
        failure = NonFiniteError("3 of 8 validation embeddings are NaN") if kind == "nan" else OSError("disk gone")
    try:
        Trainer._stop_together(me, failure)
        result = "none"
    except Exception as e:  # noqa: BLE001 - what each process raised is the point
        result = f"{type(e).__name__}: {e}"
    (out / f"rank{rank}.txt").write_text(result)
    dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["nan", "other", None])
def test_a_validation_failure_on_rank_0_stops_every_process(tmp_path, kind):
    """Validation runs on rank 0 only: its failure is raised on every process at once (the others
    would otherwise wait at the next barrier until the process group timed out)."""
    procs = torch.multiprocessing.spawn(_validation_failure, args=(2, _free_port(), kind, tmp_path), nprocs=2,
                                        join=False)
    deadline = time.time() + 120
    while not procs.join(timeout=1):
        if time.time() > deadline:
            for proc in procs.processes:
                proc.kill()
            pytest.fail("a process waited for the other: the failure was not shared")
    got = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    if kind is None:
        assert got == ["none", "none"]
    else:  # rank 0 raises its own; the other stops quietly (the command line exits 1 without a line)
        assert got[0] == ("NonFiniteError: 3 of 8 validation embeddings are NaN" if kind == "nan" else
                          "OSError: disk gone")
        assert got[1] == "StoppedWithRank0: stopped with rank 0, whose validation failed"


def test_end_of_epoch_stops_together_when_validation_fails(clips, tmp_path, monkeypatch):
    """end_of_epoch routes rank 0's validation failure through _stop_together (which the two-process
    test above runs), and writes no checkpoint after it."""
    from avlegrad.train import trainer as tr
    from avlegrad.train.model import NonFiniteError

    seen = []
    real = tr.Trainer._stop_together

    def spy(self, failure):
        seen.append(failure)
        return real(self, failure)

    def diverged(*args, **kwargs):
        raise NonFiniteError("2 of 8 validation embeddings are NaN or infinite")

    monkeypatch.setattr(tr.Trainer, "_stop_together", spy)
    monkeypatch.setattr(tr, "evaluate", diverged)
    with pytest.raises(NonFiniteError, match="2 of 8 validation embeddings"):
        train_script.main(args_for(clips, tmp_path / "run", "--set", "train.epochs=1"))
    assert len(seen) == 1 and isinstance(seen[0], NonFiniteError)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("sig,workers", [("SIGINT", 0), ("SIGTERM", 2)])
def test_ctrl_c_under_torchrun_saves_a_resumable_checkpoint(clips, tmp_path, cache_home, sig, workers):
    """Ctrl-C (SIGINT to the terminal's process group, torchrun included) or a SIGTERM to torchrun (as a
    job scheduler sends): torchrun passes it on to each worker's process group (DataLoader workers
    included); the processes finish the same optimizer step, write last.pt together and stop, rank 0
    with one line; --resume continues from it."""
    import signal

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AVLEGRAD_CACHE": str(cache_home)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(REPO / "train.py"), *args_for(clips, out, "--set", "train.batch_size=4", "--set", "train.epochs=400",
                                             "--set", "train.log_every_steps=1", "--set", "train.val_every_epochs=1000",
                                             "--set", f"data.num_workers={workers}")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's job
    try:
        deadline = time.time() + 180
        while not (out / "log.csv").is_file() or len(read_rows(out, "train")) < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "the run logged no steps"
            time.sleep(0.2)
        if sig == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        else:
            os.kill(proc.pid, signal.SIGTERM)  # torchrun alone
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0  # torchrun's own code (1), whatever its workers' (130)
    said = [line for line in stderr.splitlines() if "interrupted at step" in line]
    assert len(said) == 1 and "saved" in said[0] and "continue with --resume" in said[0], stderr[-3000:]  # rank 0
    step = int(said[0].split("interrupted at step ")[1].split(":")[0])
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["train_state"]["step"] == step >= 3 and ckpt["train_state"]["world"] == 2
    assert len(ckpt["train_state"]["per_rank"]) == 2
    # no traceback from our code or a DataLoader worker (torchrun's own agent prints one of its
    # SignalException)
    assert f'File "{REPO}' not in stderr and "avlegrad/" not in stderr.split("Traceback")[-1], stderr[-3000:]
    assert "DataLoader worker" not in stderr, stderr[-3000:]
    if sig == "SIGTERM":
        return
    # and it resumes: one more epoch from the saved step, on both processes
    steps_per_epoch = 33 // 2 // 4
    epochs = step // steps_per_epoch + 1
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(REPO / "train.py"), "--resume", str(out / "checkpoints" / "last.pt"), "--set", f"train.epochs={epochs}"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(out / "checkpoints" / "final.pt", weights_only=True)["summary"]["step"] == epochs * steps_per_epoch
