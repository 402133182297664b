"""TWM's observation model: a categorical VAE over stacked 64x64 frames (docs/method.md, "Observation model").

Read top-down:

1. loss pieces        -- ``decoder_nll``, ``latent_entropy``, ``entropy_hinge``, ``consistency_ce``:
                         pure functions on tensors, tested against hand-computed values
2. latent sampling    -- ``sample_one_hot`` (straight-through) and ``mode_one_hot`` (argmax)
3. ``ObservationModel`` -- encoder (frames -> logits), decoder (z -> pixel means) and ``compute_loss``

Pictures and grids. The paper's nets read 64x64 pictures and reconstruct them with a unit-variance
Gaussian per pixel. With ``env.observation=grid`` (MinAtar, beyond the paper) a frame is the game's
(C, 10, 10) state, one 0/255 channel per kind of object; small 3x3 convs read it and the decoder
gives one Bernoulli logit per cell (``decoder_bernoulli_nll``), so a bullet is one cell that costs
as much to miss as a wall, where in a picture it was a faint 6x6 block among 4,096 pixels.

Vectors. With ``env.observation=vector`` (gym games, beyond the paper) a frame is n numbers as an
(n, 1, 1) float32 array; an MLP reads their symlog and the decoder predicts symlog(o) with a
unit-variance Gaussian (DreamerV3's symlog squared error), so a cart position of 0.01 and a velocity
of 50 both matter without a hand-set scale (``vector_nets``).

Shapes. Frames are (..., S, 64, 64) with S = frame_stack x frame_channels image channels (stacked
grayscale frames, or stacked RGB frames with env.color), uint8 in
[0, 255] (or floats already in [0, 1]). Logits are (..., C, K) for C categoricals of K classes; a
latent z is their flat concatenation of one-hots, (..., C*K) -- the 1024-dim vector the dynamics
model, actor and critic read. Any number of leading dimensions works (a batch of frames in
pretraining, (B, T) sequences in the world-model update).

How the world-model update uses it::

    logits = obs_model.encode(frames)              # (B, T, C, K), with gradient
    z = obs_model.sample(logits, generator)        # (B, T, C*K), straight-through
    ... dynamics model on [context z, z.detach()] (B, T+1): its output at step t predicts
        z_{t+1}, so the predictions of these z_t are out.z_logits[:, :-1], (B, T, C, K) ...
    loss, metrics = obs_model.compute_loss(frames, z, logits, dynamics_logits=out.z_logits[:, :-1])

Pretraining calls ``compute_loss(frames, z, logits)`` without the consistency term.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from twm.config import Config, ObservationModelConfig
from twm.models.distributions import categorical_index, mix_uniform, symexp, symlog

FRAME_SIZE = 64

# --------------------------------------------------------------------------------------- loss pieces


def frames_to_float(frames: Tensor) -> Tensor:
    """uint8 frames in [0, 255] -> float32 in [0, 1]; floating frames are assumed in [0, 1] already."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 or floating point, got {frames.dtype}")
    return frames


