"""benchmarks/world_model_probe.py: its reward statistics by hand, and a run through it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.benchmarks.scripts import load_script

from twm.config_files import load_config
from twm.training.trainer import Trainer

SCRIPT, probe_mod = load_script("world_model_probe.py")


def test_reward_stats_by_hand() -> None:
    target = np.array([0.0, 0.0, 0.0, 1.0])  # mean 0.25, MSE of the mean 0.1875
    perfect = probe_mod.reward_stats(target.copy(), target)
    assert perfect["variance_explained"] == 1.0 and perfect["correlation"] == pytest.approx(1.0)
    assert perfect["rewarded_share"] == 0.25 and perfect["steps"] == 4
    at_mean = probe_mod.reward_stats(np.full(4, 0.25), target)
    assert at_mean["variance_explained"] == 0.0 and math.isnan(at_mean["correlation"])
    half = probe_mod.reward_stats(np.array([0.0, 0.0, 0.0, 0.5]), target)
    # MSE 0.0625 against 0.1875: a third left, two thirds explained.
    assert half["variance_explained"] == pytest.approx(2 / 3)
    assert (half["pred_on_rewarded"], half["target_on_rewarded"], half["pred_on_unrewarded"]) == (
        0.5,
        1.0,
        0.0,
    )
    # CartPole: every step rewarded with tanh(1), as float32: nothing varies, nothing to explain.
    constant = np.full(1000, np.tanh(1.0), dtype=np.float32)
    none = probe_mod.reward_stats(constant + np.float32(1e-4), constant)
    assert math.isnan(none["variance_explained"]) and math.isnan(none["correlation"])
    assert none["rewarded_share"] == 1.0 and math.isnan(none["pred_on_unrewarded"])


@pytest.mark.slow
def test_probe_reads_a_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["train.total_steps=150", "train.budget=5000", "train.checkpoint_interval=50"]
    cfg = load_config("smoke", ["env.game=catch", *settings])
    Trainer(cfg, run_dir, device="cpu", progress=False).run()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--batches", "3", "--batch-size", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    T = cfg.replay.sequence_length
    assert r["steps"] == 3 * 4 * T and r["interactions"] == 150
    assert 0 < r["moved_pixel_share"] < 1 and 0 <= r["recon_err_still"] < 1
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
