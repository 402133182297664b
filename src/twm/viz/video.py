"""One evaluation episode as a video (``twm eval RUN --video FILE.mp4``, ``twm.load(...).evaluate(video=)``).

The episode is an eval-mode game (docs/method.md, "The Atari 100k protocol") played by the agent with sampled actions from
its own generator seeded with ``seed``; each frame is what the agent saw (the newest frame of its
observation), enlarged ``scale`` times, with the step and the raw score so far as a caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twm.envs import make_env, newest_frame
from twm.seeding import torch_generator
from twm.viz.render import check_animation_path, panel, to_rgb, write_animation

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import EnvConfig

MAX_VIDEO_STEPS = 27_000  # the Atari time limit: an episode that never ends stops here


def record_episode(
    agent: Agent,
    env_cfg: EnvConfig,
    out: str | Path,
    seed: int,
    *,
    fps: float = 15.0,
    scale: int = 4,
    max_steps: int = MAX_VIDEO_STEPS,
) -> dict[str, float | int | str]:
    """Play one eval episode and write it to ``out`` (.mp4 or .gif); its score, steps and path."""
    path = check_animation_path(out)
    generator = torch_generator(seed, agent.device)
    memory = agent.acting_memory(1)
    env = make_env(env_cfg, "eval", seed)
    channels = env_cfg.frame_channels
    frames: list[np.ndarray] = []
    score, steps = 0.0, 0

    def caption(obs: np.ndarray) -> np.ndarray:
        frame = newest_frame(obs, channels)
        if channels > 1:
            frame = np.ascontiguousarray(np.moveaxis(frame, 0, -1))  # (3, 64, 64) -> (64, 64, 3)
        return panel(to_rgb(frame), [f"step {steps}  score {score:g}"], scale)

    was_training = agent.training
    agent.eval()
    try:
        obs, _ = env.reset()
        frames.append(caption(obs))
        done = False
        while not done and steps < max_steps:
            action = int(np.asarray(agent.act(obs[None], generator, memory))[0])
            obs, reward, terminated, truncated, info = env.step(action)
            score += float(info.get("raw_reward", reward))
            steps += 1
            done = bool(terminated or truncated)
            if memory is not None:
                memory.record([float(reward)], [done])
            frames.append(caption(obs))
    finally:
        env.close()
        agent.train(was_training)
    write_animation(path, frames, fps)
    return {"out": str(path), "score": score, "steps": steps, "frames": len(frames)}
