"""benchmarks/world_model_probe.py: its reward and episode-end statistics and the AUC by hand, and a
run through it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.benchmarks.scripts import load_script

from twm.config_files import load_config
from twm.replay import ReplayBuffer
from twm.training.trainer import Trainer

SCRIPT, probe_mod = load_script("world_model_probe.py")


def test_auc_by_hand() -> None:
    # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 > 0.1, 0.35 < 0.4, 0.8 > both: 3 of 4 pairs.
    assert probe_mod.auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    # A tie counts half; every positive first is 1, last is 0.
    assert probe_mod.auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert probe_mod.auc(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
    assert probe_mod.auc(np.array([3.0, 2.0, 1.0]), np.array([0, 0, 1])) == 0.0
    # Ties inside each class change nothing: positives {2, 2} over negatives {1, 1, 3}: 4 of 6 pairs.
    assert probe_mod.auc(np.array([2.0, 2.0, 1.0, 1.0, 3.0]), np.array([1, 1, 0, 0, 0])) == pytest.approx(
        4 / 6
    )
    assert math.isnan(probe_mod.auc(np.array([1.0, 2.0]), np.array([0, 0])))


def test_end_stats_by_hand() -> None:
    # Chances 0.1 / 0.2 / 0.6 / 0.1, the third step terminated: 0.6 on it, 0.4 / 3 on the others, and
    # it outranks all three: AUC 1.
    r = probe_mod.end_stats(np.array([0.1, 0.2, 0.6, 0.1]), np.array([0, 0, 1, 0]))
    assert r["end_pred"] == pytest.approx(0.25) and r["end_real"] == 0.25
    assert r["end_pred_on_terminal"] == pytest.approx(0.6) and r["end_pred_elsewhere"] == pytest.approx(0.4 / 3)
    assert r["end_auc"] == 1.0
    # A calibrated average that cannot tell which step ends: the same chance everywhere reads AUC 0.5.
    flat = probe_mod.end_stats(np.full(4, 0.25), np.array([0, 0, 1, 0]))
    assert flat["end_pred"] == pytest.approx(flat["end_real"]) and flat["end_auc"] == 0.5
    # No terminations in the sample: nothing to rank, nothing on terminal steps.
    none = probe_mod.end_stats(np.array([0.1, 0.2]), np.array([0, 0]))
    assert math.isnan(none["end_auc"]) and math.isnan(none["end_pred_on_terminal"])


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


def test_real_windows_by_hand() -> None:
    # Ten steps: rewards 0..9 / 10; step 3 terminates its episode, step 7 is cut by a time limit.
    buf = ReplayBuffer(10, frame_stack=1, frame_shape=(2, 2))
    for i in range(10):
        buf.add(np.zeros((2, 2), np.uint8), 0, i / 10, terminated=i == 3, truncated=i == 7)
    lengths, sums, terminated = probe_mod.real_windows(buf, np.array([0, 2, 4, 5]), 3)
    # From 0: steps 0, 1, 2 (no end). From 2: steps 2, 3 (terminated at 3). From 4: 4, 5, 6.
    # From 5: 5, 6, 7 (cut by the time limit at 7, which is not a termination).
    assert lengths.tolist() == [3, 2, 3, 3]
    assert sums == pytest.approx([0.3, 0.5, 1.5, 1.8])
    assert terminated.tolist() == [False, True, False, False]


def test_expected_reward_and_end_by_hand() -> None:
    rewards = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 4.0]])
    continues = np.array([[0.5, 0.5, 0.5], [1.0, 0.25, 0.5]])
    reward, end = probe_mod.expected_reward_and_end(rewards, continues, np.array([3, 2]))
    # Window 0: 1 + 0.5 * 1 + 0.25 * 1; ends within 3 steps with 1 - 0.125.
    # Window 1 (cut after 2 steps): 0 + 1.0 * 2; ends with 1 - 1.0 * 0.25.
    assert reward == pytest.approx([1.75, 2.0]) and end == pytest.approx([0.875, 0.75])


def test_replayed_actions_play_their_columns() -> None:
    actor = probe_mod.ReplayedActions(torch.tensor([[2, 0, 1], [1, 1, 0]]))
    z = torch.zeros(2, 4)
    assert [actor.sample(z).tolist() for _ in range(3)] == [[2, 1], [0, 1], [1, 0]]


@pytest.mark.slow
def test_probe_reads_a_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["train.total_steps=150", "train.budget=5000", "train.checkpoint_interval=50"]
    cfg = load_config("smoke", ["env.game=catch", *settings])
    Trainer(cfg, run_dir, device="cpu", progress=False).run()
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(run_dir),
            "--batches",
            "3",
            "--batch-size",
            "4",
            "--starts",
            "8",
            "--recent",
            "100",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    T = cfg.replay.sequence_length
    assert r["steps"] == 3 * 4 * T and r["interactions"] == 150
    assert 0 < r["moved_pixel_share"] < 1 and 0 <= r["recon_err_still"] < 1
    assert 0 <= r["end_real"] <= 1 and 0 <= r["end_pred"] <= 1
    assert 0 <= r["end_pred_elsewhere"] <= 1 and (math.isnan(r["end_auc"]) or 0 <= r["end_auc"] <= 1)
    # Windows of the run's horizon among the last 100 of its 150 steps; a window is cut at its
    # episode's end, and catch pays once a game, so the game paid at most tanh(1) a window.
    assert r["imagination_windows"] == 8 and r["imagination_horizon"] == cfg.actor_critic.horizon
    assert r["imagination_from"] == 150 - 100
    assert abs(r["real_reward"]) <= np.tanh(1.0) + 1e-6
    for key in ("real_end_share", "replayed_imagined_end", "policy_imagined_end", "teacher_end"):
        assert 0 <= r[key] <= 1
    for key in ("replayed_imagined_reward", "policy_imagined_reward", "teacher_reward"):
        assert math.isfinite(r[key])
    # Per step of the window: H means each; the game's are means of catch's rewards (0 or +-tanh(1)).
    for key in ("per_step_real", "per_step_teacher", "per_step_replayed"):
        assert len(r[key]) == cfg.actor_critic.horizon and all(math.isfinite(v) for v in r[key])
    assert all(abs(v) <= np.tanh(1.0) + 1e-6 for v in r["per_step_real"])
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
    gaussian = subprocess.run(  # smoke's reward head is the paper's Gaussian: nothing to read as a mean
        [sys.executable, str(SCRIPT), str(run_dir), "--read-mean"], capture_output=True, text=True
    )
    assert gaussian.returncode == 2 and "two-hot" in gaussian.stderr and "Traceback" not in gaussian.stderr


def test_read_mean_changes_only_the_reward_predictions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["train.total_steps=150", "train.budget=5000", "train.checkpoint_interval=50"]
    cfg = load_config("smoke", ["env.game=catch", "dynamics.reward_head=twohot", *settings])
    Trainer(cfg, run_dir, device="cpu", progress=False).run()
    kwargs = dict(batches=2, batch_size=4, seed=0, starts=8, recent=100)
    plain = probe_mod.probe(str(run_dir), **kwargs)
    mean = probe_mod.probe(str(run_dir), **kwargs, read_mean=True)
    for key in ("real_reward", "per_step_real", "end_pred", "recon_err_moved", "rewarded_share"):
        assert plain[key] == mean[key], key
    assert plain["teacher_reward"] != mean["teacher_reward"]
