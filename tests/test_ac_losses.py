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
