"""One evaluation episode as a video (``twm eval RUN --video FILE.mp4``, ``twm.load(...).evaluate(video=)``).

The episode is an eval-mode game (docs/method.md, "The Atari 100k protocol") played by the agent with sampled actions from
its own generator seeded with ``seed``; each frame is what the agent saw (the newest frame of its
observation), enlarged ``scale`` times, with the step and the raw score so far as a caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twm.training.evaluation import MAX_EPISODE_STEPS, play_episode
from twm.viz.render import check_animation_path, newest_image, panel, to_rgb, write_animation

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import EnvConfig, EvalPolicy



def record_episode(
    agent: Agent,
    env_cfg: EnvConfig,
    out: str | Path,
    seed: int,
    *,
    fps: float = 15.0,
    scale: int = 4,
    max_steps: int = MAX_EPISODE_STEPS,
    policy: EvalPolicy = "sample",
) -> dict[str, float | int | str]:
    """Play one eval episode (``play_episode``, acting by ``policy``) and write it to ``out`` (.mp4 or
    .gif); its score, steps and path."""
    path = check_animation_path(out)
    channels = env_cfg.frame_channels
    frames: list[np.ndarray] = []
    score, steps = 0.0, 0

    def caption(obs: np.ndarray) -> np.ndarray:
        frame = newest_image(obs[None], channels, env_cfg.observation)[0]  # (64, 64) gray or (64, 64, 3)
        return panel(to_rgb(frame), [f"step {steps}  score {score:g}"], scale)

    for step in play_episode(agent, env_cfg, seed, max_steps, policy=policy):
        if not frames:
            frames.append(caption(step.obs))  # the start: step 0, score 0
        score, steps = step.score, steps + 1
        frames.append(caption(step.next_obs))
    write_animation(path, frames, fps)
    return {"out": str(path), "score": score, "steps": steps, "frames": len(frames)}
