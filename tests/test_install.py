"""A non-editable install runs the console scripts from any directory, with the offline world's
checkpoints shipped as package data (no checkout needed)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_avlegrad_eval_runs_the_synthetic_benchmark_anywhere(tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the sources (setuptools
    # comes from the package index, as for any pip install of a source tree)
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "runs", "outputs", "datasets", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                              "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    assert (target / "avlegrad" / "assets" / "world" / "audio.pt").is_file()
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "AVLEGRAD_DATA": str(tmp_path / "data"),
           "AVLEGRAD_CACHE": str(tmp_path / "cache")}
    script = target / "bin" / "avlegrad-eval"  # the console script pip wrote, run with this interpreter
    assert script.is_file()
    run = subprocess.run([sys.executable, str(script), "--dataset", "synthetic", "--limit", "4", "--workers", "0",
                          "--method", "legrad"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "legrad" in run.stdout and "cIoU(AP50)" in run.stdout
    assert (elsewhere / "outputs" / "synthetic-test" / "summary.json").is_file()
    where = subprocess.run([sys.executable, "-c", "import avlegrad; print(avlegrad.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(target)), where.stdout
