"""eval.py end to end on the generated benchmark with a tiny random CLIP: results, resume,
bad clips, the 2-process torchrun run, and the user errors."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import eval as eval_cli
from avlegrad import metrics
from avlegrad.data.synthetic import generate_synthetic

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A generated benchmark of 12 clips and a tiny model config, shared by the tests here."""
    base = tmp_path_factory.mktemp("bench")
    root = generate_synthetic(base / "synthetic", num_clips=12, seed=3)
    config = base / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return root, config


def run_eval(bench, out, *extra):
    root, config = bench
    argv = ["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
            "--workers", "0", "--batch-size", "5", "--out", str(out), *extra]
    assert eval_cli.main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def read_rows(out):
    return [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]


def test_synthetic_end_to_end(bench, tmp_path, capsys):
    summary = run_eval(bench, tmp_path / "run", "--save-overlays", "2")
    table = capsys.readouterr().out
    assert "legrad" in table and "center (prior)" in table and "cIoU(AP50)" in table
    assert summary["evaluated"] == 12 and summary["skipped"]["count"] == 0
    rows = read_rows(tmp_path / "run")
    # the summary is the metric of the per-clip rows, and the prior is the metric's own centre prior
    for method in ("legrad", "center"):
        assert summary["methods"][method] == metrics.summarize([r["ciou"][method] for r in rows])
    annotations = {a["file"]: a["bbox"] for a in json.loads((bench[0] / "vggss.json").read_text())}
    for r in rows:
        gt = metrics.gt_map(annotations[r["clip_id"]], "vggss")
        assert r["ciou"]["center"] == pytest.approx(metrics.ciou(metrics.center_prior(), gt))
    overlays = sorted((tmp_path / "run" / "overlays").glob("*.png"))
    assert len(overlays) == 2


def test_rows_follow_dataset_order(bench, tmp_path):
    run_eval(bench, tmp_path / "run", "--method", "center")
    ids = [a["file"] for a in json.loads((bench[0] / "vggss.json").read_text())]
    assert [r["clip_id"] for r in read_rows(tmp_path / "run")] == ids


def test_center_only_needs_no_model(bench, tmp_path):
    summary = run_eval(bench, tmp_path / "run", "--method", "center")
    assert list(summary["methods"]) == ["center"] and summary["methods"]["center"]["n"] == 12
    assert summary["settings"]["model"] is None


def test_resume_scores_only_the_missing_clips(bench, tmp_path, explained_images):
    full = run_eval(bench, tmp_path / "full")
    out = tmp_path / "interrupted"
    run_eval(bench, out)
    # simulate a run killed after 7 clips, mid-write: the merged file gone, a torn last line
    rows = (out / "clips.jsonl").read_text().splitlines()
    (out / "clips.jsonl").unlink()
    (out / "summary.json").unlink()
    (out / "clips.rank0.jsonl").write_text("\n".join(rows[:7]) + "\n" + rows[7][:20])

    explained_images.clear()
    resumed = run_eval(bench, out)
    assert sum(explained_images) == 5  # only the clips without a complete row
    assert (out / "clips.jsonl").read_text().splitlines()[:7] == rows[:7]  # kept as they were
    # the 5 rescored clips were batched differently: float rounding may move a pixel across the median
    for method, figures in full["methods"].items():
        for key, value in figures.items():
            assert resumed["methods"][method][key] == pytest.approx(value, abs=1e-3), (method, key)
    assert not list(out.glob("clips.rank*.jsonl"))


def test_resume_with_other_settings_is_refused(bench, tmp_path, caplog):
    run_eval(bench, tmp_path / "run", "--method", "center")
    root, config = bench
    code = eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--model", str(config),
                          "--pretrained", "none", "--workers", "0", "--layer-index", "0",
                          "--out", str(tmp_path / "run")])
    assert code == 2 and "other settings" in caplog.text and "--overwrite" in caplog.text


