"""Fixtures shared by the test files (plain builders are in ``builders.py``)."""

from __future__ import annotations

import os

import pytest
import torch

from builders import catch_replay, smoke
from twm.config import Config
from twm.replay import ReplayBuffer

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`-n 2` in CI, one worker per core) each worker computes on one thread: two
    # workers of torch's default (one thread per core) would oversubscribe the cores.
    torch.set_num_threads(1)


@pytest.fixture
def smoke_cfg() -> Config:
    """The ``smoke`` preset on the built-in catch game: seconds on a CPU."""
    return smoke()


@pytest.fixture(scope="module")
def filled_catch_replay() -> ReplayBuffer:
    """300 steps of catch with random actions in a 400-step buffer (visit temperature 20).

    Module-scoped: a test that samples from it moves its generator and visit counts; tests that need
    an exact draw reset ``replay.rng`` first.
    """
    return catch_replay(300, capacity=400, visit_temperature=20.0)
