"""Benchmark evaluation, one concern per module:

- ``run``: :class:`EvalOptions`, :func:`evaluate` (the run: load models, explain, score, merge,
  summarise), the run folder and its resume, the defaults (:func:`resolve_defaults`);
- ``results``: the run folder's row files (torn lines, strict JSON) and how figures print;
- ``targets``: where a clip's target comes from (:class:`AudioTargets`, :class:`TextTargets`);
- ``boxes``, ``masks``, ``sound_following``: the built-in scoring kinds (``avlegrad.scoring``) of
  the box, segmentation and sound-following benchmarks;
- ``audio``: the audio-side run (``eval.py --explain audio``), scored in the offline world.

Each public name below is loaded from its module on first use, so importing one module (e.g. a
scoring kind) does not import the others.
"""
_LAZY = {
    "EvalOptions": "run", "evaluate": "run", "resolve_defaults": "run", "default_root": "run",
    "format_table": "run", "scoring_for": "run", "DEFAULT_AUDIO_ENCODER": "run",
    "load_results": "results",
    "AudioTargets": "targets", "TextTargets": "targets",
    "BoxScoring": "boxes", "MaskScoring": "masks", "SoundFollowingScoring": "sound_following",
    "evaluate_audio_side": "audio", "format_audio_table": "audio",
}

__all__ = list(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'avlegrad.eval' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
