"""The training bar's ETA: the work left at its measured rates, not a rate of interactions."""

from __future__ import annotations

import pytest

from twm.training.output import WorkClock


def test_eta_is_the_work_left_at_measured_rates() -> None:
    clock = WorkClock()
    assert clock.eta(10, 0) is None  # no step measured yet
    clock.add_steps(2.0, 100)  # 0.02 s per step
    assert clock.eta(50, 0) == pytest.approx(1.0)
    assert clock.eta(50, 5) is None  # updates left, none measured
    clock.add_updates(3.0, 10)  # 0.3 s per update
    clock.add_eval(4.0, 2)  # 2 s per evaluation episode
    assert clock.eta(50, 5, episodes_left=3) == pytest.approx(50 * 0.02 + 5 * 0.3 + 3 * 2.0)


def test_a_cheap_prefill_does_not_shorten_the_training_eta() -> None:
    """Prefill steps are not timed: only training steps (act + env) set the per-step rate."""
    clock = WorkClock()
    clock.add_steps(1.0, 100)  # 10 ms per training step
    clock.add_updates(10.0, 20)  # 0.5 s per update
    # 1,000 steps and 200 updates left: 10 s + 100 s, whatever the interactions per second so far.
    assert clock.eta(1000, 200) == pytest.approx(110.0)