def full_precision(x: Tensor) -> Tensor:
    """float32 for a bfloat16/float16 tensor (an output computed under autocast); else x itself."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def decoder_nll(recon: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """NLL of ``target`` under N(recon, 1) per pixel, summed over (S, H, W), averaged over the rest.

    Args:
        recon: (..., S, H, W) decoder means.
        target: (..., S, H, W) frames in [0, 1] (floats; no gradient is taken through them).
        weights: optional per-pixel weights broadcast against them (``moved_weights``); each pixel's
            NLL counts that many times.

    The constant 0.5 log(2 pi) per pixel is included, as the released code's
    ``Independent(Normal(mean, 1), 3).log_prob``: the value is a true NLL in nats (4*64*64 pixels
    add 15,055.6 to it) and the constant does not change the gradient. Subtract
    ``0.5 * log(2 pi) * S*H*W`` for the pure squared-error part.
    """
    per_pixel = 0.5 * (target.detach() - recon).square() + 0.5 * math.log(2 * math.pi)
    if weights is not None:
        per_pixel = per_pixel * weights
    return per_pixel.sum(dim=(-3, -2, -1)).mean()


def moved_mask(frames: Tensor, frame_channels: int) -> Tensor:
    """Where anything changes within a frame stack: frames (..., S, H, W) in [0, 1], S = stack *
    frame_channels (oldest first) -> (..., 1, H, W) bool, True where some channel of some frame
    differs from the frame before it by more than half a gray level (the same place in every frame)."""
    stack = frames.unflatten(-3, (-1, frame_channels))  # (..., stack, c, H, W)
    changed = (stack[..., 1:, :, :, :] - stack[..., :-1, :, :, :]).abs() > 0.5 / 255  # (..., stack-1, c, H, W)
    return changed.flatten(-4, -3).any(dim=-3, keepdim=True)  # (..., 1, H, W)


def moved_weights(frames: Tensor, frame_channels: int, weight: float) -> Tensor:
    """Per-pixel weights of the decoder loss (``obs_model.moved_weight``): ``weight`` where the frame
    stack changes (``moved_mask``), 1 elsewhere; (..., 1, H, W), broadcast over the S frames."""
    return 1.0 + (weight - 1.0) * moved_mask(frames, frame_channels).to(frames.dtype)


def decoder_bernoulli_nll(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """NLL of ``target`` under Bernoulli(sigmoid(logits)) per cell, summed over (S, H, W), averaged over the rest.

    Args:
        logits: (..., S, H, W) decoder logits.
        target: (..., S, H, W) cells in [0, 1] (0 or 1 for a grid; no gradient through them).
        weights: optional per-cell weights broadcast against them (``moved_weights``).
    """
    per_cell = F.binary_cross_entropy_with_logits(logits, target.detach(), reduction="none")
    if weights is not None:
        per_cell = per_cell * weights
    return per_cell.sum(dim=(-3, -2, -1)).mean()


def latent_entropy(logits: Tensor) -> Tensor:
    """Entropy H(z) in nats of the C independent categoricals, summed over them: (..., C, K) -> (...)."""
    log_p = logits.log_softmax(dim=-1)  # (..., C, K)
    # p * log p is 0 where p underflows to 0 while log p stays finite, so no 0 * -inf here.
    return -(log_p.exp() * log_p).sum(dim=(-2, -1))


def entropy_hinge(logits: Tensor, coef: float, threshold: float) -> tuple[Tensor, Tensor]:
    """The entropy regulariser alpha_1: coef * relu(threshold - mean H(z) / (C ln K)).

    H(z) is summed over the C categoricals of each latent and averaged over all latents of the
    batch; the hinge then acts once on that average, as the released ``compute_entropy_loss``
    (``relu(t - z_dist.entropy().mean() / max_entropy)``), not once per latent. Below the
    threshold every latent's entropy gets the same push. Returns (loss, mean H(z) in nats).
    """
    C, K = logits.shape[-2:]
    mean_entropy = latent_entropy(logits).mean()
    return coef * torch.relu(threshold - mean_entropy / (C * math.log(K))), mean_entropy


def consistency_ce(logits: Tensor, dynamics_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy -sum_k p_dyn log q_enc, summed over categoricals, averaged over latents.

    Args:
        logits: (..., C, K) encoder logits of z_t (the gradient flows into them).
        dynamics_logits: (..., C, K) the dynamics model's logits of z_t; detached here, so the
            term only moves the encoder towards what the dynamics can predict.
        mask: optional (...) weights (e.g. 0 where the prediction of z_t crosses an episode
            boundary); the average is then sum(w * ce) / sum(w). The released code uses no mask.

    This is the released ``compute_consistency_loss``: targets are the dynamics model's
    probabilities ``z_hat_probs.detach()``, and the log-probabilities are the encoder's.
    """
    p_dyn = dynamics_logits.detach().softmax(dim=-1)  # (..., C, K)
    log_q = logits.log_softmax(dim=-1)  # (..., C, K)
    ce = -(p_dyn * log_q).sum(dim=(-2, -1))  # (...)
    if mask is None:
        return ce.mean()
    w = mask.to(ce.dtype)
    # A batch with every weight 0 has no consistency target: 0 rather than 0/0.
    return (w * ce).sum() / w.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------- latents