def test_bad_clips_are_skipped_and_reported(bench, tmp_path):
    root = tmp_path / "broken"
    generate_synthetic(root, num_clips=6, seed=5)
    videos = sorted((root / "videos").glob("*.mp4"))
    videos[0].unlink()  # missing
    videos[1].write_bytes(videos[1].read_bytes()[:300])  # truncated
    summary = run_eval((root, bench[1]), tmp_path / "run")
    assert summary["evaluated"] == 4 and summary["skipped"]["count"] == 2
    skipped = {s["clip_id"]: s["reason"] for s in summary["skipped"]["clips"]}
    assert set(skipped) == {videos[0].stem, videos[1].stem}
    assert "missing" in skipped[videos[0].stem]
    assert summary["methods"]["legrad"]["n"] == 4


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "synthetic", "--method", "legrad,magic"], "unknown method(s) magic"),
    # (a missing root stops a run that reads media; the centre prior alone reads none: issue 15)
    (["--dataset", "vggsound", "--root", "/nonexistent/vggss", "--method", "legrad"], "does not exist"),
    (["--dataset", "vggsound", "--root", "/nonexistent/vggss", "--method", "center"], "'vggss.json' not found"),
    (["--dataset", "is3", "--root", "/nonexistent", "--method", "center", "--confidence", "cosine"],
     "--confidence applies to the extended sets"),
    (["--dataset", "vggsound", "--target", "audio", "--method", "legrad"], "needs an --audio-encoder"),
    (["--dataset", "synthetic", "--seg-metrics", "denseav-global"], "--seg-metrics applies to the segmentation"),
])
def test_user_errors_are_one_clear_line(bench, tmp_path, caplog, argv, message):
    root, config = bench
    if "--root" not in argv:
        argv = argv + ["--root", str(root)]
    argv = argv + ["--model", str(config), "--pretrained", "none", "--workers", "0", "--out", str(tmp_path / "o")]
    assert eval_cli.main(argv) == 2
    assert message in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process(bench, tmp_path):
    one = run_eval(bench, tmp_path / "one")
    root, config = bench
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(REPO / "eval.py"), "--dataset", "synthetic", "--root", str(root),
           "--model", str(config), "--pretrained", "none", "--workers", "0", "--batch-size", "5",
           "--device", "cpu", "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["evaluated"] == one["evaluated"] == 12
    for method, figures in one["methods"].items():
        for key, value in figures.items():
            # other batch mates than in one process: float rounding may move a pixel across the median
            assert two["methods"][method][key] == pytest.approx(value, abs=1e-3), (method, key)
    assert [r["clip_id"] for r in read_rows(tmp_path / "two")] == [r["clip_id"] for r in read_rows(tmp_path / "one")]


