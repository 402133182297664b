"""The analytic FLOP counter (twm.perf.flops) against torch.utils.flop_counter on a tiny config.

Tolerance: 1% per part (the counts agree exactly today; the margin only allows for small
counting differences of other torch versions). Paper-config figures are checked against the issue's.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from twm.agent import Agent
from twm.config_files import load_config
from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
from twm.perf.flops import update_flops
from twm.update import Learner

NUM_ACTIONS = 3


def counted_by_torch(cfg) -> tuple[dict[str, int], int]:
    """FLOPs of one update's parts by FlopCounterMode, and the rollout's fresh starts."""
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    batch = synthetic_batch(cfg, NUM_ACTIONS, "cpu")
    gen = torch.Generator().manual_seed(0)
    counts = {}
    counter = FlopCounterMode(display=False)
    counter.__enter__()

    def part_ended(part: str, _: float) -> None:  # each part of the update under its own counter
        nonlocal counter
        counter.__exit__(None, None, None)
        counts[part] = counter.get_total_flops()
        counter = FlopCounterMode(display=False)
        counter.__enter__()

    try:
        metrics = learner.update(batch, synthetic_obs_sampler(cfg, torch.device("cpu")), gen, on_part=part_ended)
    finally:
        counter.__exit__(None, None, None)
    return counts, int(metrics["ac/imagined_dones"])


@pytest.mark.parametrize("kv_cache", [True, False])
@pytest.mark.parametrize("threshold", [0.0, 0.6])  # 0.6: imagined episode ends and fresh starts
def test_analytic_flops_match_torch_flop_counter(kv_cache: bool, threshold: float) -> None:
    cfg = load_config(
        "smoke",
        [
            "env.game=catch",
            f"dynamics.kv_cache={str(kv_cache).lower()}",
            f"actor_critic.discount_threshold={threshold}",
            "actor_critic.horizon=8",  # longer than memory_steps + 1: the window cuts the memory
        ],
    )
    torch_counts, fresh = counted_by_torch(cfg)
    if threshold > 0:
        assert fresh > 0, "the test needs fresh starts"
    ours = update_flops(cfg, NUM_ACTIONS, fresh_starts=fresh)
    for part, expected in torch_counts.items():
        assert ours[part].total == pytest.approx(expected, rel=0.01), part


@pytest.mark.parametrize(
    ("frames", "pictures"),
    [
        (["env.game=minatar/breakout", "env.observation=grid"], ["env.game=minatar/breakout"]),
        (["env.game=gym:CartPole-v1", "env.observation=vector", "env.vector_size=4"], ["env.game=catch"]),
    ],
    ids=["grid", "vector"],
)
def test_analytic_flops_of_grids_and_vectors_match_torch_flop_counter(frames: list[str], pictures: list[str]) -> None:
    cfg = load_config("smoke", frames)
    torch_counts, fresh = counted_by_torch(cfg)
    ours = update_flops(cfg, NUM_ACTIONS, fresh_starts=fresh)
    for part, expected in torch_counts.items():
        assert ours[part].total == pytest.approx(expected, rel=0.01), part
    # The grid nets (or the vector MLPs) are counted, not the picture nets, which cost more here.
    picture_flops = update_flops(load_config("smoke", pictures), NUM_ACTIONS, fresh_starts=fresh)
    assert ours["world_model"].total < picture_flops["world_model"].total


def test_paper_config_flops() -> None:
    """The issue's figures (torch's counter on the original code): WM 1.08, imagination 0.89, AC 0.10
    TFLOP; with the key/value cache the imagination needs about 0.3 TFLOP."""
    cfg = load_config("atari100k")
    plain = update_flops(cfg, 6, kv_cache=False)
    assert plain["world_model"].total / 1e12 == pytest.approx(1.08, abs=0.01)
    assert plain["imagination"].total / 1e12 == pytest.approx(0.89, abs=0.01)
    assert plain["actor_critic"].total / 1e12 == pytest.approx(0.10, abs=0.01)
    cached = update_flops(cfg, 6)
    assert 0.3 < cached["imagination"].total / 1e12 < 0.4  # 0.35: the transformer 0.31, heads and actor
