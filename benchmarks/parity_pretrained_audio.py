"""Parity of avlegrad's ImageBind and Wav2CLIP audio encoders with the official implementations.

Embeds a few audio files (or generated test signals) with the official code and with ours, with the
same weights, and prints the largest absolute difference and the cosine of the embeddings (goal:
max |diff| <= 1e-4, cosine 1 - 1e-6), plus the difference of ImageBind's preprocessed clips. Exits
non-zero when a difference exceeds ``--tol``. Not run by the tests (it needs the weights and the
official code).

ImageBind (needs a clone of https://github.com/facebookresearch/ImageBind, or an installed copy of
its ``imagebind`` package, with its requirements; pytorchvideo must be the commit ImageBind pins,
``pip install "git+https://github.com/facebookresearch/pytorchvideo.git@28fe037d212663c6a24f373b94cc5d478c8c1a1d"``;
PyPI's pytorchvideo 0.1.5 spaces the clips differently)::

    python benchmarks/parity_pretrained_audio.py --imagebind-repo ~/src/ImageBind \\
        --imagebind-weights ~/.cache/avlegrad/weights/imagebind_huge.pth [AUDIO_FILES ...]

Wav2CLIP (the official ``wav2clip`` package, ``pip install wav2clip==0.1.0``, or a clone given
with ``--wav2clip-repo``)::

    python benchmarks/parity_pretrained_audio.py --wav2clip-weights ~/.cache/avlegrad/weights/Wav2CLIP.pt

Both can be given in one run. Without audio files, test signals are generated: 0.9 s (shorter than
one 2 s clip), 3 s with a DC offset (overlapping clips: the in-place mean subtraction matters),
7.3 s at 44.1 kHz (resampling), 0.05 s (800 samples). Files are first mixed to mono (both
implementations then read the same mono file; the official ImageBind loader would otherwise use
channel 0 of a multichannel file).

Notes:
* ``torchaudio.load`` needs torchcodec from torchaudio 2.9 on; the official ImageBind loader calls
  it, so this script replaces it with a soundfile reader returning the same ``[C, T]`` float32.
* By default the official ``ImageBindModel`` is built with ``imagebind_huge``'s audio settings but
  one-block other towers, and only the audio weights are loaded (checked complete): the audio
  output is the same as ``imagebind_huge`` and it needs far less memory. ``--official-full-model``
  builds ``imagebind_huge()`` and loads the whole file strictly (about 10 GB of RAM).
* ``--pytorchvideo-shim`` stands in for a missing pytorchvideo with a transcription of the pinned
  commit's ``ConstantClipsPerVideoSampler`` (then the clip boundaries are not checked against
  pytorchvideo itself).
* The official Wav2CLIP file is read with ``torch.load(weights_only=False)``, as the official code
  does (``torch.hub.load_state_dict_from_url``); use a file you trust.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avlegrad.audio import create_audio_encoder  # noqa: E402
from avlegrad.audio.imagebind import imagebind_audio_clips  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def generate_signals(folder: Path) -> list[Path]:
    import soundfile as sf

    rng = np.random.default_rng(0)

    def write(name, seconds, rate, fn):
        t = np.arange(int(round(seconds * rate))) / rate
        path = folder / name
        sf.write(path, fn(t).astype(np.float32), rate, subtype="FLOAT")
        return path

    return [
        write("tone_0.9s_16k.wav", 0.9, 16000,
              lambda t: 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)),
        write("chirp_dc_3s_16k.wav", 3.0, 16000,
              lambda t: 0.3 * np.sin(2 * np.pi * (200 + 650 * t) * t) + 0.02 * rng.standard_normal(t.shape) + 0.1),
        write("mix_7.3s_44k.wav", 7.3, 44100,
              lambda t: 0.2 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
              + 0.05 * rng.standard_normal(t.shape)),
        write("click_0.05s_16k.wav", 0.05, 16000, lambda t: np.where(t < 0.01, 0.8, 0.0) + 0.01 * np.sin(2e3 * t)),
    ]


def read_native(path: Path) -> tuple[np.ndarray, int]:
    """A file as mono float32 at its own rate (soundfile, or PyAV for other containers)."""
    from avlegrad.data.media import load_audio

    audio, rate = load_audio(path, sample_rate=None, mono=True)
    return np.ascontiguousarray(audio, dtype=np.float32), rate


def mono_copies(paths: list[Path], folder: Path) -> list[Path]:
    import soundfile as sf

    out = []
    for i, path in enumerate(paths):
        audio, rate = read_native(path)
        dest = folder / f"{i:02d}_{path.stem}.wav"
        sf.write(dest, audio, rate, subtype="FLOAT")
        out.append(dest)
    return out


def soundfile_torchaudio_load(path, *args, **kwargs):
    """Stand-in for ``torchaudio.load(path)``: ``([C, T] float32 in [-1, 1], rate)``."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(audio.T)), rate


