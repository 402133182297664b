"""The agent's update: every network learns, and the actor-critic step follows its advantages."""

from __future__ import annotations

import numpy as np
import torch

from builders import catch_replay
from twm.agent import Agent
from twm.config_files import load_config
from twm.imagination import Rollout
from twm.models.batch import TorchSequenceBatch
from twm.replay import ReplayBuffer
from twm.update import Learner

NUM_ACTIONS = 3


def filled_replay(steps: int = 200) -> ReplayBuffer:
    return catch_replay(steps)


def test_update_changes_every_network_and_reports_metrics() -> None:
    cfg = load_config("smoke", ["env.game=catch"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    replay = filled_replay()
    before = {name: p.clone() for name, p in agent.named_parameters()}
    batch = TorchSequenceBatch.from_numpy(
        replay.sample_sequences(cfg.replay.batch_size, cfg.replay.sequence_length), "cpu"
    )
    metrics = Learner(agent).update(
        batch, lambda n: torch.from_numpy(replay.sample_obs(n)), torch.Generator().manual_seed(0)
    )
    for key in ("obs/decoder_loss", "dyn/loss", "ac/actor_loss", "ac/critic_loss", "ac/return"):
        assert torch.isfinite(metrics[key]), key
    for prefix in (
        "world_model.obs_model.encoder",
        "world_model.obs_model.decoder",
        "world_model.dynamics",
        "actor",
        "critic",
    ):
        changed = [not torch.equal(before[n], p) for n, p in agent.named_parameters() if n.startswith(prefix)]
        assert any(changed), f"{prefix} did not change"


def test_actor_critic_step_prefers_the_rewarded_action() -> None:
    """A bandit in latent space: action 0 pays 1, others 0. The actor's probability of 0 must rise
    and the critic must approach the λ-return of the policy."""
    cfg = load_config(
        "smoke", ["env.game=catch", "actor_critic.actor_lr=1e-3", "actor_critic.critic_lr=1e-3"]
    )
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    learner = Learner(agent)
    B, H = 64, 5
    z = torch.zeros(B, H + 1, cfg.latent_dim)
    z[..., :: cfg.obs_model.classes] = 1.0  # every categorical in class 0: one fixed latent
    gen = torch.Generator().manual_seed(0)

    def p0() -> float:
        with torch.no_grad():
            return float(torch.softmax(agent.actor(z[0, 0]), -1)[0])

    start = p0()
    for _ in range(60):
        actions = agent.actor.sample(z[:, :-1], gen)
        rollout = Rollout(
            z=z,
            actions=actions,
            rewards=(actions == 0).float(),
            discounts=torch.full((B, H), 0.9),
            dones=torch.zeros(B, H, dtype=torch.bool),
            weights=torch.ones(B, H),
            h=torch.zeros(B, H, 1),
        )
        # The actor-critic part of an update (``Learner.update``) on this rollout.
        losses = agent.actor_critic_losses(rollout)
        learner.step([losses.critic_loss, losses.actor_loss], ("critic", "actor"))
        agent.update_slow_critic()
    assert p0() > start + 0.2


def test_pretrain_ac_step_fits_real_returns() -> None:
    cfg = load_config("smoke", ["env.game=catch", "actor_critic.critic_lr=1e-3"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    replay = filled_replay()
    replay.rng = np.random.default_rng(1)
    batch = TorchSequenceBatch.from_numpy(
        replay.sample_sequences_uniform(cfg.actor_critic.num_starts, cfg.actor_critic.horizon), "cpu"
    )
    learner = Learner(agent)
    first = learner.pretrain_ac_step(batch)
    for _ in range(50):
        last = learner.pretrain_ac_step(batch)
    assert last["ac/critic_loss"] < first["ac/critic_loss"]
    # The entropy bonus keeps the pretrained policy close to uniform.
    with torch.no_grad():
        probs = torch.softmax(agent.actor(torch.zeros(1, cfg.latent_dim)), -1)
    assert float(probs.min()) > 0.2
