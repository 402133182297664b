"""The actor-critic's targets and losses on imagined (or, in pretraining, real) trajectories (docs/method.md, "Policy learning in imagination").

λ-returns
    Conventions for one imagined trajectory of H steps (batch dimension first):

    - ``values``    (B, H+1): V(z_0) .. V(z_H); the last one is only used to bootstrap.
    - ``rewards``   (B, H):   predicted mean reward r_t after action a_t.
    - ``discounts`` (B, H):   predicted discount γ_t after a_t; it already contains γ = 0.99.
    - ``dones``     (B, H):   an imagined episode ended after step t (the discount product fell below the
      threshold), so z_{t+1} is a fresh start from replay and nothing is bootstrapped across t -> t+1.

    Generalised advantage estimation (Schulman et al. 2016) with these discounts:
        δ_t = r_t + γ_t (1 - d_t) V_{t+1} - V_t
        A_t = δ_t + λ γ_t (1 - d_t) A_{t+1},   A_H = 0
    and the λ-return G_t = A_t + V_t, which equals the recursion
        G_t = r_t + γ_t (1 - d_t) ((1 - λ) V_{t+1} + λ G_{t+1}),   G_H = V_H.

Losses
    Shapes: logits (B, H, A), values (B, H), actions/advantages/returns/weights (B, H).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical

# ------------------------------------------------------------------------------------ λ-returns


@torch.no_grad()
def lambda_returns(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    dones: torch.Tensor,
    values: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (λ-returns, advantages), both (B, H). See the module docstring for the conventions."""
    horizon = rewards.shape[1]
    if values.shape[1] != horizon + 1:
        raise ValueError(f"values need H+1 = {horizon + 1} steps, got {values.shape[1]}")
    continuing = discounts * (~dones.bool()).to(discounts.dtype)  # (B, H)
    deltas = rewards + continuing * values[:, 1:] - values[:, :-1]  # (B, H)
    advantages = torch.zeros_like(deltas)
    next_advantage = torch.zeros_like(deltas[:, 0])
    for t in range(horizon - 1, -1, -1):
        next_advantage = deltas[:, t] + lam * continuing[:, t] * next_advantage
        advantages[:, t] = next_advantage
    return advantages + values[:, :-1], advantages


@torch.no_grad()
def discount_weights(discounts: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
    """Weight of each imagined step: the product of the predicted discounts before it.

    The product restarts at 1 after an imagined episode end, because the next state is a fresh
    start. ``discounts`` and ``dones`` are (B, H); the result is (B, H) with weights[:, 0] = 1.
    """
    weights = torch.ones_like(discounts)
    running = torch.ones_like(discounts[:, 0])
    for t in range(1, discounts.shape[1]):
        restarted = dones[:, t - 1].bool()
        running = torch.where(restarted, torch.ones_like(running), running * discounts[:, t - 1])
        weights[:, t] = running
    return weights


# ------------------------------------------------------------------------------------ losses


def critic_loss(values: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unit-variance Gaussian NLL of the λ-returns, each step weighted by its discount product.

    The NLL includes the constant 0.5 log(2π); it does not change the gradient.
    """
    nll = 0.5 * (returns.detach() - values).square() + 0.5 * math.log(2 * math.pi)
    return (weights.detach() * nll).mean()


class PercentileNormalizer(nn.Module):
    """The scale of imagined returns: max(floor, hi - lo), lo and hi EMAs of their 5th and 95th percentiles.

    ``update(returns)`` moves lo <- decay lo + (1 - decay) q_5(returns) and hi likewise with q_95
    (quantiles over all elements, linearly interpolated as numpy's default), both starting at 0,
    and returns the new scale. Advantages divided by it keep their sign and, once returns spread
    over more than ``floor``, a fixed size (DreamerV3's return normalisation, floor 1; the floor keeps
    the small returns of sparse-reward games from being blown up). lo and hi are buffers: checkpoints
    hold them.
    """

    quantiles: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95, floor: float = 1.0) -> None:
        super().__init__()
        self.decay, self.floor = decay, floor
        self.register_buffer("quantiles", torch.tensor([low, high]), persistent=False)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> torch.Tensor:
        """Fold a batch of returns (any shape) into the EMAs; the new scale, a () tensor."""
        q = torch.quantile(returns.detach().float().flatten(), self.quantiles.float())  # (2,)
        self.lo.mul_(self.decay).add_((1.0 - self.decay) * q[0])
        self.hi.mul_(self.decay).add_((1.0 - self.decay) * q[1])
        return self.scale()

    def scale(self) -> torch.Tensor:
        """max(floor, hi - lo), a () tensor."""
        return (self.hi - self.lo).clamp_min(self.floor)


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the action distribution divided by its maximum, log(num_actions); (B, H)."""
    return Categorical(logits=logits, validate_args=False).entropy() / math.log(logits.shape[-1])


def actor_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    entropy_coef: float,
    entropy_threshold: float,
    entropy_mode: str = "hinge",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE with the given advantages plus an entropy term.

    hinge (the paper): loss = -mean(w · log π(a|z) · A) + coef · relu(threshold - mean(w · H(π)/log A))
    bonus (DreamerV3):  loss = -mean(w · log π(a|z) · A) - coef · mean(w · H(π)), H in nats
    """
    dist = Categorical(logits=logits, validate_args=False)
    reinforce = (weights.detach() * dist.log_prob(actions) * advantages.detach()).mean()
    entropy = (weights.detach() * normalized_entropy(logits)).mean()
    if entropy_mode == "hinge":
        hinge = entropy_coef * torch.relu(entropy_threshold - entropy)
    elif entropy_mode == "bonus":
        hinge = -entropy_coef * (weights.detach() * dist.entropy()).mean()
    else:
        raise ValueError(f"entropy_mode must be 'hinge' or 'bonus', got {entropy_mode!r}")
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
