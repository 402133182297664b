"""Output distributions beyond the paper's Gaussians: symlog two-hot heads and uniform mixing.

These are the robustness tools of DreamerV3 (Hafner et al. 2023) that the ``plus`` preset switches on
(each is a config switch, off in the paper's ``atari100k``):

- ``symlog(x) = sign(x) log(1 + |x|)`` and its inverse ``symexp``: compress large magnitudes while
  staying the identity near 0.
- ``TwoHotSymlog``: a scalar predicted as a categorical over ``bins`` fixed points spread evenly in
  symlog space. A target y = symlog(x) between bins b_k <= y < b_{k+1} is encoded as weight
  (b_{k+1} - y) / (b_{k+1} - b_k) on bin k and the rest on bin k+1 (targets outside the range go
  whole to the end bin); the loss is the cross-entropy to that two-hot vector and the prediction
  is symexp(sum_i p_i b_i). The gradient of a classification loss does not grow with the size of
  the target, so heads learn rare large rewards and returns of any scale with one learning rate.
  With ``spacing='symexp'`` the bins sit at symexp of those points and both the two-hot weights and
  the prediction sum_i p_i b_i are in the value's own units (DreamerV3's released code). The
  symlog reading averages in symlog space, which shrinks a random target towards 0 (Jensen's
  inequality): a reward of 1 paid with chance p is predicted as 2^p - 1 (0.072 for p = 0.1), not p;
  the symexp reading predicts p.
- ``mix_uniform``: (1 - u) softmax(logits) + u / K as logits (log-probabilities), so every class
  keeps a probability of at least u / K: latents and policies never become deterministic, and
  the log-probabilities in the losses stay finite.

Also ``categorical_index``, the sampler of the latent categoricals: torch's multinomial, or the
inverse CDF (a speed switch, ``obs_model.sampler``, the same distribution).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def categorical_index(probs: Tensor, generator: torch.Generator | None, sampler: str = "multinomial") -> Tensor:
    """One class index drawn from each row of ``probs`` (N, K) -> (N,) long.

    'multinomial' is ``torch.multinomial``, which draws an exponential variate per class (slow on a
    CPU: 32 exponentials per 32-class categorical). 'inverse_cdf' draws one uniform u per row and
    returns the first class k whose cumulative probability exceeds u * total, i.e. k with
    cdf[k-1] <= u * total < cdf[k]: each class with its probability (a class of probability 0 has an
    empty interval), from 1/K of the random numbers. The rows need not be normalised.
    """
    if sampler == "multinomial":
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    cdf = probs.cumsum(dim=-1)  # (N, K)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=probs.dtype)
    # The clamp guards the count against u * total == total (not reached by torch.rand's [0, 1) in
    # float32, whose products round below the total), which would count all K classes.
    return (cdf <= u * cdf[:, -1:]).sum(dim=-1).clamp_(max=probs.shape[-1] - 1)  # (N,)


def symlog(x: Tensor) -> Tensor:
    """sign(x) log(1 + |x|), elementwise."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    """sign(x) (exp(|x|) - 1), elementwise: the inverse of ``symlog``."""
    return torch.sign(x) * torch.expm1(x.abs())


def mix_uniform(logits: Tensor, unimix: float) -> Tensor:
    """Logits (..., K) of (1 - unimix) softmax(logits) + unimix / K; ``logits`` itself when unimix is 0.

    The result is a normalised log-probability, so ``softmax`` of it is the mixture and
    ``log_softmax`` of it is itself.
    """
    if unimix <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)  # (..., K)
    mixed = (1.0 - unimix) * probs + unimix / logits.shape[-1]
    return mixed.log()


class TwoHotSymlog(nn.Module):
    """A scalar as a categorical over ``bins`` points evenly spaced in symlog space on [low, high].

    ``spacing`` 'symlog': the bins are those points and the two-hot weights and the expected bin
    are taken in symlog space (the prediction is symexp of the expected bin; DreamerV3's paper).
    'symexp': the bins are symexp of those points, and weights and expectation are in the value's
    own units, so the prediction is the distribution's mean (DreamerV3's released code); it needs a
    symmetric range (low = -high), so that a uniform distribution predicts exactly 0.
    ``encode`` and ``decode`` work on any leading shape: values (...) <-> probabilities (..., bins).
    The bin positions are a non-persistent buffer, so they are not part of state dicts.
    """

    bins: Tensor

    def __init__(
        self, bins: int = 255, low: float = -20.0, high: float = 20.0, spacing: str = "symlog"
    ) -> None:
        super().__init__()
        if bins < 2 or not low < high:
            raise ValueError(f"need bins >= 2 and low < high, got {bins}, {low}, {high}")
        if spacing not in ("symlog", "symexp"):
            raise ValueError(f"spacing must be 'symlog' or 'symexp', got {spacing!r}")
        if spacing == "symexp" and low != -high:
            raise ValueError(f"spacing 'symexp' needs low = -high, got {low}, {high}")
        self.num_bins, self.in_symlog = bins, spacing == "symlog"
        points = torch.linspace(low, high, bins)
        if not self.in_symlog:  # mirrored to the last bit (linspace's rounding is not): b_i = -b_{n-1-i}
            points = symexp((points - points.flip(0)) / 2)
        self.register_buffer("bins", points, persistent=False)

    def encode(self, values: Tensor) -> Tensor:
        """The two-hot target (..., bins) of ``values`` (...): weights on the two bins around x
        (around symlog(x) with spacing 'symlog')."""
        y = values.detach().to(self.bins.dtype)
        y = (symlog(y) if self.in_symlog else y).clamp(self.bins[0], self.bins[-1])  # (...)
        # k: the bin at or below y (the last-but-one bin for y at the top end).
        k = (torch.bucketize(y, self.bins, right=True) - 1).clamp(0, self.num_bins - 2)  # (...)
        low, high = self.bins[k], self.bins[k + 1]
        above = (y - low) / (high - low)  # (...) weight of bin k+1, in [0, 1]
        target = y.new_zeros(*y.shape, self.num_bins)  # (..., bins)
        target.scatter_(-1, k[..., None], (1.0 - above)[..., None])
        target.scatter_add_(-1, (k + 1)[..., None], above[..., None])
        return target

    def decode(self, logits: Tensor) -> Tensor:
        """The predicted value (...) of logits (..., bins): symexp of the expected bin position
        (spacing 'symlog') or the expected bin (spacing 'symexp')."""
        if self.in_symlog:
            return symexp((logits.softmax(dim=-1) * self.bins.to(logits.dtype)).sum(dim=-1))
        return self._mirrored_mean(logits, self.bins)

    def mean(self, logits: Tensor) -> Tensor:
        """The mean (...) of the distribution of logits (..., bins) in the value's own units:
        ``decode`` for spacing 'symexp'; for 'symlog' sum_i p_i symexp(b_i), which is not what the
        head predicts (benchmarks/world_model_probe.py --read-mean compares the two)."""
        return self._mirrored_mean(logits, self.bins if not self.in_symlog else symexp(self.bins))

    def _mirrored_mean(self, logits: Tensor, values: Tensor) -> Tensor:
        """sum_i p_i values_i for values mirrored around the middle bin (values_i = -values_{n-1-i})."""
        # In float32 at least, whatever the autocast: the outer values are +-4.9e8. Bin i is summed
        # with its mirror n-1-i first, so equal probabilities on mirrored bins (a zero-initialised
        # head, and the bins no target reaches, whose logits get equal gradients) cancel exactly.
        probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=-1)  # (..., n)
        terms = probs * values  # (..., n)
        half = self.num_bins // 2
        paired = terms[..., :half].flip(-1) + terms[..., self.num_bins - half :]  # (..., n // 2)
        middle = terms[..., half] if self.num_bins % 2 else terms.new_zeros(terms.shape[:-1])
        return (middle + paired.sum(dim=-1)).to(logits.dtype)

    def loss(self, logits: Tensor, values: Tensor) -> Tensor:
        """Cross-entropy (...) from the two-hot encoding of ``values`` (...) to ``logits`` (..., bins)."""
        return -(self.encode(values).to(logits.dtype) * logits.log_softmax(dim=-1)).sum(dim=-1)


def zero_output_layer(linear: nn.Linear) -> None:
    """Zero weights and bias: a two-hot head then starts at the uniform distribution over bins,
    whose decoded value is symexp(mean bin) = 0 for a symmetric range (DreamerV3's initialisation)."""
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
