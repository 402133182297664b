"""One eval episode, step by step, in numbers: ``twm eval RUN --trace FILE.csv``.

Each row is one real step: the action the policy sampled, the probability it gave every action,
the critic's value of the observation the action was chosen on, the reward the agent learns from
and the game's raw reward, the running score and whether the episode ended. The episode is the
one ``twm eval --video`` records with the same seed (the same generator draws the same actions;
``Agent.policy_view`` draws nothing), so a trace and a video of one seed show one game.

What it is for: telling where a policy gives up. A critic whose value falls to zero many steps
before an episode ends, while the policy puts all its probability on one action, is a policy that
no longer explores the way out (docs/results.md has a MinAtar Breakout example).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twm.envs import make_env
from twm.seeding import torch_generator

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import EnvConfig

MAX_TRACE_STEPS = 27_000  # the Atari time limit: an episode that never ends stops here


def trace_episode(
    agent: Agent, env_cfg: EnvConfig, seed: int, max_steps: int = MAX_TRACE_STEPS
) -> list[dict[str, Any]]:
    """Play one eval-mode episode of ``env_cfg`` seeded with ``seed``; one row per step (see module)."""
    generator = torch_generator(seed, agent.device)
    memory = agent.acting_memory(1)
    env = make_env(env_cfg, "eval", seed)
    names = list(env.action_meanings)
    rows: list[dict[str, Any]] = []
    score = 0.0
    was_training = agent.training
    agent.eval()  # as twm eval --video plays its episode
    try:
        obs, _ = env.reset()
        done = False
        while not done and len(rows) < max_steps:
            probs, values = agent.policy_view(obs[None], memory)
            action = int(np.asarray(agent.act(obs[None], generator, memory))[0])
            obs, reward, terminated, truncated, info = env.step(action)
            raw = float(info.get("raw_reward", reward))
            score += raw
            done = bool(terminated or truncated)
            if memory is not None:
                memory.record([float(reward)], [done])
            row: dict[str, Any] = {
                "step": len(rows) + 1,
                "action": action,
                "action_name": names[action],
                "value": float(values[0]),
            }
            row.update({f"p_{name}": float(p) for name, p in zip(names, probs[0].tolist(), strict=True)})
            row.update({"reward": float(reward), "raw_reward": raw, "score": score, "done": int(done)})
            rows.append(row)
    finally:
        env.close()
        agent.train(was_training)
    return rows


def write_trace(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write ``trace_episode``'s rows as CSV (a header line, then one line per step)."""
    path = Path(path)
    if not rows:
        raise ValueError("a trace needs at least one step")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
