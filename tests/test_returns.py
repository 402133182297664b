"""λ-returns and imagination weights against naive recursions and known answers."""

from __future__ import annotations

import torch

from twm.losses import discount_weights, lambda_returns


def naive_lambda_returns(r, g, d, v, lam):  # type: ignore[no-untyped-def]
    """G_t = r_t + γ_t (1 - d_t) ((1 - λ) V_{t+1} + λ G_{t+1}), G_H = V_H, one element at a time."""
    batch, horizon = r.shape
    out = torch.zeros(batch, horizon, dtype=torch.float64)
    for b in range(batch):
        next_return = float(v[b, horizon])
        for t in reversed(range(horizon)):
            cont = float(g[b, t]) * (0.0 if bool(d[b, t]) else 1.0)
            next_return = float(r[b, t]) + cont * ((1 - lam) * float(v[b, t + 1]) + lam * next_return)
            out[b, t] = next_return
    return out


def test_lambda_returns_match_naive_recursion_with_episode_ends() -> None:
    gen = torch.Generator().manual_seed(0)
    batch, horizon = 6, 15
    r = torch.randn(batch, horizon, generator=gen, dtype=torch.float64)
    g = 0.99 * torch.rand(batch, horizon, generator=gen, dtype=torch.float64)
    d = torch.rand(batch, horizon, generator=gen) < 0.2
    v = torch.randn(batch, horizon + 1, generator=gen, dtype=torch.float64)
    assert d.any() and (~d).any()
    for lam in (0.0, 0.5, 0.95, 1.0):
        returns, advantages = lambda_returns(r, g, d, v, lam)
        expected = naive_lambda_returns(r, g, d, v, lam)
        torch.testing.assert_close(returns, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(advantages, expected - v[:, :-1], rtol=0, atol=1e-12)


def test_constant_value_is_a_fixed_point() -> None:
    # With V = c everywhere and rewards c (1 - γ), every λ-return equals c and advantages are 0.
    c, gamma = 3.0, 0.99
    r = torch.full((2, 10), c * (1 - gamma), dtype=torch.float64)
    g = torch.full((2, 10), gamma, dtype=torch.float64)
    d = torch.zeros(2, 10, dtype=torch.bool)
    v = torch.full((2, 11), c, dtype=torch.float64)
    returns, advantages = lambda_returns(r, g, d, v, 0.95)
    torch.testing.assert_close(returns, torch.full_like(returns, c))
    torch.testing.assert_close(advantages, torch.zeros_like(advantages))


def test_no_bootstrap_across_an_imagined_end() -> None:
    # One step, done: the return is the reward alone, whatever the next value.
    r = torch.tensor([[2.0]])
    g = torch.tensor([[0.99]])
    v = torch.tensor([[1.0, 100.0]])
    returns, _ = lambda_returns(r, g, torch.tensor([[True]]), v, 0.95)
    assert returns.item() == 2.0
    returns, _ = lambda_returns(r, g, torch.tensor([[False]]), v, 0.95)
    assert returns.item() == 2.0 + 0.99 * 100.0


def test_discount_weights_are_products_that_restart_after_an_end() -> None:
    g = torch.tensor([[0.5, 0.4, 0.9, 0.8, 0.7]])
    d = torch.tensor([[False, True, False, False, False]])
    w = discount_weights(g, d)
    expected = torch.tensor([[1.0, 0.5, 1.0, 0.9, 0.9 * 0.8]])
    torch.testing.assert_close(w, expected)
    no_end = discount_weights(g, torch.zeros_like(d))
    torch.testing.assert_close(no_end, torch.tensor([[1.0, 0.5, 0.2, 0.18, 0.144]]))
