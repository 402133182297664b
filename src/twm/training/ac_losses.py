"""Actor and critic losses on imagined (or, in pretraining, real) latent trajectories (SPEC.md 3-4).

Shapes: logits (B, H, A), values (B, H), actions/advantages/returns/weights (B, H).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical


def critic_loss(values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unit-variance Gaussian NLL of the λ-returns, each step weighted by its discount product.

    The NLL includes the constant 0.5 log(2π); it does not change the gradient.
    """
    nll = 0.5 * (returns.detach() - values).square() + 0.5 * math.log(2 * math.pi)
    return (weights.detach() * nll).mean()


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the action distribution divided by its maximum, log(num_actions); (B, H)."""
    return Categorical(logits=logits).entropy() / math.log(logits.shape[-1])


def actor_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    entropy_coef: float,
    entropy_threshold: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE with the (unnormalised) advantages plus an entropy hinge.

    loss = -mean(w · log π(a|z) · A) + coef · relu(threshold - mean(w · H(π)/log A))
    """
    dist = Categorical(logits=logits)
    reinforce = (weights.detach() * dist.log_prob(actions) * advantages.detach()).mean()
    entropy = (weights.detach() * normalized_entropy(logits)).mean()
    hinge = entropy_coef * torch.relu(entropy_threshold - entropy)
    loss = -reinforce + hinge
    metrics = {
        "ac/reinforce": reinforce.detach(),
        "ac/norm_entropy": entropy.detach(),
        "ac/entropy_loss": hinge.detach(),
        "ac/actor_loss": loss.detach(),
    }
    return loss, metrics


def pretrain_actor_loss(logits: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """Pretraining on random-policy data: a pure entropy bonus, -coef · mean normalised entropy."""
    return -entropy_coef * normalized_entropy(logits).mean()
