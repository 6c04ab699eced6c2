"""Library errors name EvalOptions fields, never command-line flags; eval.py says them as flags."""
import dataclasses
import re

import pytest
import torch

from avlegrad.eval_cli import cli_wording, flag_of, parse_args
from avlegrad.eval.run import EvalOptions, _load_models, evaluate


@pytest.mark.parametrize("opts, field", [
    (EvalOptions(dataset="synthetic", target="audio", audio_encoder=None, model="m", pretrained="none"), "audio_encoder"),
    (EvalOptions(dataset="vggsound", confidence="cosine", methods=["center"]), "confidence"),
    (EvalOptions(dataset="vggsound", seg_metrics=["denseav-global"], methods=["center"]), "seg_metrics"),
    (EvalOptions(dataset="synthetic", limit=0, methods=["center"]), "limit"),
    (EvalOptions(dataset="synthetic", faithfulness=True, methods=["center"]), "faithfulness"),
])
def test_library_errors_name_fields_not_flags(opts, field):
    with pytest.raises(ValueError) as e:
        if opts.target == "audio" and not opts.audio_encoder:
            _load_models(opts, torch.device("cpu"))
        else:
            evaluate(opts)
    message = str(e.value)
    assert f"`{field}" in message and "--" not in message, message
    assert flag_of(field) in cli_wording(message)


def test_every_flag_named_by_the_wording_is_a_flag_of_eval_py(capsys):
    """cli_wording turns each EvalOptions field into a flag eval.py accepts."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    flags = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))
    for field in dataclasses.fields(EvalOptions):
        assert cli_wording(f"`{field.name}` x") == f"{flag_of(field.name)} x"
        assert flag_of(field.name) in flags, field.name
    assert cli_wording("`target=text` and `nope` and `split=extended`") == "--target text and `nope` and --split extended"
