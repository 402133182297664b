"""Pictures written at each evaluation of a training run: reconstructions and an imagined strip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from twm.agent import Agent
from twm.envs import action_meanings_of
from twm.imagination import observe_latent
from twm.replay import ReplayBuffer
from twm.training.evaluation import EvalEvent
from twm.training.logger import MetricsLogger
from twm.viz.dream import context_from_replay, device_generator, dream, eval_mode
from twm.viz.render import grid, newest_image, panel, to_uint8, write_png

IMAGES_DIR = "images"


@torch.no_grad()
def reconstruction_grid(
    agent: Agent, replay: ReplayBuffer, count: int, generator: torch.Generator | None, scale: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random replay observations: the real newest frames over their decoded argmax latents.

    Returns the image (2 rows: real, decoded) and the replay steps shown.
    """
    count = min(count, len(replay))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    steps = torch.randperm(len(replay), generator=generator, device=gen_device)[:count].cpu().numpy()
    steps = np.sort(steps)
    obs = torch.from_numpy(replay.stacked_obs(steps)).to(agent.device)  # (N, S, 64, 64)
    obs_model = agent.world_model.obs_model
    with eval_mode(agent):
        c = obs_model.frame_channels
        decoded = to_uint8(newest_image(obs_model.decode(observe_latent(obs_model, obs)).float(), c, obs_model.observation))
    real = newest_image(obs, c, obs_model.observation)  # (N, 64, 64) or (N, 64, 64, 3)
    top = [panel(real[i], [f"real #{steps[i]}"], scale) for i in range(count)]
    bottom = [panel(decoded[i], ["decoded"], scale) for i in range(count)]
    return grid([top, bottom]), steps


def write_eval_images(
    agent: Agent,
    replay: ReplayBuffer,
    run_dir: str | Path,
    step: int,
    logger: MetricsLogger | None = None,
    generator: torch.Generator | None = None,
    *,
    action_meanings: list[str] | None = None,
    recon_count: int = 8,
    dream_starts: int = 4,
    horizon: int | None = None,
    scale: int = 2,
) -> dict[str, Any]:
    """Write ``images/recon_<step>.png`` and ``images/dream_<step>.png`` (and TensorBoard images).

    - recon: ``recon_count`` random replay observations, real newest frame over the decoded one;
    - dream: ``dream_starts`` rows, each a replay start (up to ``dynamics.memory_steps`` real context
      steps) followed by ``horizon`` (default ``actor_critic.horizon``) steps of the policy in the
      world model; each frame is captioned with the action, the predicted reward and discount.

    Randomness: only ``generator`` (any device) is drawn from, once per image; never the replay
    buffer's sampler or torch's global generator, so calling this does not change the training run.
    The agent's train/eval modes are restored. Returns the file paths and what was drawn.
    """
    if len(replay) < 2:
        raise ValueError(f"the replay buffer holds {len(replay)} steps; eval images need at least 2")
    cfg = agent.cfg
    folder = Path(run_dir) / IMAGES_DIR
    fallback = int(step)
    if action_meanings is None:
        action_meanings = action_meanings_of(cfg.env)

    pick_gen = device_generator(generator, torch.device("cpu"), fallback)
    recon, recon_steps = reconstruction_grid(agent, replay, recon_count, pick_gen, scale)
    recon_path = write_png(folder / f"recon_{step:06d}.png", recon)

    context = context_from_replay(replay, dream_starts, cfg.dynamics.memory_steps, pick_gen)
    sample_gen = device_generator(pick_gen, agent.device, fallback)
    imagined = dream(agent, context, horizon or cfg.actor_critic.horizon, sample_gen, action_meanings)
    strip = imagined.strip(scale)
    dream_path = write_png(folder / f"dream_{step:06d}.png", strip)

    if logger is not None:
        logger.add_image("images/reconstruction", recon, step)
        logger.add_image("images/dream", strip, step)
    return {
        "recon": recon_path,
        "dream": dream_path,
        "recon_steps": recon_steps,
        "dream_actions": imagined.actions,
        "dream_captions": imagined.captions(),
    }


def eval_images_hook(event: EvalEvent) -> None:
    """``Trainer(on_eval=...)``: the pictures of ``train.eval_images`` after each periodic evaluation.

    Draws its samples from a generator of its own (seeded by the interaction count), so the run's
    random streams, and with them an exact resume, do not depend on whether images are written.
    """
    if event.agent.cfg.train.eval_images:
        write_eval_images(
            event.agent,
            event.replay,
            event.run_dir,
            event.interactions,
            event.logger,
            None,
            action_meanings=event.action_meanings,
        )
