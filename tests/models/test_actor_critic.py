"""Actor and critic networks (docs/method.md, "Policy learning in imagination"): sizes, orthogonal init, outputs and sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from twm.config import ActorCriticConfig
from twm.models.actor_critic import Actor, Critic


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_paper_config_layout_and_orthogonal_init() -> None:
    # One test, so the paper-size networks (QR decompositions) are built only once. Their parameter
    # counts are asserted with all the others in tests/perf/test_info.py.
    torch.manual_seed(0)
    cfg = ActorCriticConfig()
    actor, critic = Actor(cfg, latent_dim=1024, num_actions=6), Critic(cfg, latent_dim=1024)
    for net, out_dim in [(actor, 6), (critic, 1)]:
        layers = linears(net)
        assert [(m.in_features, m.out_features) for m in layers] == [(1024, 512)] + [(512, 512)] * 3 + [
            (512, out_dim)
        ]
        kinds = [type(m).__name__ for m in net.net]
        assert kinds == ["Linear", "SiLU"] * 4 + ["Linear"]
        for i, m in enumerate(layers):
            # Every layer here has out <= in, so its rows are orthogonal: W W^T = gain^2 I.
            gain = 1.0 if i == len(layers) - 1 else math.sqrt(2.0)
            w = m.weight.detach().double()
            eye = torch.eye(m.out_features, dtype=torch.float64)
            torch.testing.assert_close(w @ w.T, gain**2 * eye, atol=1e-5, rtol=0)
            assert torch.all(m.bias == 0)


def test_shapes_over_leading_dims() -> None:
    torch.manual_seed(0)
    cfg = ActorCriticConfig(hidden=8, layers=2)
    actor, critic = Actor(cfg, 12, 3), Critic(cfg, 12)
    z = torch.rand(2, 5, 12)
    assert actor(z).shape == (2, 5, 3)
    assert critic(z).shape == (2, 5)
    assert critic(z[0, 0]).shape == ()
    torch.testing.assert_close(critic(z)[1, 3], critic(z[1, 3]))
    dist = actor.dist(z)
    assert dist.batch_shape == (2, 5)
    torch.testing.assert_close(dist.probs, actor(z).softmax(-1))


def test_critic_gradient_flows_to_all_layers() -> None:
    torch.manual_seed(0)
    critic = Critic(ActorCriticConfig(hidden=8, layers=2), 12)
    critic(torch.rand(4, 12)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())


def test_actor_sample_follows_the_policy_and_is_reproducible() -> None:
    cfg = ActorCriticConfig(hidden=8, layers=1)
    actor = Actor(cfg, 4, 3)
    probs = torch.tensor([0.1, 0.3, 0.6])
    with torch.no_grad():  # a constant policy: zero output weights, log-probs as the bias
        last = linears(actor)[-1]
        last.weight.zero_()
        last.bias.copy_(probs.log())
    z = torch.rand(4000, 4)
    a = actor.sample(z, torch.Generator().manual_seed(0))
    assert a.shape == (4000,) and a.dtype == torch.long
    freq = torch.bincount(a, minlength=3).float() / 4000
    assert (freq - probs).abs().max() < 0.03  # ~4 standard errors
    assert torch.equal(a, actor.sample(z, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, actor.sample(z, torch.Generator().manual_seed(1)))
    assert actor.sample(z.reshape(40, 100, 4)).shape == (40, 100)


@pytest.mark.parametrize("layers", [1, 3])
def test_hidden_layer_count(layers: int) -> None:
    actor = Actor(ActorCriticConfig(hidden=8, layers=layers), 4, 2)
    assert len(linears(actor)) == layers + 1


def test_two_hot_critic_starts_at_zero_and_its_gaussian_loss_is_the_papers() -> None:
    from twm.losses import critic_loss

    z = torch.randn(4, 3, 16)
    returns, weights = torch.randn(4, 3), torch.rand(4, 3)
    twohot = Critic(ActorCriticConfig(hidden=8, layers=1, critic="twohot"), 16)
    assert twohot(z).abs().max() < 1e-6  # zero-initialised output layer: the uniform over the bins
    out = twohot.outputs(z)
    assert out.shape == (4, 3, 255)
    expected = (weights * twohot.bins.loss(out, returns)).mean()  # type: ignore[union-attr]
    torch.testing.assert_close(twohot.loss(out, returns, weights), expected)

    gaussian = Critic(ActorCriticConfig(hidden=8, layers=1), 16)
    out = gaussian.outputs(z)
    torch.testing.assert_close(gaussian.loss(out, returns, weights), critic_loss(gaussian(z), returns, weights))


def test_policy_mixing_keeps_every_action_at_least_unimix_over_actions() -> None:
    actor = Actor(ActorCriticConfig(hidden=8, layers=1, unimix=0.05), 16, 4)
    with torch.no_grad():
        actor.net[-1].weight.mul_(1000.0)  # an almost deterministic policy before mixing
    probs = actor(torch.randn(64, 16)).softmax(-1)
    torch.testing.assert_close(probs.min(), torch.tensor(0.05 / 4), rtol=1e-3, atol=0)
