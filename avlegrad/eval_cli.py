"""Evaluate sound-source localization on a benchmark (``eval.py``, the ``avlegrad-eval`` command).

    python eval.py --dataset vggsound --root /data/vggss   # ImageBind audio + its own ViT-H-14 tower (downloaded once)
    python eval.py --dataset vggsound --root /data/vggss --audio-encoder CKPT --device cuda --dtype bf16
    python eval.py --dataset synthetic          # offline: a generated benchmark, the shipped world models
    torchrun --nproc_per_node 4 eval.py --dataset vggsound ...   # one shard per GPU

Prints N, cIoU (= AP50), mean cIoU and AUC per method, with the centre prior on the same clips,
and writes summary.json + clips.jsonl (+ overlays) to --out; rerunning resumes.
"""
import argparse
import dataclasses
import logging
import sys

from .audio import list_audio_encoders
from .box_metrics import box_metrics_help
from .cli import add_import_flag, flag_wording, import_extensions
from .mask_metrics import mask_metrics_help
from .data.registry import dataset_help
from .download import DownloadError
from .eval.run import DEFAULT_AUDIO_ENCODER, EvalOptions, evaluate, resolve_defaults
from .explain import list_explainers
from .models import DTYPES, WeightsUnavailableError

FLAGS = {"methods": "--method"}  # the EvalOptions fields whose flag is not "--" + the field's name


