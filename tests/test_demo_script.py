"""``make demo``'s script (scripts/demo.sh) on a tiny budget: a fresh run, then a finished one.

The script imports twm in a here-document, so a module that moves breaks it without breaking any
Python test; this runs it for real (smoke preset, ~30 s on one thread).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent  # the script wants VENV/bin/python


def run_demo(run_dir: Path, *train_args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DREAM_ARGS": "--horizon 4 --starts 1"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), str(VENV), str(run_dir), *train_args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


@pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="not running from a virtual environment")
def test_demo_trains_dreams_and_then_only_reports(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    first = run_demo(run_dir, "--preset", "smoke", "--set", "train.total_steps=200", "--no-progress")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert final["game"] == "catch" and final["interactions"] == 200
    assert (run_dir / "dream.gif").stat().st_size > 0
    assert "final score" in first.stdout and "training: twm train --game catch" in first.stdout

    again = run_demo(run_dir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "holds a finished run: not training again" in again.stdout
    assert "dream GIF already there" in again.stdout and "final score" in again.stdout