def one_hot_of(index: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """``F.one_hot(index, classes).to(dtype)`` without its range check, which reads the indices back
    to the host (a sync per call); the indices here come from argmax or sampling, so are in range."""
    out = torch.zeros((*index.shape, classes), dtype=dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def sample_one_hot(
    logits: Tensor, generator: torch.Generator | None = None, sampler: str = "multinomial"
) -> Tensor:
    """One-hot samples of each categorical with straight-through gradients: (..., C, K) -> (..., C*K).

    ``sampler``: 'multinomial' or 'inverse_cdf' (``categorical_index``).

    The forward value is exactly one-hot: ``one_hot + (probs - probs.detach())`` adds an exact
    zero (the bracket is computed first), while the gradient w.r.t. the logits is that of ``probs``.
    """
    K = logits.shape[-1]
    probs = logits.softmax(dim=-1)  # (..., C, K)
    flat = probs.detach().float().reshape(-1, K)  # (N*C, K) one row per categorical
    index = categorical_index(flat, generator, sampler).reshape(probs.shape[:-1])  # (..., C)
    one_hot = one_hot_of(index, K, probs.dtype)  # (..., C, K)
    z = one_hot + (probs - probs.detach())  # (..., C, K)
    return z.flatten(-2)  # (..., C*K)


def mode_one_hot(logits: Tensor) -> Tensor:
    """The most likely latent, one-hot argmax of each categorical, no gradient: (..., C, K) -> (..., C*K)."""
    K = logits.shape[-1]
    one_hot = one_hot_of(logits.detach().argmax(dim=-1), K, logits.dtype)  # (..., C, K)
    return one_hot.flatten(-2)  # (..., C*K)


# --------------------------------------------------------------------------------------- model


class ObservationModel(nn.Module):
    """Categorical VAE: frames (..., S, 64, 64) <-> latents (..., C*K).

    Attributes:
        encoder: (N, S, 64, 64) floats -> (N, C*K) logits; 4 convs (c, 2c, 4c, 8c channels, kernel
            4, stride 2, SiLU after each: 64 -> 31 -> 14 -> 6 -> 2), flatten (8c*2*2), MLP.
        decoder: (N, C*K) -> (N, S, 64, 64) pixel means; linear to 16c + SiLU, (16c, 1, 1), then
            transposed convs to 4c, 2c, c, S channels, kernels 5, 5, 6, 6, stride 2
            (1 -> 5 -> 13 -> 30 -> 64), SiLU between them.

    Initialisation, as the released code actually runs it: the encoder's convs and linears and the
    decoder's linear use a Kaiming-uniform init with the ReLU gain sqrt(2) (its gain for SiLU),
    the encoder's output linear gain 1, all their biases 0. The released ``init_`` skips
    ``ConvTranspose2d`` (it only matches Linear and Conv2d), so the transposed convs keep PyTorch's
    default init here too -- except the last bias, which docs/method.md (and the released code's intent,
    ``final_bias_init=0.5``, which never takes effect there) sets to 0.5, the middle of the pixel range.
    """

    def __init__(
        self,
        cfg: ObservationModelConfig,
        frame_stack: int = 4,
        frame_channels: int = 1,
        *,
        grid_size: int | None = None,
        vector: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.frame_stack = frame_stack
        self.frame_channels = frame_channels  # 1 grayscale, 3 RGB, a grid's kinds of object
        # S = frame_stack * frame_channels image channels (frames oldest first, RGB within a frame).
        self.in_channels = frame_stack * frame_channels
        self.categoricals, self.classes = cfg.categoricals, cfg.classes
        if grid_size is not None and vector:
            raise ValueError("an observation model reads grids or vectors, not both")
        # 64x64 pictures and the paper's nets; (grid_size x grid_size) grids (``grid_nets``); or
        # vectors of frame_channels numbers, (n, 1, 1) frames (``vector_nets``).
        self.observation: Literal["picture", "grid", "vector"] = (
            "grid" if grid_size is not None else "vector" if vector else "picture"
        )
        self.frame_size = grid_size if grid_size is not None else 1 if vector else FRAME_SIZE
        if grid_size is not None:
            self.encoder, self.decoder = grid_nets(cfg, self.in_channels, grid_size, self.latent_dim)
            return
        if vector:
            self.encoder, self.decoder = vector_nets(cfg, self.in_channels, self.latent_dim)
            return
        c, hidden = cfg.channels, cfg.mlp_hidden

        conv_channels = [self.in_channels, c, 2 * c, 4 * c, 8 * c]
        encoder: list[nn.Module] = []
        for c_in, c_out in zip(conv_channels[:-1], conv_channels[1:], strict=True):
            conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2)
            _kaiming_uniform_(conv, "relu")
            encoder += [conv, nn.SiLU()]
        encoder.append(nn.Flatten())  # (N, 8c*2*2)
        for width_in, width_out in [(8 * c * 2 * 2, hidden), (hidden, hidden)]:
            linear = nn.Linear(width_in, width_out)
            _kaiming_uniform_(linear, "relu")
            encoder += [linear, nn.SiLU()]
        out = nn.Linear(hidden, self.latent_dim)
        _kaiming_uniform_(out, "linear")
        encoder.append(out)
        self.encoder = nn.Sequential(*encoder)

        decoder_in = nn.Linear(self.latent_dim, 16 * c)
        _kaiming_uniform_(decoder_in, "relu")
        decoder: list[nn.Module] = [decoder_in, nn.SiLU(), nn.Unflatten(1, (16 * c, 1, 1))]
        deconv_channels = [16 * c, 4 * c, 2 * c, c, self.in_channels]
        kernels = [5, 5, 6, 6]
        for i, k in enumerate(kernels):
            deconv = nn.ConvTranspose2d(deconv_channels[i], deconv_channels[i + 1], k, stride=2)
            decoder.append(deconv)
            if i < len(kernels) - 1:
                decoder.append(nn.SiLU())  # between the transposed convs, not after the last
        assert deconv.bias is not None  # ConvTranspose2d has a bias by default
        nn.init.constant_(deconv.bias, 0.5)
        self.decoder = nn.Sequential(*decoder)

    @classmethod
    def from_config(cls, cfg: Config) -> ObservationModel:
        """The observation model of a full config: its obs_model section and the env's frames."""
        return cls(
            cfg.obs_model, cfg.env.frame_stack, cfg.frame_channels,
            grid_size=cfg.env.grid_size, vector=cfg.env.observation == "vector",
        )  # fmt: skip

    @property
    def latent_dim(self) -> int:
        return self.categoricals * self.classes

    # ------------------------------------------------------------------ encode / decode

    def encode(self, frames: Tensor) -> Tensor:
        """Logits of q(z | o): frames (..., S, 64, 64) (uint8 or floats in [0, 1]) -> (..., C, K).

        With ``cfg.unimix`` > 0 these are the log-probabilities of the mixture with the uniform
        distribution (``mix_uniform``), so sampling, the mode and every loss read the mixture.
        """
        S, H = self.in_channels, self.frame_size
        if frames.shape[-3:] != (S, H, H):
            raise ValueError(f"frames must end in ({S}, {H}, {H}), got {tuple(frames.shape)}")
        lead = frames.shape[:-3]
        x = frames.reshape(-1, S, H, H)  # (N, S, 64, 64), or (N, S, 10, 10) grids
        if self.cfg.fast_convs and self.observation == "picture":
            # Channels-last (NHWC) memory: the convs' fast path on CPUs; the flatten after the last
            # conv reads the logical (C, H, W) order, so the function is the same.
            x = x.contiguous(memory_format=torch.channels_last)
        logits = full_precision(self.encoder(frames_to_float(x)))  # (N, C*K)
        logits = logits.reshape(*lead, self.categoricals, self.classes)  # (..., C, K)
        return mix_uniform(logits, self.cfg.unimix)

    def decode(self, z: Tensor) -> Tensor:
        """Means of p(o | z): latents (..., C*K) -> (..., S, 64, 64) pixel means (unit variance),
        (..., S, 10, 10) probabilities that a grid's cells are set, or (..., S, 1, 1) a vector's numbers."""
        out = self._decode(z)
        if self.observation == "grid":
            return out.sigmoid()
        return symexp(out) if self.observation == "vector" else out

    def _decode(self, z: Tensor) -> Tensor:
        """The decoder's output: pixel means, a grid's Bernoulli logits or a vector's symlog means, (..., S, H, W)."""
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must end in {self.latent_dim}, got {tuple(z.shape)}")
        lead = z.shape[:-1]
        x = z.reshape(-1, self.latent_dim)
        fast = self.cfg.fast_convs and self.observation == "picture"
        out = full_precision(self._decode_fast(x) if fast else self.decoder(x))  # (N, S, H, W)
        return out.reshape(*lead, self.in_channels, self.frame_size, self.frame_size)  # (..., S, H, W)

    def _decode_fast(self, z: Tensor) -> Tensor:
        """``self.decoder(z)`` with the first transposed conv as one matrix product, channels-last after.

        That conv sees a 1x1 map, so out[n, o, i, j] = sum_c x[n, c] W[c, o, i, j] + b[o]: a linear
        layer with weight W.flatten(1), which runs many times faster than the transposed-conv kernel.
        """
        linear, act, _, first_module, *rest = self.decoder
        first = cast(nn.ConvTranspose2d, first_module)
        x = act(linear(z))  # (N, 16c)
        w = first.weight  # (16c, 4c, k, k)
        b = cast(Tensor, first.bias)  # (4c,): built with a bias
        x = (x @ w.flatten(1)).unflatten(1, w.shape[1:]) + b[:, None, None]  # (N, 4c, k, k)
        x = x.contiguous(memory_format=torch.channels_last)
        for module in rest:
            x = module(x)
        return x  # (N, S, 64, 64)

    def sample(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Straight-through one-hot sample: (..., C, K) -> (..., C*K); see ``sample_one_hot``."""
        return sample_one_hot(logits, generator, self.cfg.sampler)

    def mode(self, logits: Tensor) -> Tensor:
        """One-hot argmax (acting, start of real rollouts): (..., C, K) -> (..., C*K), no gradient."""
        return mode_one_hot(logits)

    # ------------------------------------------------------------------ loss

    def compute_loss(
        self,
        frames: Tensor,
        z: Tensor,
        logits: Tensor,
        dynamics_logits: Tensor | None = None,
        consistency_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Observation-model loss of docs/method.md ("Observation model") for latents z sampled from ``logits`` of ``frames``.

        Args:
            frames: (..., S, 64, 64) the encoded frames (uint8 or floats in [0, 1]); the target.
            z: (..., C*K) straight-through samples from ``logits``; decoded here.
            logits: (..., C, K) encoder logits of the frames.
            dynamics_logits: optional (..., C, K) the dynamics model's logits of the same z_t
                (predicted from h_{t-1}); detached here. None (pretraining) drops the term.
            consistency_mask: optional (...) weights of the consistency term (see ``consistency_ce``).

        Returns:
            loss = decoder + entropy + consistency, and metrics (detached):

            - "obs/decoder_loss": Gaussian NLL of the frames, summed over S*64*64 pixels (with the
              0.5 log 2 pi constant, see ``decoder_nll``), averaged over latents; for grids the
              Bernoulli NLL summed over S*10*10 cells (``decoder_bernoulli_nll``); for vectors the
              Gaussian NLL of symlog(o) summed over the S numbers; with ``cfg.moved_weight`` the
              pixels (cells) that change within the stack count that many times;
            - "obs/entropy_loss": entropy_coef * relu(entropy_threshold - mean H(z)/(C ln K));
            - "obs/consistency_loss": consistency_coef * "obs/consistency_ce" (only when given);
            - "obs/entropy" (mean H(z) in nats), "obs/norm_entropy", "obs/recon_mae", "obs/loss".
        """
        cfg = self.cfg
        target = frames_to_float(frames)
        out = self._decode(z)  # (..., S, H, W) pixel means or cell logits
        weights = None  # the paper: every pixel alike
        if cfg.moved_weight != 1 and self.observation != "vector":
            weights = moved_weights(target, self.frame_channels, cfg.moved_weight)  # (..., 1, H, W)
        if self.observation == "grid":
            dec_loss = decoder_bernoulli_nll(out, target, weights)
            recon = out.sigmoid()
        elif self.observation == "vector":
            dec_loss = decoder_nll(out, symlog(target))  # unit-variance Gaussian in symlog space
            recon = symexp(out)
        else:
            dec_loss = decoder_nll(out, target, weights)
            recon = out
        ent_loss, entropy = entropy_hinge(logits, cfg.entropy_coef, cfg.entropy_threshold)
        loss = dec_loss + ent_loss
        metrics = {
            "obs/decoder_loss": dec_loss.detach(),
            "obs/entropy_loss": ent_loss.detach(),
            "obs/entropy": entropy.detach(),
            "obs/norm_entropy": entropy.detach() / (self.categoricals * math.log(self.classes)),
            "obs/recon_mae": (target - recon.detach()).abs().mean(),
        }
        if dynamics_logits is not None:
            if dynamics_logits.shape != logits.shape:
                raise ValueError(
                    f"dynamics_logits {tuple(dynamics_logits.shape)} must match logits {tuple(logits.shape)}"
                )
            ce = consistency_ce(logits, dynamics_logits, consistency_mask)
            con_loss = cfg.consistency_coef * ce
            loss = loss + con_loss
            metrics["obs/consistency_loss"] = con_loss.detach()
            metrics["obs/consistency_ce"] = ce.detach()
        metrics["obs/loss"] = loss.detach()
        return loss, metrics


def grid_nets(cfg: ObservationModelConfig, in_channels: int, size: int, latent_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Encoder and decoder for (S, size, size) grids (``size`` even; MinAtar's 10), c = cfg.channels.

    encoder: (N, S, G, G) -> (N, C*K): 3x3 conv to 4c channels, 3x3 conv with stride 2 to 8c
        (G -> G/2), SiLU after each, flatten (8c * G/2 * G/2), the 2-layer MLP, a linear to the logits.
    decoder: (N, C*K) -> (N, S, G, G) Bernoulli logits: linear to the MLP width and to 8c * G/2 * G/2
        (SiLU after each), a 4x4 transposed conv with stride 2 to 4c (G/2 -> G), SiLU, a 3x3 conv to S.

    Every conv pads by 1, so each cell's neighbours are seen up to the border. Initialised as the
    picture nets (Kaiming-uniform, ReLU gain, zero biases); the output logits start at 0.
    """
    if size % 2:
        raise ValueError(f"grid nets need an even grid size, got {size}")
    c, hidden, half = cfg.channels, cfg.mlp_hidden, size // 2
    conv1 = nn.Conv2d(in_channels, 4 * c, kernel_size=3, padding=1)
    conv2 = nn.Conv2d(4 * c, 8 * c, kernel_size=3, stride=2, padding=1)
    mlp = [nn.Linear(8 * c * half * half, hidden), nn.Linear(hidden, hidden)]
    layers: list[nn.Linear | nn.Conv2d] = [conv1, conv2, *mlp]
    for layer in layers:
        _kaiming_uniform_(layer, "relu")
    out = nn.Linear(hidden, latent_dim)
    _kaiming_uniform_(out, "linear")
    encoder = nn.Sequential(
        conv1, nn.SiLU(), conv2, nn.SiLU(), nn.Flatten(),  # (N, 8c * G/2 * G/2)
        mlp[0], nn.SiLU(), mlp[1], nn.SiLU(), out,
    )  # fmt: skip
    lin1, lin2 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, 8 * c * half * half)
    for layer in [lin1, lin2]:
        _kaiming_uniform_(layer, "relu")
    deconv = nn.ConvTranspose2d(8 * c, 4 * c, kernel_size=4, stride=2, padding=1)  # G/2 -> G
    last = nn.Conv2d(4 * c, in_channels, kernel_size=3, padding=1)
    assert last.bias is not None  # Conv2d has a bias by default
    nn.init.zeros_(last.bias)
    decoder = nn.Sequential(
        lin1, nn.SiLU(), lin2, nn.SiLU(), nn.Unflatten(1, (8 * c, half, half)),  # (N, 8c, G/2, G/2)
        deconv, nn.SiLU(), last,  # (N, S, G, G)
    )  # fmt: skip
    return encoder, decoder


class Symlog(nn.Module):
    """``symlog`` as a layer (the first of the vector encoder)."""

    def forward(self, x: Tensor) -> Tensor:
        return symlog(x)


def vector_nets(cfg: ObservationModelConfig, in_channels: int, latent_dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Encoder and decoder for vectors of ``in_channels`` numbers held as (S, 1, 1) frames.

    encoder: (N, S, 1, 1) -> (N, C*K): flatten, symlog, the 2-layer MLP (cfg.mlp_hidden, SiLU after
        each), a linear to the logits.
    decoder: (N, C*K) -> (N, S, 1, 1) means of symlog(o): a 2-layer MLP (SiLU), a linear to S.

    Initialised as the other nets (Kaiming-uniform, ReLU gain, zero biases; the output layers gain 1).
    """
    hidden = cfg.mlp_hidden
    enc = [nn.Linear(in_channels, hidden), nn.Linear(hidden, hidden)]
    dec = [nn.Linear(latent_dim, hidden), nn.Linear(hidden, hidden)]
    for layer in [*enc, *dec]:
        _kaiming_uniform_(layer, "relu")
    enc_out, dec_out = nn.Linear(hidden, latent_dim), nn.Linear(hidden, in_channels)
    for layer in [enc_out, dec_out]:
        _kaiming_uniform_(layer, "linear")
    encoder = nn.Sequential(
        nn.Flatten(), Symlog(),  # (N, S)
        enc[0], nn.SiLU(), enc[1], nn.SiLU(), enc_out,
    )  # fmt: skip
    decoder = nn.Sequential(
        dec[0], nn.SiLU(), dec[1], nn.SiLU(), dec_out,
        nn.Unflatten(1, (in_channels, 1, 1)),  # (N, S, 1, 1)
    )  # fmt: skip
    return encoder, decoder


def _kaiming_uniform_(layer: nn.Linear | nn.Conv2d, nonlinearity: Literal["relu", "linear"]) -> None:
    """U(-b, b) with b = gain * sqrt(3 / fan_in) and zero bias, as the released ``nets`` init.

    ``nonlinearity`` "relu" gives gain sqrt(2) (the released code's gain for SiLU), "linear" gain 1.
    """
    nn.init.kaiming_uniform_(layer.weight, nonlinearity=nonlinearity)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
