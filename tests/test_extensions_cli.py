"""``--import MODULE``: every command line imports extensions kept outside the package before it
builds its parser (whose help and choices list the registries)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avlegrad.cli import import_extensions

REPO = Path(__file__).resolve().parents[1]

EXTENSION = '''
import torch
from avlegrad.explain.base import Explainer, register_explainer


@register_explainer("left-half")
class LeftHalf(Explainer):
    """A map that is 1 on the left half of the picture: an explainer kept outside the package."""

    input_resolution = True

    def explain_grid(self, images, targets):
        b, k = targets.shape[:2]
        maps = torch.zeros(b, k, *images.shape[-2:])
        maps[..., : images.shape[-1] // 2] = 1.0
        return maps
'''


def test_import_extensions_reads_both_forms_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the current folder is searched first, as with python -m
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "ext_first.py").write_text("import sys\nsys.modules.setdefault('_ext_order', []).append('first')\n")
    (tmp_path / "ext_second.py").write_text("import sys\nsys.modules['_ext_order'].append('second')\n")
    try:
        assert import_extensions(["--dataset", "x", "--import", "ext_first", "--import=ext_second"]) is None
        assert sys.modules["_ext_order"] == ["first", "second"]
        # after "--" nothing is a flag; a trailing --import is argparse's to refuse
        assert import_extensions(["--", "--import", "not_imported"]) is None
        assert import_extensions(["--import"]) is None
        sys.modules.pop("ext_first")
        assert import_extensions(["--import", "ext_first", "--import"]) is None and "ext_first" in sys.modules
        assert import_extensions(["--import", "no_such_module_here"]) == (
            "--import no_such_module_here: cannot import it (No module named 'no_such_module_here')")
        assert import_extensions(["--import="]).startswith("--import : cannot import it")
        assert import_extensions(["--import", ".relative"]).startswith("--import .relative: cannot import it")
        assert "not a file path" in import_extensions(["--import", "./ext_first.py"])
    finally:
        for name in ("ext_first", "ext_second", "_ext_order"):
            sys.modules.pop(name, None)


@pytest.mark.parametrize("module", ["avlegrad.eval_cli", "avlegrad.train.cli", "avlegrad.localize",
                                    "avlegrad.analyze", "avlegrad.app"])
def test_every_command_imports_first(module, tmp_path, monkeypatch, capsys):
    """Each command imports the --import modules before its parser (then --help shows the flag); an
    abbreviation of the flag, which only argparse would see, is refused."""
    import importlib

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = "ext_" + module.replace(".", "_")
    (tmp_path / f"{name}.py").write_text("LOADED = True\n")
    main = getattr(importlib.import_module(module), "cli", None) or importlib.import_module(module).main
    try:
        with pytest.raises(SystemExit):
            main(["--import", name, "--help"])
        assert name in sys.modules and "--import MODULE" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["--imp", "ext_never_imported", "--help"])
        assert "write --import in full" in capsys.readouterr().err
    finally:
        sys.modules.pop(name, None)


def test_eval_runs_an_explainer_kept_outside_the_package(tmp_path):
    """A user's explainer module in their own folder: `eval.py --import` lists it in --help and scores it."""
    from avlegrad.data.synthetic import generate_synthetic

    root = generate_synthetic(tmp_path / "syn", num_clips=3, seed=3)
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps({"embed_dim": 32, "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64,
                                                                  "layers": 2, "head_width": 16},
                                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                               "layers": 1}}))
    work = tmp_path / "mine"
    work.mkdir()
    (work / "my_explainers.py").write_text(EXTENSION)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "eval.py"), "--import", "my_explainers"]
    shown = subprocess.run(cmd + ["--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "left-half" in shown.stdout
    out = tmp_path / "out"
    run = subprocess.run(cmd + ["--dataset", "synthetic", "--root", str(root), "--model", str(config),
                                "--pretrained", "none", "--workers", "0", "--method", "left-half,legrad",
                                "--out", str(out)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {"left-half", "legrad"} <= set(summary["methods"]) and summary["evaluated"] == 3
    # without the import the method is unknown; a module that is not there is one line, exit 2
    missing = subprocess.run([sys.executable, str(REPO / "eval.py"), "--dataset", "synthetic", "--root", str(root),
                              "--method", "left-half"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "left-half" in missing.stderr
    bad = subprocess.run(cmd[:2] + ["--import", "my_explainerz", "--dataset", "synthetic"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--import my_explainerz: cannot import it" in bad.stderr
    assert "Traceback" not in bad.stderr
