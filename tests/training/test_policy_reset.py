"""actor_critic.reset_every: new actor-critic weights in place, then policy-only updates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from builders import NUM_ACTIONS, SWITCH_OVERRIDES, counting_compiled_graphs, smoke
from twm.agent import Agent
from twm.config import Config
from twm.config_files import load_config
from twm.models.actor_critic import Actor, Critic
from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
from twm.training.logger import read_metrics
from twm.training.trainer import Trainer
from twm.update import Learner

POLICY = ("actor.", "critic.", "slow_critic.")


def trained_learner(cfg: Config, updates: int = 2) -> Learner:
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    for i in range(updates):
        learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", i), sampler, None)
    return learner


def test_a_reset_draws_the_constructors_weights_from_its_seed_in_place() -> None:
    cfg = smoke(*SWITCH_OVERRIDES)  # with a slow critic and two-hot critic
    learner = trained_learner(cfg)
    agent = learner.agent
    before = {k: v.clone() for k, v in agent.state_dict().items()}

    def policy_params() -> list[torch.Tensor]:
        return [p for m in (agent.actor, agent.critic, agent.slow_critic) for p in m.parameters()]

    params = policy_params()
    rng = torch.get_rng_state()
    learner.reset_policy(seed=123)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's stream is not touched
    # Known answer: the constructors' weights under torch.manual_seed(seed).
    torch.manual_seed(123)
    actor = Actor(cfg.actor_critic, cfg.policy_input_dim, NUM_ACTIONS)
    critic = Critic(cfg.actor_critic, cfg.policy_input_dim)
    for module, fresh in ((agent.actor, actor), (agent.critic, critic), (agent.slow_critic, critic)):
        for p, q in zip(module.parameters(), fresh.parameters(), strict=True):
            assert torch.equal(p, q)
    # In place: the same tensors (a captured update's regions read them), the world model untouched.
    assert all(a is b for a, b in zip(params, policy_params(), strict=True))
    after = agent.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith(POLICY))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("actor."))
    # Adam starts again: zero moments and step counts, the same state tensors.
    for name in ("actor", "critic"):
        states = learner.optimizers[name].state.values()
        assert states and all(torch.count_nonzero(v) == 0 for s in states for v in s.values())
    for name in ("obs", "dyn"):
        assert any(
            torch.count_nonzero(v) > 0 for s in learner.optimizers[name].state.values() for v in s.values()
        )


def test_a_policy_update_steps_actor_and_critic_only() -> None:
    cfg = smoke(*SWITCH_OVERRIDES)
    learner = trained_learner(cfg)
    before = {k: v.clone() for k, v in learner.agent.state_dict().items()}
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    metrics = learner.policy_update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 7), sampler, None)
    assert {"ac/actor_loss", "ac/critic_loss", "ac/actor_grad_norm", "ac/critic_grad_norm"} <= metrics.keys()
    after = learner.agent.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"actor", "critic", "slow_critic", "return_normalizer"}  # not the world model


def test_a_captured_learner_resets_without_recompiling() -> None:
    cfg = load_config(
        "smoke",
        [
            "env.game=catch",
            "train.capture=true",
            "train.compile_backend=aot_eager",
            "train.optimizer_impl=foreach",
            "actor_critic.fresh_pool=4",
        ],
    )
    torch._dynamo.reset()
    try:
        with counting_compiled_graphs() as compiled:
            learner = trained_learner(cfg, updates=3)  # the first two compile
            graphs = compiled["graphs"]
            sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
            learner.reset_policy(seed=5)
            learner.policy_update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 8), sampler, None)
            for i in range(3):
                learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 10 + i), sampler, None)
            assert compiled["graphs"] == graphs
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
def test_a_run_resets_its_policy_on_schedule(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = ["train.total_steps=300", "train.budget=5000", "train.checkpoint_interval=100"]
    reset = ["actor_critic.reset_every=50", "actor_critic.reset_updates=2"]
    cfg = smoke(*settings, *reset)
    Trainer(cfg, tmp_path / "run", device="cpu", progress=False).run()
    err = capfd.readouterr().err
    starts = [int(line.split(" at ")[1].split()[0]) for line in err.splitlines() if "new weights" in line]
    # Every 50 interactions of training (the prefill, 100, has no policy to reset), not at the end.
    assert cfg.train.prefill_steps == 100 and starts == [150, 200, 250], err
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    timed = [r for r in rows if "time/act" in r]
    assert timed[-1]["time/policy_reset"] > 0
