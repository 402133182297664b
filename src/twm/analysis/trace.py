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

from twm.envs import action_meanings_of
from twm.training.evaluation import MAX_EPISODE_STEPS, play_episode

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import EnvConfig, EvalPolicy


def trace_episode(
    agent: Agent, env_cfg: EnvConfig, seed: int, max_steps: int = MAX_EPISODE_STEPS, policy: EvalPolicy = "sample"
) -> list[dict[str, Any]]:
    """Play one eval-mode episode of ``env_cfg`` seeded with ``seed``, acting by ``policy`` (sampled
    or most likely actions); one row per step (see module)."""
    names = action_meanings_of(env_cfg)
    rows: list[dict[str, Any]] = []
    for step in play_episode(agent, env_cfg, seed, max_steps, look=agent.policy_view, policy=policy):
        probs, values = step.seen
        row: dict[str, Any] = {
            "step": len(rows) + 1,
            "action": step.action,
            "action_name": names[step.action],
            "value": float(values[0]),
        }
        row.update({f"p_{name}": float(p) for name, p in zip(names, probs[0].tolist(), strict=True)})
        row.update({"reward": step.reward, "raw_reward": step.raw_reward, "score": step.score, "done": int(step.done)})
        rows.append(row)
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
