"""Every random stream of a run, derived from its one seed, and the seeded generators they feed."""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch


class Stream(IntEnum):
    """Independent random streams of a run, derived from its seed (``derive_seed``)."""

    TRAIN_ENV = 0
    REPLAY = 1
    PREFILL_ACTIONS = 2
    AGENT = 3
    EVAL = 4
    FINAL_EVAL = 5
    POLICY_RESET = 6  # new actor-critic weights of actor_critic.reset_every (index: the interaction)


def derive_seed(seed: int, stream: Stream, index: int = 0) -> int:
    """A 32-bit seed for ``stream`` (and e.g. the eval ``index``), independent of the others.

    SeedSequence hashes its whole entropy tuple, so nearby seeds and indices never give
    overlapping or correlated streams (unlike ``seed + index``).
    """
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])


def final_eval_seed(seed: int) -> int:
    """The seed of a run's final evaluation (``twm eval`` uses it by default, to reproduce it)."""
    return derive_seed(seed, Stream.FINAL_EVAL)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed`` (sampling that must not touch the global one)."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def numpy_generator(seed: int) -> np.random.Generator:
    """A numpy generator seeded with ``seed`` (PCG64, so its state saves and restores exactly)."""
    return np.random.Generator(np.random.PCG64(seed))