# ------------------------------------------------------------------------------------------------
# Official code
# ------------------------------------------------------------------------------------------------
def install_pytorchvideo_shim() -> None:
    """A minimal ``pytorchvideo`` with the pinned commit's ConstantClipsPerVideoSampler."""

    class ConstantClipsPerVideoSampler:
        def __init__(self, clip_duration, clips_per_video, augs_per_clip=1):
            self._clip_duration = Fraction(clip_duration)
            self._clips_per_video = clips_per_video
            self._augs_per_clip = augs_per_clip
            self._current_clip_index = 0
            self._current_aug_index = 0

        def __call__(self, last_clip_time, video_duration, annotation):
            max_possible_clip_start = Fraction(max(video_duration - self._clip_duration, 0))
            uniform_clip = Fraction(max_possible_clip_start, max(self._clips_per_video - 1, 1))
            clip_start_sec = uniform_clip * self._current_clip_index
            clip_index, aug_index = self._current_clip_index, self._current_aug_index
            self._current_aug_index += 1
            if self._current_aug_index >= self._augs_per_clip:
                self._current_clip_index += 1
                self._current_aug_index = 0
            is_last_clip = False
            if (self._current_clip_index >= self._clips_per_video
                    or uniform_clip * self._current_clip_index > max_possible_clip_start):
                self._current_clip_index = 0
                is_last_clip = True
            if is_last_clip:
                self._current_clip_index = 0
                self._current_aug_index = 0
            return (clip_start_sec, clip_start_sec + self._clip_duration, clip_index, aug_index, is_last_clip)

    modules = {name: types.ModuleType(name) for name in
               ("pytorchvideo", "pytorchvideo.data", "pytorchvideo.data.clip_sampling",
                "pytorchvideo.data.encoded_video", "pytorchvideo.transforms")}
    modules["pytorchvideo.data.clip_sampling"].ConstantClipsPerVideoSampler = ConstantClipsPerVideoSampler
    modules["pytorchvideo.data.encoded_video"].EncodedVideo = None
    modules["pytorchvideo"].transforms = modules["pytorchvideo.transforms"]
    modules["pytorchvideo"].data = modules["pytorchvideo.data"]
    sys.modules.update(modules)


def official_imagebind(repo: Path | None, weights: Path, full: bool, device):
    if repo is not None:
        sys.path.insert(0, str(Path(repo).expanduser().resolve()))
    import torchaudio

    torchaudio.load = soundfile_torchaudio_load
    from imagebind import data
    from imagebind.models import imagebind_model
    from imagebind.models.imagebind_model import ModalityType

    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    if full:
        model = imagebind_model.imagebind_huge(pretrained=False)
        model.load_state_dict(state)
    else:
        small = dict(vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=1, text_embed_dim=32,
                     text_num_blocks=1, text_num_heads=1, depth_embed_dim=32, depth_num_blocks=1,
                     depth_num_heads=1, thermal_embed_dim=32, thermal_num_blocks=1, thermal_num_heads=1,
                     imu_embed_dim=32, imu_num_blocks=1, imu_num_heads=1)
        model = imagebind_model.ImageBindModel(out_embed_dim=1024, audio_drop_path=0.1, **small)
        audio = {k: v for k, v in state.items() if ".audio." in k}
        expected = {k for k in model.state_dict() if ".audio." in k}
        if set(audio) != expected:
            raise SystemExit(f"audio keys differ from the official model's: missing {sorted(expected - set(audio))[:5]}, "
                             f"unexpected {sorted(set(audio) - expected)[:5]}")
        model.load_state_dict(audio, strict=False)
    model.eval().to(device)

    def embed(path: Path):
        clips = data.load_and_transform_audio_data([str(path)], device)
        with torch.no_grad():
            return clips[0], model({ModalityType.AUDIO: clips})[ModalityType.AUDIO][0]

    return embed


def official_wav2clip(repo: Path | None, weights: Path, device):
    if repo is not None:
        sys.path.insert(0, str(Path(repo).expanduser().resolve()))
    from wav2clip import embed_audio
    from wav2clip.model.encoder import ResNetExtractor

    checkpoint = torch.load(weights, map_location=device, weights_only=False)  # as torch.hub does
    # wav2clip 0.1.0 (PyPI) reads a flat state dict and its ResNet has no `fc`; the repository's
    # later encoder.py reads checkpoint["state_dict"] and its ResNet has fc (1000 x 512). Try the
    # file as it is, then the other layout (with and without the fc entries).
    flat = checkpoint.get("state_dict", checkpoint)
    no_fc = {k: v for k, v in flat.items() if not k.startswith("audio_encoder.fc.")}
    errors = []
    for variant in (checkpoint, flat, {"state_dict": flat}, no_fc, {"state_dict": no_fc}):
        try:
            model = ResNetExtractor(checkpoint=variant, scenario="frozen", transform=True).to(device)
            break
        except (KeyError, RuntimeError) as e:
            errors.append(f"{type(e).__name__}: {str(e)[:200]}")
    else:
        raise SystemExit("the official ResNetExtractor cannot load " + str(weights) + ":\n" + "\n".join(errors))
    return lambda audio: torch.from_numpy(embed_audio(audio, model))


