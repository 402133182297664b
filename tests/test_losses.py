"""Actor and critic losses on small hand-computed cases."""

from __future__ import annotations

import math

import torch

from twm.losses import actor_loss, critic_loss, pretrain_actor_loss


def test_critic_loss_is_weighted_gaussian_nll() -> None:
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    returns = torch.tensor([[2.0, 2.0]])
    weights = torch.tensor([[1.0, 0.5]])
    loss = critic_loss(values, returns, weights)
    const = 0.5 * math.log(2 * math.pi)
    expected = (1.0 * (0.5 * 1.0 + const) + 0.5 * (0.0 + const)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    loss.backward()
    # d/dv of 0.5 w (G - v)^2 / N = -w (G - v) / N
    torch.testing.assert_close(values.grad, torch.tensor([[-0.5, 0.0]]))


def test_actor_loss_reinforce_and_entropy_hinge() -> None:
    # Two actions, uniform policy: log π = log 0.5, normalised entropy 1 (hinge inactive).
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    actions = torch.tensor([[0, 1]])
    advantages = torch.tensor([[1.0, -2.0]])
    weights = torch.tensor([[1.0, 0.5]])
    loss, metrics = actor_loss(logits, actions, advantages, weights, entropy_coef=0.01, entropy_threshold=0.1)
    reinforce = (1.0 * math.log(0.5) * 1.0 + 0.5 * math.log(0.5) * -2.0) / 2
    assert math.isclose(metrics["ac/reinforce"].item(), reinforce, rel_tol=1e-6)
    assert math.isclose(loss.item(), -reinforce, rel_tol=1e-6)
    assert metrics["ac/entropy_loss"].item() == 0.0
    loss.backward()
    # d(-w A log π(a))/d logit_a = -w A (1 - π(a)) / N; for the other logit +w A π(a) / N.
    expected = torch.tensor([[[-0.25, 0.25], [-0.25, 0.25]]])
    torch.testing.assert_close(logits.grad, expected)


def test_entropy_hinge_acts_on_a_near_deterministic_policy() -> None:
    logits = torch.tensor([[[10.0, 0.0, 0.0]]])
    p = torch.softmax(logits[0, 0], -1)
    norm_entropy = float(-(p * p.log()).sum() / math.log(3))
    assert norm_entropy < 0.1
    loss, metrics = actor_loss(
        logits,
        torch.tensor([[0]]),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        entropy_coef=0.01,
        entropy_threshold=0.1,
    )
    assert math.isclose(loss.item(), 0.01 * (0.1 - norm_entropy), rel_tol=1e-4)


def test_pretrain_actor_loss_is_entropy_bonus() -> None:
    logits = torch.zeros(3, 4, 5)
    assert math.isclose(pretrain_actor_loss(logits, 0.01).item(), -0.01, rel_tol=1e-6)


def test_entropy_bonus_is_minus_coef_times_weighted_entropy_in_nats() -> None:
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # probabilities (1/2, 1/2), (3/4, 1/4)
    actions = torch.tensor([[0, 1]])
    advantages = torch.tensor([[1.0, -2.0]])
    weights = torch.tensor([[1.0, 0.5]])
    loss, metrics = actor_loss(logits, actions, advantages, weights, 0.1, 0.5, "bonus")
    h = [math.log(2.0), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    reinforce = (1.0 * math.log(0.5) * 1.0 + 0.5 * math.log(0.25) * -2.0) / 2
    bonus = -0.1 * (1.0 * h[0] + 0.5 * h[1]) / 2
    assert math.isclose(metrics["ac/reinforce"].item(), reinforce, rel_tol=1e-6)
    assert math.isclose(metrics["ac/entropy_loss"].item(), bonus, rel_tol=1e-6)
    assert math.isclose(loss.item(), -reinforce + bonus, rel_tol=1e-6)


def test_percentile_normalizer_matches_numpy_on_a_fixed_stream() -> None:
    import numpy as np

    from twm.losses import PercentileNormalizer

    rng = np.random.default_rng(0)
    norm = PercentileNormalizer(decay=0.9)
    lo = hi = 0.0
    for i in range(30):
        # Returns that first spread little (the floor of 1 holds), then widely.
        returns = rng.normal(size=(8, 5)) * (0.2 if i < 10 else 20.0) + i
        lo = 0.9 * lo + 0.1 * np.quantile(returns, 0.05)
        hi = 0.9 * hi + 0.1 * np.quantile(returns, 0.95)
        scale = norm.update(torch.as_tensor(returns, dtype=torch.float32))
        assert math.isclose(scale.item(), max(1.0, hi - lo), rel_tol=1e-5), i
        if i == 5:
            assert scale.item() == 1.0  # the floor
    assert hi - lo > 10  # the stream did leave the floor
    state = norm.state_dict()
    assert set(state) == {"lo", "hi"} and math.isclose(state["hi"].item(), hi, rel_tol=1e-5)


def test_percentile_normalizer_floor_is_the_least_scale() -> None:
    from twm.losses import PercentileNormalizer

    low = PercentileNormalizer(decay=0.5, floor=0.01)
    # Returns 0..1 in 0.01 steps: q5 = 0.05, q95 = 0.95; after one update lo = 0.025, hi = 0.475.
    returns = torch.linspace(0, 1, 101)
    assert math.isclose(low.update(returns).item(), 0.45, rel_tol=1e-5)
    assert PercentileNormalizer(decay=0.5).update(returns).item() == 1.0  # DreamerV3's floor of 1
    tiny = PercentileNormalizer(decay=0.5, floor=0.01)
    assert math.isclose(tiny.update(returns * 1e-3).item(), 0.01, rel_tol=1e-6)  # 0.00045 < floor
