"""Pretraining on the prefill data (docs/method.md, "Training loop", step 2): its phases, their lengths and steps.

The released code's three phases, in order: the observation model alone on random frames, then the
dynamics model on real sequences, then the actor-critic on real latent sequences with a pure
entropy bonus for the actor. Each phase's length is its share of ``train.pretrain_budget`` divided
by the samples one of its batches holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from twm.config import Config
from twm.models.batch import TorchSequenceBatch
from twm.replay import ReplayBuffer

if TYPE_CHECKING:
    from twm.update import Learner

PretrainStep = Callable[[], dict[str, Tensor]]


def pretrain_steps(cfg: Config) -> dict[str, int]:
    """Steps of each pretraining phase: its share of the pretrain budget / samples per batch."""
    t, r, ac = cfg.train, cfg.replay, cfg.actor_critic
    return {
        "obs": round(t.pretrain_budget * t.pretrain_obs_fraction / r.obs_batch_size),
        "dyn": round(t.pretrain_budget * t.pretrain_dyn_fraction / (r.batch_size * r.sequence_length)),
        "ac": round(t.pretrain_budget * t.pretrain_ac_fraction / (ac.num_starts * ac.horizon)),
    }


def pretrain_phases(
    cfg: Config, learner: Learner, replay: ReplayBuffer, device: torch.device, generator: torch.Generator
) -> list[tuple[str, int, PretrainStep]]:
    """(name, steps, one step) of each phase, in order."""
    r, ac = cfg.replay, cfg.actor_critic
    # The actor-critic batch needs num_starts distinct real sequences of horizon steps; a tiny
    # prefill may hold fewer (config validation only checks the world-model batch).
    ac_batch = min(ac.num_starts, replay.num_valid_starts(ac.horizon))

    def obs_step() -> dict[str, Tensor]:
        frames = torch.from_numpy(replay.sample_obs(r.obs_batch_size)).to(device)
        return learner.pretrain_obs_step(frames, generator)

    def dyn_step() -> dict[str, Tensor]:
        batch = replay.sample_sequences_uniform(r.batch_size, r.sequence_length)
        return learner.pretrain_dyn_step(TorchSequenceBatch.from_numpy(batch, device), generator)

    def ac_step() -> dict[str, Tensor]:
        batch = replay.sample_sequences_uniform(ac_batch, ac.horizon)
        return learner.pretrain_ac_step(TorchSequenceBatch.from_numpy(batch, device), generator)

    steps = pretrain_steps(cfg)
    return [("obs", steps["obs"], obs_step), ("dyn", steps["dyn"], dyn_step), ("ac", steps["ac"], ac_step)]
