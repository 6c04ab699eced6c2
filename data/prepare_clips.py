#!/usr/bin/env python
"""Turn a folder of video clips (VGGSound layout) into the prepared layout most code reads:

    <out>/frames/<id>.jpg   the middle frame (the frame the benchmarks annotate)
    <out>/audio/<id>.wav    the whole audio track, mono, 16 kHz (--sample-rate)

    python data/prepare_clips.py VIDEOS_DIR [--out DIR] [--workers N] [--ids FILE]

Clips are found recursively (``<id>.mp4``, ``.mkv``, ``.webm``; the id is the file name without
its suffix). Runs in parallel, resumes (a clip whose two outputs exist is skipped; outputs are
written to a temporary name and renamed, so an existing file is complete), and never stops for a
bad video: every failure is listed (clip id + reason) in ``--failures`` (default
``<out>/prepare_failures.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a checkout: make `avlegrad` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad.cli import ignore_interrupts, run_command  # noqa: E402

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
JPEG_QUALITY = 95


def output_paths(out: Path, clip_id: str) -> tuple[Path, Path]:
    return out / "frames" / f"{clip_id}.jpg", out / "audio" / f"{clip_id}.wav"


def is_done(out: Path, clip_id: str) -> bool:
    return all(p.is_file() and p.stat().st_size > 0 for p in output_paths(out, clip_id))


def _save_jpeg(frame, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.jpg")
    try:
        Image.fromarray(frame).save(tmp, quality=JPEG_QUALITY)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_clip(video: str, out: str, clip_id: str, sample_rate: int = 16000) -> tuple[str, str, str]:
    """Write one clip's frame and audio; returns ``(clip_id, status, reason)`` with status
    "done", "skipped" (already prepared) or "failed". Never raises: it runs in a worker."""
    out_dir = Path(out)
    if is_done(out_dir, clip_id):
        return clip_id, "skipped", ""
    try:
        from avlegrad.data.media import load_audio, load_frame, write_audio

        frame_path, audio_path = output_paths(out_dir, clip_id)
        frame = load_frame(video)  # decode both before writing either: no half-prepared clip
        waveform, _ = load_audio(video, sample_rate=sample_rate)
        write_audio(audio_path, waveform, sample_rate)
        _save_jpeg(frame, frame_path)
        return clip_id, "done", ""
    except Exception as e:  # one bad video must not stop the run: report it instead
        reason = str(e) if hasattr(e, "reason") else f"{type(e).__name__}: {e}"  # MediaError names the file
        return clip_id, "failed", reason


def find_videos(src: Path) -> dict[str, Path]:
    """``{clip_id: video path}`` for every video under ``src`` (hidden temporary files skipped)."""
    videos = {}
    for path in sorted(src.rglob("*")):
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not path.name.startswith("."):
            videos.setdefault(path.stem, path)
    return videos


def prepare_clips(src, out=None, *, workers: int | None = None, ids=None, sample_rate: int = 16000,
                  failures_path=None, progress: bool = True) -> dict:
    """Prepare every clip of ``src`` (or only ``ids``) into ``out``; returns the summary that is
    also written to ``failures_path``."""
    from tqdm import tqdm

    import avlegrad.data.media  # noqa: F401  imported once here, so forked workers inherit it

    src = Path(src)
    out = Path(out) if out else src
    videos = find_videos(src)
    wanted = list(ids) if ids is not None else list(videos)
    failed = [{"clip_id": i, "reason": f"no video file for this id under {src}"} for i in wanted if i not in videos]
    jobs = [(str(videos[i]), str(out), i, sample_rate) for i in wanted if i in videos]
    counts = {"done": 0, "skipped": 0}

    def record(result):
        clip_id, status, reason = result
        if status == "failed":
            failed.append({"clip_id": clip_id, "reason": reason})
        else:
            counts[status] += 1

    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(jobs), desc="prepare", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                record(prepare_clip(*job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=ignore_interrupts) as pool:
                futures = {pool.submit(prepare_clip, *job): job[2] for job in jobs}
                try:
                    for future in as_completed(futures):
                        try:
                            record(future.result())
                        except Exception as e:  # a worker process died (e.g. killed for memory)
                            record((futures[future], "failed", f"worker crashed ({type(e).__name__}: {e})"))
                        bar.update()
                except KeyboardInterrupt:  # Ctrl-C: the clips being written finish (atomically), no new ones
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    summary = {"source": str(src), "out": str(out), "total": len(wanted), "done": counts["done"],
               "skipped_existing": counts["skipped"], "failed": sorted(failed, key=lambda f: f["clip_id"])}
    failures_path = Path(failures_path) if failures_path else out / "prepare_failures.json"
    failures_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = failures_path.with_name(f".{failures_path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, failures_path)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="folder holding the video clips (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="prepared layout root (default: src)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--ids", type=Path, default=None, help="file with the clip ids to prepare, one a line")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--failures", type=Path, default=None,
                        help="summary JSON (default: <out>/prepare_failures.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"error: {args.src} is not a directory", file=sys.stderr)
        return 2
    ids = None
    if args.ids:
        ids = [line.split(",")[0].strip() for line in args.ids.read_text().splitlines() if line.strip()]
    summary = prepare_clips(args.src, args.out, workers=args.workers, ids=ids, sample_rate=args.sample_rate,
                            failures_path=args.failures, progress=not args.quiet)
    print(f"{summary['done']} prepared, {summary['skipped_existing']} already done, "
          f"{len(summary['failed'])} failed (of {summary['total']})")
    for failure in summary["failed"][:20]:
        print(f"  {failure['clip_id']}: {failure['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, name="prepare_clips.py",
                         interrupted="interrupted; the clips prepared so far are kept: rerun to continue"))
