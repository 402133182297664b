"""Actor and critic networks of TWM (docs/method.md, "Policy learning in imagination"); the losses live in ``twm.losses``.

Both read the latent z_t only -- the (..., C*K) one-hot concatenation from the observation
model, not the transformer's h_t -- so acting in the real game needs just the encoder and the
actor. Each is an MLP of ``cfg.layers`` hidden layers of width ``cfg.hidden`` with SiLU.

Initialisation follows the released ``ActorCritic`` (``nets.MLP`` with
``weight_initializer='orthogonal'``, ``bias_initializer='zeros'``): orthogonal weights with gain
sqrt(2) for the hidden layers (the released code maps SiLU to the ReLU gain) and gain 1 for the
output layer (its ``reset_parameters`` re-initialises the last layer as 'linear'); all biases 0.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from twm.config import ActorCriticConfig
from twm.losses import critic_loss
from twm.models.distributions import TwoHotSymlog, mix_uniform, zero_output_layer

HIDDEN_GAIN = math.sqrt(2.0)
OUTPUT_GAIN = 1.0


def orthogonal_mlp(in_dim: int, hidden: int, layers: int, out_dim: int) -> nn.Sequential:
    """``layers`` x (Linear, SiLU), then a Linear; orthogonal init (gains above), zero biases."""
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        linear = nn.Linear(width, hidden)
        _orthogonal_(linear, HIDDEN_GAIN)
        modules += [linear, nn.SiLU()]
        width = hidden
    out = nn.Linear(width, out_dim)
    _orthogonal_(out, OUTPUT_GAIN)
    modules.append(out)
    return nn.Sequential(*modules)


def _orthogonal_(linear: nn.Linear, gain: float) -> None:
    nn.init.orthogonal_(linear.weight, gain=gain)
    nn.init.zeros_(linear.bias)


class Actor(nn.Module):
    """pi(a | z): latents (..., latent_dim) -> action logits (..., num_actions).

    With ``cfg.unimix`` > 0 the logits are those of the mixture with the uniform policy
    (``mix_uniform``), so sampling, log-probabilities and entropies all read the mixture.
    """

    def __init__(self, cfg: ActorCriticConfig, latent_dim: int, num_actions: int) -> None:
        super().__init__()
        self.latent_dim, self.num_actions = latent_dim, num_actions
        self.unimix = cfg.unimix
        self.net = orthogonal_mlp(latent_dim, cfg.hidden, cfg.layers, num_actions)

    def forward(self, z: Tensor) -> Tensor:
        """Action logits (..., num_actions)."""
        return mix_uniform(self.net(z), self.unimix)

    def dist(self, z: Tensor) -> Categorical:
        """The policy as a distribution with batch shape z.shape[:-1]."""
        return Categorical(logits=self(z), validate_args=False)

    @torch.no_grad()
    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Sampled actions (...) long, reproducible with ``generator``; no gradient (acting)."""
        logits = self(z)
        probs = logits.float().softmax(dim=-1).reshape(-1, self.num_actions)  # (N, A)
        actions = torch.multinomial(probs, 1, generator=generator)  # (N, 1)
        return actions.reshape(logits.shape[:-1])  # (...)

    @torch.no_grad()
    def mode(self, z: Tensor) -> Tensor:
        """The most likely actions (...) long (greedy acting; the lowest index among ties)."""
        return self(z).argmax(dim=-1)


class Critic(nn.Module):
    """v(z): latents (..., latent_dim) -> values (...).

    ``cfg.critic`` 'gaussian' (the paper): one output, the mean of a unit-variance Gaussian.
    'twohot': logits over the bins of a ``TwoHotSymlog`` (output layer zero-initialised, so every
    value starts at 0); the value is their decoded mean. ``outputs`` gives the raw outputs that
    ``loss`` reads; ``forward`` the values.
    """

    def __init__(self, cfg: ActorCriticConfig, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.bins = TwoHotSymlog(spacing=cfg.critic_bins) if cfg.critic == "twohot" else None
        self.net = orthogonal_mlp(latent_dim, cfg.hidden, cfg.layers, 1 if self.bins is None else self.bins.num_bins)
        if self.bins is not None:
            zero_output_layer(cast(nn.Linear, self.net[-1]))

    def outputs(self, z: Tensor) -> Tensor:
        """The raw outputs: (..., 1) Gaussian means or (..., bins) two-hot logits."""
        return self.net(z)

    def value(self, outputs: Tensor) -> Tensor:
        """Values (...) of raw outputs (..., 1 or bins)."""
        return outputs.squeeze(-1) if self.bins is None else self.bins.decode(outputs)

    def forward(self, z: Tensor) -> Tensor:
        """Values (...)."""
        return self.value(self.outputs(z))

    def loss(self, outputs: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
        """Mean over steps of weights x NLL of ``targets`` (...) under the outputs (..., 1 or bins).

        Gaussian: 0.5 (target - v)^2 + 0.5 log(2 pi) (the constant does not change the gradient);
        two-hot: the cross-entropy from the two-hot encoding of symlog(target).
        """
        if self.bins is None:
            return critic_loss(outputs.squeeze(-1), targets, weights)
        return (weights.detach() * self.bins.loss(outputs, targets.detach())).mean()