# ------------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------------
def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    return float((a - b).abs().max()), float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", type=Path, help="audio files (default: generated signals)")
    parser.add_argument("--imagebind-repo", type=Path, help="clone of facebookresearch/ImageBind")
    parser.add_argument("--imagebind-weights", type=Path, help="imagebind_huge.pth")
    parser.add_argument("--official-full-model", action="store_true",
                        help="build imagebind_huge() and load the whole file strictly")
    parser.add_argument("--pytorchvideo-shim", action="store_true",
                        help="stand in for a missing pytorchvideo (pinned commit's clip sampler)")
    parser.add_argument("--wav2clip-repo", type=Path, help="clone of descriptinc/lyrebird-wav2clip "
                        "(default: the installed wav2clip package)")
    parser.add_argument("--wav2clip-weights", type=Path, help="Wav2CLIP.pt")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest allowed |difference|")
    args = parser.parse_args(argv)
    if not args.imagebind_weights and not args.wav2clip_weights:
        parser.error("give --imagebind-weights and/or --wav2clip-weights")
    device = torch.device(args.device)
    if args.pytorchvideo_shim:
        install_pytorchvideo_shim()
    torch.set_grad_enabled(False)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = mono_copies(args.audio, tmp) if args.audio else generate_signals(tmp)
        print(f"torch {torch.__version__}, device {device}, tolerance {args.tol:g}")

        if args.imagebind_weights:
            official = official_imagebind(args.imagebind_repo, args.imagebind_weights, args.official_full_model,
                                          device)
            ours = create_audio_encoder("imagebind", checkpoint=args.imagebind_weights, device=device)
            print("\nImageBind (embeddings at the official scale: mean of 3 clips, each of norm 20)")
            print(f"{'file':28s} {'clips max|d|':>13s} {'emb max|d|':>11s} {'unit max|d|':>11s} {'cosine':>12s}")
            for path in files:
                clips_off, emb_off = official(path)
                audio, rate = read_native(path)
                clips = imagebind_audio_clips(torch.from_numpy(audio), rate).to(device)
                emb = ours.encode(torch.from_numpy(audio)[None].to(device), sample_rate=rate)[0]
                d_clips, _ = compare(clips, clips_off)
                d_emb, cos = compare(emb, emb_off)
                d_unit, _ = compare(emb / emb.norm(), emb_off / emb_off.norm())
                bad = max(d_clips, d_emb) > args.tol
                failures += bad
                print(f"{path.name[:28]:28s} {d_clips:13.2e} {d_emb:11.2e} {d_unit:11.2e} {cos:12.9f}"
                      f"{'  FAIL' if bad else ''}")

        if args.wav2clip_weights:
            official = official_wav2clip(args.wav2clip_repo, args.wav2clip_weights, device)
            ours = create_audio_encoder("wav2clip", checkpoint=args.wav2clip_weights, device=device)
            print("\nWav2CLIP (official output, before normalisation; 16 kHz input)")
            print(f"{'file':28s} {'max|d|':>11s} {'cosine':>12s}")
            waves = {}
            for path in files:
                audio = ours.load_waveform(path)  # 16 kHz mono float32, what both models receive
                waves[path.name] = audio
                emb_off = official(audio)[0]
                emb = ours.encode(torch.from_numpy(audio)[None].to(device))[0]
                d, cos = compare(emb, emb_off)
                bad = d > args.tol * max(1.0, float(emb_off.abs().max()))
                failures += bad
                print(f"{path.name[:28]:28s} {d:11.2e} {cos:12.9f}{'  FAIL' if bad else ''}")
            # a batch: the official standardisation uses the whole batch's statistics, which our
            # normalize="batch" reproduces (the default, "per_input", gives each file its one-file result)
            length = min(len(w) for w in waves.values())
            if length > 256 and len(waves) > 1:
                batch = np.stack([w[:length] for w in waves.values()])
                ours.normalize = "batch"
                d, cos = compare(ours.encode(torch.from_numpy(batch).to(device)), official(batch))
                ours.normalize = "per_input"
                bad = d > args.tol * max(1.0, float(official(batch).abs().max()))
                failures += bad
                print(f"{f'batch of {len(batch)} x {length}':28s} {d:11.2e} {cos:12.9f}{'  FAIL' if bad else ''}")
    print(f"\n{'all within tolerance' if not failures else f'{failures} comparison(s) out of tolerance'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
