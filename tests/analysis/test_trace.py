"""twm.analysis.trace and Agent.policy_view: the traced episode is the video's, its numbers the networks'."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.builders import smoke

from twm.agent import Agent
from twm.analysis.trace import trace_episode, write_trace
from twm.envs import make_env
from twm.imagination import observe_latent
from twm.seeding import torch_generator
from twm.viz.video import record_episode


def agent_for(*overrides: str) -> Agent:
    torch.manual_seed(0)
    cfg = smoke(*overrides)
    return Agent(cfg, make_env(cfg.env, "eval", 0).num_actions)


@pytest.mark.parametrize("inputs", ["z", "zh"])
def test_policy_view_is_the_actor_and_critic_and_draws_nothing(inputs: str) -> None:
    agent = agent_for(f"actor_critic.inputs={inputs}")
    obs = np.random.default_rng(0).integers(0, 256, (3, agent.cfg.env.frame_stack, 64, 64), dtype=np.uint8)
    memory = agent.acting_memory(3)
    if memory is not None:
        memory.h_prev = torch.randn(3, agent.cfg.dynamics.d_model, generator=torch.Generator().manual_seed(1))
        h_before = memory.h_prev.clone()
    probs, values = agent.policy_view(obs, memory)
    agent.eval()
    with torch.no_grad():
        z = observe_latent(agent.world_model.obs_model, torch.as_tensor(obs))
        x = z if memory is None else torch.cat([z, memory.h_prev], dim=-1)
        torch.testing.assert_close(probs, agent.actor.dist(x).probs, rtol=0, atol=1e-7)  # as act samples
        torch.testing.assert_close(values, agent.critic(x), rtol=0, atol=0)
    agent.train()
    assert probs.shape == (3, agent.num_actions) and values.shape == (3,)
    if memory is not None:
        assert torch.equal(memory.h_prev, h_before)  # not advanced
    # The same seed gives the same actions whether or not the policy was viewed first.
    plain_gen, plain_memory = torch_generator(5), agent.acting_memory(3)
    plain = [agent.act(obs, plain_gen, plain_memory) for _ in range(4)]
    viewed_gen, viewed_memory, viewed = torch_generator(5), agent.acting_memory(3), []
    for _ in range(4):
        agent.policy_view(obs, viewed_memory)
        viewed.append(agent.act(obs, viewed_gen, viewed_memory))
    assert all(np.array_equal(a, b) for a, b in zip(plain, viewed, strict=True))


@pytest.mark.parametrize("inputs", ["z", "zh"])
def test_the_trace_is_the_video_episode_step_by_step(inputs: str, tmp_path: Path) -> None:
    agent = agent_for(f"actor_critic.inputs={inputs}")
    rows = trace_episode(agent, agent.cfg.env, seed=11)
    video = record_episode(agent, agent.cfg.env, tmp_path / "episode.gif", seed=11)
    assert len(rows) == video["steps"] and rows[-1]["score"] == video["score"]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["done"] == 1 and all(r["done"] == 0 for r in rows[:-1])
    assert np.cumsum([r["raw_reward"] for r in rows])[-1] == pytest.approx(rows[-1]["score"])
    names = make_env(agent.cfg.env, "eval", 0).action_meanings
    for r in rows:
        assert sum(r[f"p_{n}"] for n in names) == pytest.approx(1.0, abs=1e-5)
        assert r["action_name"] == names[r["action"]]

    path = write_trace(rows, tmp_path / "trace.csv")
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert len(read) == len(rows) and list(read[0]) == list(rows[0])
    assert float(read[-1]["value"]) == pytest.approx(rows[-1]["value"])
    with pytest.raises(ValueError, match="at least one step"):
        write_trace([], tmp_path / "empty.csv")
