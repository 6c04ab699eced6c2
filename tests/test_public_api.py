"""avlegrad's public API: every name in __all__ resolves, to the object of its own module."""
from pathlib import Path

import avlegrad


def test_every_public_name_resolves():
    assert {"LeGrad", "create_explainer", "create_audio_encoder", "create_dataset", "evaluate", "list_datasets",
            "list_explainers", "list_audio_encoders", "EvalOptions"} <= set(avlegrad.__all__)
    for name in avlegrad.__all__:
        assert getattr(avlegrad, name) is not None, name
    from avlegrad.data.registry import list_datasets
    from avlegrad.eval import evaluate

    assert avlegrad.evaluate is evaluate and avlegrad.list_datasets is list_datasets
    assert "csv-boxes" in avlegrad.list_datasets() and "waveform-cnn" in avlegrad.list_audio_encoders()
    namespace = {}
    exec("from avlegrad import *", namespace)
    assert set(avlegrad.__all__) <= set(namespace)


def test_the_eval_package_exports_its_public_names_from_their_modules():
    import importlib

    import avlegrad.eval as ev

    assert {"EvalOptions", "evaluate", "resolve_defaults", "load_results", "AudioTargets", "TextTargets",
            "BoxScoring", "MaskScoring", "SoundFollowingScoring"} <= set(ev.__all__)
    for name in ev.__all__:
        module = importlib.import_module(f"avlegrad.eval.{ev._LAZY[name]}")
        assert getattr(ev, name) is getattr(module, name), name
    assert avlegrad.EvalOptions is ev.EvalOptions
    namespace = {}
    exec("from avlegrad.eval import *", namespace)
    assert set(ev.__all__) <= set(namespace)
    package = Path(avlegrad.__file__).parent
    for old in ("evaluation", "segmentation_eval", "sslalignment_eval", "audio_eval"):  # moved, not duplicated
        assert not (package / f"{old}.py").exists(), old