def test_weights_that_cannot_be_downloaded_say_what_to_do(bench, tmp_path, caplog, monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no internet")

    monkeypatch.setattr(open_clip, "create_model", offline)
    root, _ = bench
    code = eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--model", "ViT-B-16",
                          "--pretrained", "openai", "--workers", "0", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "cannot get the weights 'openai' of ViT-B-16" in caplog.text
    assert "--pretrained" in caplog.text and "local checkpoint file" in caplog.text


def test_vggsound_defaults_to_imagebind_and_says_what_to_download(tmp_path, caplog, monkeypatch):
    from avlegrad import download

    def offline(url, dest, **kwargs):
        raise download.DownloadError(f"{url}: download failed (offline)")

    monkeypatch.setattr(download, "download_file", offline)
    monkeypatch.setenv("AVLEGRAD_CACHE", str(tmp_path / "cache"))
    opts = eval_cli.parse_args(["--dataset", "vggsound"])
    assert opts.audio_encoder == "imagebind" and opts.target == "audio"
    (tmp_path / "vggss.json").write_text(json.dumps([{"file": "abc_000010", "class": "dog", "bbox": [[0, 0, 1, 1]]}]))
    assert eval_cli.main(["--dataset", "vggsound", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "imagebind_huge.pth" in caplog.text
    assert str(tmp_path / "cache" / "weights" / "imagebind_huge.pth") in caplog.text


def test_default_out_resumes_its_own_run_and_gives_another_run_its_own_folder(bench, tmp_path, monkeypatch):
    root, config = bench
    monkeypatch.chdir(tmp_path)
    base = ["--dataset", "synthetic", "--root", str(root), "--model", str(config), "--pretrained", "none",
            "--workers", "0"]
    assert eval_cli.main(base + ["--method", "center"]) == 0
    first = tmp_path / "outputs" / "synthetic-test"
    assert json.loads((first / "run.json").read_text())["methods"] == ["center"]
    assert eval_cli.main(base + ["--method", "legrad"]) == 0  # other settings: not refused, a new folder
    second = tmp_path / "outputs" / "synthetic-test-2"
    assert json.loads((second / "run.json").read_text())["methods"] == ["legrad"]
    stamp = (first / "clips.jsonl").stat().st_mtime_ns
    assert eval_cli.main(base + ["--method", "center"]) == 0  # the first command again: its own folder
    assert (first / "clips.jsonl").stat().st_mtime_ns != stamp
    assert not (tmp_path / "outputs" / "synthetic-test-3").exists()


def test_a_failed_run_leaves_nothing_in_the_way(bench, tmp_path, caplog, monkeypatch):
    root, config = bench
    monkeypatch.chdir(tmp_path)
    # a wrong root is told before any model is loaded, and writes no run folder
    assert eval_cli.main(["--dataset", "folder", "--root", str(tmp_path / "nope"), "--audio-encoder",
                          "imagebind", "--workers", "0"]) == 2
    assert "does not exist" in caplog.text and "imagebind_huge" not in caplog.text
    assert not (tmp_path / "outputs").exists()
    # a folder whose run scored nothing (settings of a failed run) is simply reused
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"dataset": "vggsound", "methods": ["legrad"]}))
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--method", "center", "--workers", "0",
                          "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 12
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


@pytest.mark.parametrize("device,message", [("gpu", "unknown device 'gpu'"), ("cuda", "no CUDA GPU")])
def test_bad_device_is_one_clear_line(bench, tmp_path, caplog, device, message):
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    root, config = bench
    assert eval_cli.main(["--dataset", "synthetic", "--root", str(root), "--method", "center", "--device", device,
                          "--out", str(tmp_path / "o")]) == 2
    assert message in caplog.text


def test_unreachable_hub_fails_fast_from_the_cache_only(monkeypatch):
    import socket

    import huggingface_hub.constants as hub
    import open_clip

    from avlegrad.models import WeightsUnavailableError, load_clip

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    seen = []

    def create_model(name, pretrained=None):
        seen.append(hub.HF_HUB_OFFLINE)  # offline: the cache only, no minute of retries
        raise RuntimeError(f"Failed to download weights for tag {pretrained!r}")

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(open_clip, "create_model", create_model)
    before = hub.HF_HUB_OFFLINE
    with pytest.raises(WeightsUnavailableError, match="openai"):
        load_clip("ViT-B-32", "openai")
    assert seen == [True] and hub.HF_HUB_OFFLINE == before


@pytest.mark.parametrize("argv", [["--dataset", "vggsound"], ["--dataset", "synthetic"],
                                  ["--dataset", "synthetic", "--target", "text"],
                                  ["--dataset", "flickr", "--model", "ViT-B-16"]])
def test_the_library_applies_the_command_lines_defaults(argv):
    """evaluate(EvalOptions(dataset=...)) chooses the models eval.py --dataset ... chooses
    (resolve_defaults, applied by both), and applying it twice changes nothing."""
    from avlegrad.eval.run import EvalOptions, resolve_defaults

    cli = eval_cli.parse_args(argv)
    given = dict(zip(argv[::2], argv[1::2]))
    lib = resolve_defaults(EvalOptions(dataset=given["--dataset"], target=given.get("--target"),
                                       model=given.get("--model"), workers=cli.workers))
    assert lib == cli and resolve_defaults(lib) == lib
    if argv == ["--dataset", "vggsound"]:
        assert lib.audio_encoder == "imagebind" and lib.target == "audio"
    if "--model" in argv:
        assert lib.audio_encoder is None and lib.target == "text"
