"""Library errors name options and arguments, never command-line flags; each command line says
them as its flags (eval.py, localize, analyze)."""
import ast
import dataclasses
import re
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------
# every library module: no error text holds a flag
# ------------------------------------------------------------------------------------------------
PACKAGE = Path(__file__).resolve().parents[1] / "avlegrad"
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# the command lines themselves (their errors are said to their users) and their parsers
COMMAND_MODULES = {"eval_cli.py", "cli.py", "app.py", "train/cli.py"}
COMMAND_FUNCTIONS = {"main", "cli", "parse_args", "build_parser"}
KNOWN: set[str] = set()  # modules allowed to word errors with flags (none today)


def flag_texts_in_raises(path: Path):
    """``(line, text)`` of each string constant holding a flag inside a ``raise`` (f-string parts
    included), outside the command functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_command: bool):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_command = in_command or node.name in COMMAND_FUNCTIONS
        if isinstance(node, ast.Raise) and node.exc is not None and not in_command:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and FLAG.search(sub.value):
                    found.append((node.lineno, sub.value))
        for child in ast.iter_child_nodes(node):
            visit(child, in_command)

    visit(tree, False)
    return found


def test_no_library_error_names_a_command_line_flag():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in COMMAND_MODULES or rel in KNOWN:
            continue
        offenders += [f"{rel}:{line}: {text!r}" for line, text in flag_texts_in_raises(path)]
    assert not offenders, "\n".join(offenders)


def test_the_scan_finds_a_flag_in_an_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(x):\n    raise ValueError(f"give --audio-encoder {x}")\n'
                   'def main():\n    raise SystemExit("--help")\n')
    assert flag_texts_in_raises(bad) == [(2, "give --audio-encoder ")]


def test_localize_names_arguments_and_its_command_says_flags(tmp_path, caplog):
    from avlegrad import localize

    with pytest.raises(ValueError) as e:
        localize.Localizer.from_names()
    message = str(e.value)
    assert "`audio_encoder`" in message and "`target_text`" in message and "--" not in message
    assert localize.main([str(tmp_path / "x.mp4"), "-o", str(tmp_path / "out")]) == 2
    assert "give --audio-encoder (a name or checkpoint: localize the sound) or --target-text" in caplog.text


def test_analyze_names_arguments_and_its_command_says_flags(tmp_path, caplog):
    from avlegrad import analyze

    opts = EvalOptions(dataset="synthetic", root=str(tmp_path / "none"))
    for kwargs, name in (({"steps": 0}, "steps"), ({"faith_batch": 0}, "faith_batch"),
                         ({"heads_clip": -1}, "heads_clip")):
        with pytest.raises(ValueError) as e:
            analyze.run_analysis(opts, tmp_path / "o", **kwargs)
        assert f"`{name}` must be an integer" in str(e.value) and "--" not in str(e.value)
    assert analyze.main(["--dataset", "synthetic", "--root", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                         "--heads-clip", "-1"]) == 2
    assert "--heads-clip must be an integer >= 0, got -1" in caplog.text


def test_the_flags_of_a_parser_are_its_long_options():
    import argparse

    from avlegrad.cli import flag_wording, parser_flags

    parser = argparse.ArgumentParser()
    parser.add_argument("-o", "--out")
    parser.add_argument("--target-text")
    parser.add_argument("inputs", nargs="*")
    assert parser_flags(parser) == {"help": "--help", "out": "--out", "target_text": "--target-text"}
    assert flag_wording("`target_text=a dog` or `out` but not `inputs`", parser_flags(parser)) == \
        "--target-text a dog or --out but not `inputs`"


# ------------------------------------------------------------------------------------------------
# train: the library names run()'s arguments, train.py says its flags
# ------------------------------------------------------------------------------------------------
def test_train_errors_name_arguments_in_the_library_and_flags_in_the_command(tmp_path, caplog):
    import logging

    from avlegrad.train import cli as train_cli
    from avlegrad.train.config import apply_override
    from avlegrad.train.trainer import check_output_dir, resolve_run

    with pytest.raises(ValueError) as e:
        apply_override({}, "train.lr")
    assert "`overrides`" in str(e.value) and "--" not in str(e.value)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(ValueError) as e:
        check_output_dir(tmp_path)
    assert "`resume`" in str(e.value) and "`overwrite`" in str(e.value) and "--" not in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        resolve_run(None, [f"output_dir={tmp_path}"], resume=str(tmp_path / "none.pt"))
    assert "`resume`" in str(e.value)

    caplog.set_level(logging.INFO, logger="avlegrad")
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path}\n")
    assert train_cli.cli(["--config", str(config), "--set", "train.lr"]) == 2
    assert "--set 'train.lr': expected key=value" in caplog.text and "`overrides`" not in caplog.text
    caplog.clear()
    assert train_cli.cli(["--config", str(config), "--resume", str(tmp_path / "none.pt")]) == 2
    assert f"--resume {tmp_path / 'none.pt'}: checkpoint not found" in caplog.text


def test_train_warnings_say_flags_in_the_command(tmp_path, caplog):
    """A warning of the library (no checkpoint to resume from) reaches train.py's user as a flag;
    the filter is gone after the call."""
    import logging

    from avlegrad.train import cli as train_cli
    from avlegrad.train import trainer

    caplog.set_level(logging.INFO, logger="avlegrad")
    seen = {}

    def fake_run(config, overrides, resume, overwrite=False):
        trainer.resolve_run(config, overrides, resume)  # logs the warning: no last.pt in output_dir
        seen["filters"] = list(logging.getLogger("avlegrad.train.trainer").filters)
        return {"rank": 1}

    orig = train_cli.run
    train_cli.run = fake_run
    try:
        config = tmp_path / "run.yaml"
        config.write_text(f"output_dir: {tmp_path}\n")
        train_cli.main(["--config", str(config), "--resume"])
    finally:
        train_cli.run = orig
    assert "--resume: no checkpoint at" in caplog.text and "`resume`" not in caplog.text
    assert seen["filters"] and not logging.getLogger("avlegrad.train.trainer").filters
