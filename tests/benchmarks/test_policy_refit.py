"""benchmarks/policy_refit.py: a refit changes the actor and critic only, and refuses shape keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.benchmarks.scripts import load_script

from twm.config import ConfigError
from twm.config_files import load_config
from twm.training.checkpoint import CheckpointManager, agent_from_checkpoint
from twm.training.trainer import Trainer

SCRIPT, refit_mod = load_script("policy_refit.py")


def test_only_update_settings_of_the_policy_can_change() -> None:
    captured = ["train.capture=true", "actor_critic.fresh_pool=8", "train.optimizer_impl=foreach"]
    saved = load_config("smoke", ["env.game=catch", *captured])
    cfg = refit_mod.refit_config(saved, ["actor_critic.entropy_coef=0.5", "actor_critic.num_starts=7"])
    assert (cfg.actor_critic.entropy_coef, cfg.actor_critic.num_starts) == (0.5, 7)
    assert cfg.train.capture is False  # the refit is eager
    for refused in ("actor_critic.hidden=8", "actor_critic.inputs=zh", "dynamics.lr=1", "train.seed=3"):
        with pytest.raises(ConfigError, match="only actor_critic"):
            refit_mod.refit_config(saved, [refused])


@pytest.mark.slow
def test_a_refit_trains_actor_and_critic_and_leaves_the_world_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["train.total_steps=150", "train.budget=5000", "train.checkpoint_interval=50"]
    settings += ["actor_critic.slow_critic_rate=0.02"]  # so that there is a slow critic to follow
    Trainer(load_config("smoke", ["env.game=catch", *settings]), run_dir, device="cpu", progress=False).run()
    state, _, _ = CheckpointManager(run_dir).load_latest()
    before = agent_from_checkpoint(state).state_dict()

    seen = {}
    original = refit_mod.evaluate_agent

    def spy(agent, *args, **kwargs):  # keeps the refitted agent's weights at each evaluation
        seen["weights"] = {k: v.clone() for k, v in agent.state_dict().items()}
        return original(agent, *args, **kwargs)

    refit_mod.evaluate_agent = spy
    try:
        result = refit_mod.refit(
            run_dir, ["actor_critic.entropy_coef=0.1"], updates=4, eval_every=2, episodes=2
        )
    finally:
        refit_mod.evaluate_agent = original
    assert [p["updates"] for p in result["curve"]] == [0, 2, 4]
    assert all("mean_score" in p for p in result["curve"]) and "ac/norm_entropy" in result["curve"][-1]
    after = seen["weights"]
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"actor", "critic", "slow_critic"}, changed  # not the world model

    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--set", "dynamics.lr=1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "only actor_critic" in bad.stderr
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
