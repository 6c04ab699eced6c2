"""avlegrad's public API: every name in __all__ resolves, to the object of its own module."""
import avlegrad


def test_every_public_name_resolves():
    assert {"LeGrad", "create_explainer", "create_audio_encoder", "create_dataset", "evaluate", "list_datasets",
            "list_explainers", "list_audio_encoders", "EvalOptions"} <= set(avlegrad.__all__)
    for name in avlegrad.__all__:
        assert getattr(avlegrad, name) is not None, name
    from avlegrad.data.registry import list_datasets
    from avlegrad.evaluation import evaluate

    assert avlegrad.evaluate is evaluate and avlegrad.list_datasets is list_datasets
    assert "csv-boxes" in avlegrad.list_datasets() and "waveform-cnn" in avlegrad.list_audio_encoders()
    namespace = {}
    exec("from avlegrad import *", namespace)
    assert set(avlegrad.__all__) <= set(namespace)
