"""The procedural world (avlegrad.data.world) and its tiny CLIP (avlegrad.world_clip): the scenes'
guarantees, captions in the manifest, checkpoints that travel with their CLIP file, eval.py's
synthetic default, the shipped checkpoints, and a reduced run of the whole chain
(world CLIP -> train.py -> eval.py) that must learn to localize."""
import json
import shutil

import numpy as np
import pytest
import torch

import eval as eval_cli
from avlegrad import world_clip
from avlegrad.audio import factory
from avlegrad.data import create_dataset, generate_synthetic, world
from avlegrad.data.synthetic import MANIFEST

REPO = world_clip.REPO_ROOT


@pytest.fixture
def one_thread():
    """CPU runs that do not thrash when other test runs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# scenes and sounds
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [96, 160])
def test_scenes_keep_their_guarantees(size):
    counts = set()
    for index in range(40):
        scene = world.make_scene(np.random.default_rng([5, index]), size)
        names = scene.names
        counts.add(len(names))
        assert 1 <= len(names) <= world.MAX_OBJECTS and len(set(names)) == len(names)
        assert scene.frame.shape == (size, size, 3) and scene.frame.dtype == np.uint8
        obj = scene.sounding_object
        ys, xs = np.nonzero(obj.mask)  # the box is the bounding box of the visible pixels
        assert obj.box == [xs.min() / size, ys.min() / size, (xs.max() + 1) / size, (ys.max() + 1) / size]
        x0, y0, x1, y1 = (np.array(obj.box) * size).round().astype(int)
        area = (x1 - x0) * (y1 - y0)
        assert area >= world.MIN_SOUNDING_BOX_AREA * size * size
        assert obj.mask.sum() >= world.MIN_BOX_FILL * area and obj.visible >= world.MIN_SOUNDING_VISIBLE
        assert obj.mask[(y0 + y1) // 2, (x0 + x1) // 2]  # the box centre lies on the object
        assert all(o.visible >= world.MIN_OTHER_VISIBLE for o in scene.objects)
        masks = np.stack([o.mask for o in scene.objects])
        assert masks.sum(0).max() <= 1  # visible masks never overlap
        color = np.array(world.CLASSES[obj.name].color, dtype=float)
        pixels = scene.frame[obj.mask].astype(float)
        assert np.median(np.abs(pixels - color).max(1)) < world.COLOR_JITTER + world.TEXTURE_AMPLITUDE + 8
    assert counts == {1, 2, 3}
    again = world.make_scene(np.random.default_rng([5, 0]), size)
    first = world.make_scene(np.random.default_rng([5, 0]), size)
    np.testing.assert_array_equal(again.frame, first.frame)



def test_scene_counts_and_framing_follow_the_options():
    def offsets(**options):
        scenes = [world.make_scene(np.random.default_rng([6, i]), 96, **options) for i in range(40)]
        centres = [((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for o in (s.sounding_object for s in scenes)]
        return scenes, np.mean([np.hypot(x - 0.5, y - 0.5) for x, y in centres])

    busy, spread_anywhere = offsets(object_counts=(0, 0, 1))
    assert sum(len(s.objects) == 3 for s in busy) >= 36  # fewer only when they cannot be laid out
    assert [len(s.objects) for s in offsets(object_counts=(1,))[0]] == [1] * 40
    framed, spread_framed = offsets(object_counts=(0, 0, 1), center_spread=0.08)
    assert spread_framed < 0.7 * spread_anywhere  # the sounding object sits near the middle

def test_captions():
    assert world.caption(["red disc"]) == "a red disc"
    assert world.caption(["red disc", "orange cross"]) == "a red disc and an orange cross"
    assert world.caption(["red disc", "blue square", "cyan hexagon"]) == "a red disc, a blue square and a cyan hexagon"
    boxes = [[0.0, 0.0, 0.3, 0.3], [0.35, 0.3, 0.65, 0.7], [0.5, 0.7, 1.0, 1.0]]
    assert world.caption(["red disc", "blue square", "cyan hexagon"], boxes=boxes) == (
        "a red disc at the top left, a blue square in the middle and a cyan hexagon at the bottom right")
    shuffled = world.caption(["red disc", "blue square", "cyan hexagon"], np.random.default_rng(1), boxes)
    assert sorted(shuffled.replace(" and ", ", ").split(", ")) == sorted(
        ["a red disc at the top left", "a blue square in the middle", "a cyan hexagon at the bottom right"])


def test_every_class_sounds_different_and_distractors_are_off_screen():
    rng = np.random.default_rng(0)
    spectra = {}
    for name in world.CLASSES:
        sound = world.class_sound(name, 1.0, 16000, rng)
        assert sound.dtype == np.float32 and len(sound) == 16000
        assert np.abs(sound).max() == pytest.approx(world.SOUND_PEAK, rel=1e-4)
        spectrum = np.abs(np.fft.rfft(sound))[:4000]
        spectra[name] = spectrum / np.linalg.norm(spectrum)
    names = list(spectra)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert spectra[a] @ spectra[b] < 0.6, (a, b)  # no two classes share a spectrum
    for index in range(30):
        rng = np.random.default_rng([9, index])
        scene = world.make_scene(rng, 96)
        audio, distractor = world.scene_audio(scene, 1.0, 16000, rng, distractor_prob=1.0)
        assert distractor is not None and distractor not in scene.names
        assert 0.2 < np.abs(audio).max() <= 1.0


def test_manifest_holds_captions_and_readers_ignore_extra_fields(tmp_path):
    root = generate_synthetic(tmp_path / "s", num_clips=5, seed=2, size=96, duration=1.0)
    manifest = json.loads((root / MANIFEST).read_text())
    entries = json.loads((root / "vggss.json").read_text())
    assert [s["file"] for s in manifest["scenes"]] == [e["file"] for e in entries] == manifest["clips"]
    for scene, entry in zip(manifest["scenes"], entries):
        names = [o["class"] for o in scene["objects"]]
        assert all(name in scene["caption"] for name in names)
        assert scene["caption_places"].startswith(scene["caption"].split(",")[0].split(" and ")[0] + " ")
        assert scene["caption_places"].count(" the ") + scene["caption_places"].count("in the middle") >= len(names)
        assert scene["objects"][scene["sounding"]]["class"] == entry["class"]
        assert scene["objects"][scene["sounding"]]["bbox"] == entry["bbox"][0]
        assert scene["distractor"] is None or scene["distractor"] not in names
    # a vggss.json with extra fields per entry (captions, say) reads the same
    before = {e.clip_id: (e.boxes, e.label) for e in create_dataset("synthetic", root).entries}
    for scene, entry in zip(manifest["scenes"], entries):
        entry.update(caption=scene["caption"], objects=scene["objects"])
    (root / "vggss.json").write_text(json.dumps(entries))
    after = create_dataset("synthetic", root)
    assert {e.clip_id: (e.boxes, e.label) for e in after.entries} == before


# --------------------------------------------------------------------------------------------
# checkpoints that travel with their CLIP file
# --------------------------------------------------------------------------------------------
TINY_WORLD_CLIP = {"embed_dim": 16,
                   "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
                   "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def test_packaged_checkpoint_finds_its_clip_file_from_anywhere(tmp_path, monkeypatch, one_thread):
    folder = tmp_path / "made" / "world"
    folder.mkdir(parents=True)
    model = world_clip.build_world_clip(TINY_WORLD_CLIP, seed=3)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
               folder / "clip.pt")
    cfg = json.dumps(TINY_WORLD_CLIP)
    world_clip.save_untrained_audio_encoder(
        REPO / "configs" / "world_audio.yaml", folder / "audio.pt", clip_file=folder / "clip.pt",
        overrides=[f"clip.pretrained={folder / 'clip.pt'}", f"clip.model_cfg={cfg}",
                   "encoder.backbone=test_convnext", "encoder.frontend.n_mels=32"])
    stored = torch.load(folder / "audio.pt", weights_only=True)["encoder"]["kwargs"]
    assert stored["clip_pretrained"] == "clip.pt"  # relative to the checkpoint's folder

    moved = tmp_path / "clone" / "checkpoints"  # a fresh clone elsewhere, run from yet another folder
    shutil.copytree(folder, moved)
    shutil.rmtree(folder)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    root = generate_synthetic(tmp_path / "bench", num_clips=3, seed=4, size=64, duration=1.0)
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--audio-encoder",
                          str(moved / "audio.pt"), "--workers", "0", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["evaluated"] == 3
    assert summary["settings"]["pretrained"] == str((moved / "clip.pt").resolve())


def test_stored_paths_relative_to_the_run_directory_still_work(tmp_path, monkeypatch):
    class Encoder:
        clip_pretrained = "checkpoints/world/clip.pt"

    ckpt = tmp_path / "runs" / "final.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    encoder = Encoder()
    factory._resolve_tower_file(encoder, ckpt)  # nothing beside the checkpoint: left as it was
    assert encoder.clip_pretrained == "checkpoints/world/clip.pt"


# --------------------------------------------------------------------------------------------
# the shipped checkpoints and eval.py's synthetic default
# --------------------------------------------------------------------------------------------
SHIPPED = world_clip.WORLD_CHECKPOINTS


def test_synthetic_default_is_the_shipped_world():
    for name in (world_clip.CLIP_FILE, world_clip.CONFIG_FILE, world_clip.AUDIO_FILE):
        assert (SHIPPED / name).is_file(), name
    opts = eval_cli.parse_args(["--dataset", "synthetic"])
    assert opts.audio_encoder == str(SHIPPED / "audio.pt") and opts.target == "audio"
    assert opts.model is None and opts.pretrained is None  # the tower comes from the encoder
    text = eval_cli.parse_args(["--dataset", "synthetic", "--target", "text"])
    assert text.model == str(SHIPPED / "clip_config.json") and text.pretrained == str(SHIPPED / "clip.pt")
    assert text.prompt == "a {}"
    explicit = eval_cli.parse_args(["--dataset", "synthetic", "--model", "x.json", "--pretrained", "none"])
    assert explicit.audio_encoder is None and explicit.pretrained == "none"
    cfg = json.loads((SHIPPED / "clip_config.json").read_text())
    import yaml

    config = yaml.safe_load((REPO / "configs" / "world_audio.yaml").read_text())
    assert config["clip"]["model_cfg"] == cfg == world_clip.WORLD_CLIP_CONFIG
    stored = torch.load(SHIPPED / "audio.pt", weights_only=True)["encoder"]["kwargs"]
    assert stored["clip_pretrained"] == "clip.pt" and stored["clip_model_cfg"] == cfg
    sizes = sum((SHIPPED / n).stat().st_size for n in (world_clip.CLIP_FILE, world_clip.AUDIO_FILE))
    assert sizes < 8e6
    from avlegrad.audio import create_audio_encoder
    from avlegrad.localize import encoder_window

    # localize's default window is the one the encoder was trained on (configs/world_audio.yaml)
    assert encoder_window(create_audio_encoder(str(SHIPPED / "audio.pt"))) == config["data"]["audio_seconds"] == 1.5


@pytest.mark.slow
def test_shipped_checkpoints_localize_held_out_clips(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # the default resolves beside eval.py, not in the cwd
    root = generate_synthetic(tmp_path / "heldout", num_clips=60, seed=0)  # eval.py's default set is its first 32
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--workers", "0",
                          "--method", "legrad,similarity,attention", "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "summary.json").read_text())["methods"]
    assert m["legrad"]["n"] == 60
    assert m["legrad"]["ap50"] >= 0.5 and m["legrad"]["ap50"] >= m["center"]["ap50"] + 0.25
    assert m["legrad"]["auc"] >= m["center"]["auc"] + 0.05
    assert m["legrad"]["ap50"] >= max(m["similarity"]["ap50"], m["attention"]["ap50"]) + 0.15

    # the control: the same encoder at its initialisation does not localize the sounding object
    untrained = world_clip.save_untrained_audio_encoder(REPO / "configs" / "world_audio.yaml", tmp_path / "u.pt",
                                                        clip_file=SHIPPED / "clip.pt")
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--workers", "0", "--audio-encoder",
                          str(untrained), "--method", "legrad", "--out", str(tmp_path / "u")]) == 0
    u = json.loads((tmp_path / "u" / "summary.json").read_text())["methods"]
    assert u["legrad"]["ap50"] <= m["center"]["ap50"] + 0.1 and u["legrad"]["auc"] <= m["center"]["auc"]


# --------------------------------------------------------------------------------------------
# the whole chain, reduced: a world CLIP, train.py into its space, eval.py on held-out clips
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_reduced_chain_learns_to_localize(tmp_path, one_thread):
    from avlegrad.train import run

    clip_dir = tmp_path / "clip"
    cfg = json.loads(json.dumps(world_clip.WORLD_CLIP_CONFIG))
    cfg["vision_cfg"]["layers"] = 4  # the shipped tower has 6
    report = world_clip.train_world_clip(clip_dir, num_images=3000, epochs=3, val_images=100, workers=1,
                                         render_size=96, warmup_steps=10, seed=5, model_cfg=cfg)
    assert report["val_set_accuracy"] > 0.5  # it recognises the objects (chance: 1/63)

    train_root = generate_synthetic(tmp_path / "train", num_clips=320, seed=11, size=96, duration=2.0, fps=2)
    heldout = generate_synthetic(tmp_path / "heldout", num_clips=60, seed=12, size=96, duration=2.0, fps=2)
    overrides = [f"clip.pretrained={clip_dir / 'clip.pt'}", f"clip.model_cfg={json.dumps(cfg)}", f"data.root={train_root}",
                 f"data.train_list={train_root / 'vggss_test.csv'}", f"output_dir={tmp_path / 'audio'}",
                 f"data.targets_cache={tmp_path / 'targets'}", "train.epochs=10", "train.batch_size=32",
                 "train.warmup_steps=10", "train.log_every_steps=50"]
    config = REPO / "configs" / "world_audio.yaml"
    summary = run(config, overrides)
    trained = tmp_path / "audio.pt"
    world_clip.package_audio_checkpoint(summary["checkpoint"], trained, clip_dir / "clip.pt")
    untrained = world_clip.save_untrained_audio_encoder(config, tmp_path / "untrained.pt", overrides,
                                                        clip_file=clip_dir / "clip.pt")

    def figures(encoder, out):
        assert eval_cli.main(["--dataset", "synthetic", "--root", str(heldout), "--audio-encoder", str(encoder),
                              "--workers", "0", "--out", str(tmp_path / out)]) == 0
        return json.loads((tmp_path / out / "summary.json").read_text())["methods"]

    good, random = figures(trained, "trained"), figures(untrained, "untrained")
    centre = good["center"]
    assert good["legrad"]["n"] == random["legrad"]["n"] == 60
    # measured here: AP50 0.67, mean cIoU 0.59; centre 0.47 / 0.50; untrained 0.10 / 0.27
    assert good["legrad"]["ap50"] >= centre["ap50"] + 0.15
    assert good["legrad"]["mean_ciou"] >= centre["mean_ciou"] + 0.06
    assert good["legrad"]["ap50"] >= random["legrad"]["ap50"] + 0.3
    assert good["legrad"]["mean_ciou"] >= random["legrad"]["mean_ciou"] + 0.15