def flag_of(field: str) -> str:
    """The command-line flag of EvalOptions field ``field`` (``audio_encoder`` -> ``--audio-encoder``)."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def cli_wording(message: str) -> str:
    """A library error in the command line's words: the library names options as EvalOptions
    fields in backquotes (```audio_encoder```, ```target=text```), the command line as flags
    (``--audio-encoder``, ``--target text``). Other text is left as it is."""
    return flag_wording(message, {f.name: flag_of(f.name) for f in dataclasses.fields(EvalOptions)})


def parse_args(argv=None) -> EvalOptions:
    d = EvalOptions()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=d.dataset, help="registered benchmarks (splits): " + dataset_help())
    ap.add_argument("--root", help="dataset folder (default: $AVLEGRAD_DATA/<name>, else ./datasets/<name>)")
    ap.add_argument("--split", default=d.split, help="the dataset's split (listed with --dataset); ade20k-sound "
                    "taco: TACO's image and mask; synthetic interactive: IS3's form, extended: with negatives, "
                    "audio-mixture (--explain audio): a second sound at comparable loudness; "
                    "ade20k-speech test: the spoken word, test-full-prompt: the whole prompt")
    ap.add_argument("--annotations", help="annotation file or folder (default: under root, else the cache)")
    ap.add_argument("--method", default=",".join(d.methods),
                    help="comma-separated methods among the registered explainers: " + ", ".join(list_explainers())
                    + " (the centre prior is always added; the datasets' baselines, e.g. center, are accepted too)")
    ap.add_argument("--model", help="open_clip model name or model-config JSON (default: the audio "
                                    "encoder's image tower, else ViT-B-16)")
    ap.add_argument("--pretrained", help="open_clip tag, checkpoint file, or 'none' for random weights")
    ap.add_argument("--audio-encoder", help="registered audio encoder (" + ", ".join(list_audio_encoders()) + ") "
                    f"or a train.py checkpoint (default for real data: {DEFAULT_AUDIO_ENCODER}, paired with its "
                    "own image tower)")
    ap.add_argument("--target", choices=("audio", "text"), help="what the map explains: the clip's sound "
                    "(needs --audio-encoder) or a text prompt with its class name (default: audio when an "
                    "audio encoder is given, else text)")
    ap.add_argument("--prompt", default=d.prompt, help="text prompt template for --target text")
    ap.add_argument("--layer-index", type=int, default=d.layer_index,
                    help="LeGrad blocks: -n the last n, 0 all, k blocks k.. (default -2)")
    ap.add_argument("--image-size", type=int, help="input size (default: the model's)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--workers", type=int, default=d.workers,
                    help="DataLoader workers decoding clips (default: with a GPU the cores but one, up to 16; "
                         "else up to 4)")
    ap.add_argument("--device", help="cuda | cpu (default: cuda if available)")
    ap.add_argument("--dtype", default=d.dtype, choices=list(DTYPES), help="autocast dtype")
    ap.add_argument("--limit", type=int, help="evaluate only the first N clips")
    ap.add_argument("--out", default=None, help="output folder (default: outputs/<dataset>-<split>, or -2, -3, "
                    "... when that one holds the results of other settings)")
    ap.add_argument("--save-overlays", type=int, default=0, metavar="N", help="save N heatmap overlays")
    ap.add_argument("--overwrite", action="store_true", help="discard earlier results in --out")
    ap.add_argument("--seg-metrics", help="segmentation benchmarks: comma-separated metric variants (default: "
                    "the dataset's published ones), among: " + mask_metrics_help())
    ap.add_argument("--box-metrics", help="box benchmarks: comma-separated metric variants scored beside "
                    "cIoU/AP50/AUC, among: " + box_metrics_help())
    ap.add_argument("--avsbench-batch-frames", type=int, default=d.avsbench_batch_frames,
                    help="frames per batch of AVSBench's official batched mIoU/F (test.sh: 4 videos = 20)")
    ap.add_argument("--confidence", choices=("cosine", "map-max"), help="extended sets: a sample's confidence "
                    "that a visible object sounds, the cosine of the audio and image embeddings (default) or "
                    "the largest value of the explainer's map before normalisation")
    ap.add_argument("--faithfulness", action="store_true", help="also score each method's maps by deletion/"
                    "insertion AUC, positive/negative perturbation AUC and the pointing games, beside a random map")
    ap.add_argument("--faithfulness-steps", type=int, default=d.faithfulness_steps,
                    help="deletion/insertion steps (the perturbation tests use 10%%, ..., 90%%)")
    ap.add_argument("--faithfulness-batch", type=int, default=d.faithfulness_batch,
                    help="perturbed images per forward pass")
    ap.add_argument("--explain", choices=("image", "audio"), default="image",
                    help="audio: LeGrad on the sound's side, scored against the offline world's time-frequency "
                    "ground truth (--dataset synthetic; avlegrad/eval/audio.py)")
    add_import_flag(ap)
    a = ap.parse_args(argv)
    if a.split == "audio-mixture" and a.explain != "audio":
        ap.error("--split audio-mixture is a split of the audio side: add --explain audio")
    if a.explain == "audio":  # its own path: the world's audio ViT, trained and untrained
        opts = EvalOptions(dataset=a.dataset, root=a.root, split=a.split, layer_index=a.layer_index, limit=a.limit,
                           out=a.out)
        opts.explain, opts.audio_vit = "audio", a.audio_encoder
        return opts

    return resolve_defaults(EvalOptions(  # the library's defaults: ImageBind on real data, the offline world
        dataset=a.dataset, root=a.root, split=a.split, annotations=a.annotations,
        methods=[m.strip() for m in a.method.split(",") if m.strip()], model=a.model, pretrained=a.pretrained,
        audio_encoder=a.audio_encoder, target=a.target, prompt=a.prompt, layer_index=a.layer_index,
        image_size=a.image_size, batch_size=a.batch_size, workers=a.workers, device=a.device, dtype=a.dtype,
        limit=a.limit, out=a.out, save_overlays=a.save_overlays,
        overwrite=a.overwrite,
        seg_metrics=[m.strip() for m in a.seg_metrics.split(",") if m.strip()] if a.seg_metrics else None,
        box_metrics=[m.strip() for m in a.box_metrics.split(",") if m.strip()] if a.box_metrics else None,
        avsbench_batch_frames=a.avsbench_batch_frames, confidence=a.confidence, faithfulness=a.faithfulness,
        faithfulness_steps=a.faithfulness_steps, faithfulness_batch=a.faithfulness_batch))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("avlegrad").setLevel(logging.INFO)
    problem = import_extensions(argv)  # before the parser: its help lists the registries
    if problem:
        logging.getLogger("avlegrad").error("%s", problem)
        return 2
    opts = parse_args(argv)
    try:
        if getattr(opts, "explain", "image") == "audio":
            from .eval.audio import run_from_eval

            run_from_eval(opts, opts.audio_vit)
        else:
            evaluate(opts)
    except (ValueError, FileNotFoundError, WeightsUnavailableError, DownloadError) as e:  # user errors: no traceback
        logging.getLogger("avlegrad").error("%s", cli_wording(str(e)))
        return 2
    except KeyboardInterrupt:  # the scored clips are on disk: rerunning the command resumes
        logging.getLogger("avlegrad").error("interrupted; the clips scored so far are kept: rerun the same "
                                            "command to resume")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
