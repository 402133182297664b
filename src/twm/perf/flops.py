"""Floating-point operations of one update, counted analytically from the layer shapes.

Conventions (those of ``torch.utils.flop_counter``, which ``tests/perf/test_flops.py`` checks us against):

- a matrix product (m x k) @ (k x n) is 2 m n k FLOPs, a linear layer on m rows likewise (the bias is
  not counted); a convolution is 2 x (output pixels) x c_in x c_out x k^2, a transposed convolution
  2 x (input pixels) x c_in x c_out x k^2;
- a trained layer costs its forward once more for the gradient of its weights and once more for the
  gradient of its input, so forward + backward = 3x forward -- except where its input needs no
  gradient (the first layer of a network fed with data), where it is 2x; layers run without
  gradient cost their forward only;
- element-wise work (activations, layer norms, softmax, losses, optimiser steps, sampling) is not
  counted: it is a few percent of the total and runs memory-bound anyway.

The counts follow what the implementation computes, not a minimum: the plain Transformer-XL memory
re-projects the memory's hidden states (queries included) at every imagination step, while the
key/value cache (``dynamics.kv_cache``) projects each token once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twm.config import Config

# --------------------------------------------------------------------------------------- tally


@dataclass
class Tally:
    """FLOPs by name: forward, weight-gradient and input-gradient parts."""

    items: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, forward: float, *, train: bool = False, input_grad: bool = True) -> None:
        """Add a layer's ``forward`` FLOPs; if trained, its backward (2x, or 1x without input grad)."""
        total = forward
        if train:
            total += forward * (2 if input_grad else 1)
        self.items[name] = self.items.get(name, 0.0) + total

    @property
    def total(self) -> float:
        return sum(self.items.values())


def linear(rows: float, n_in: int, n_out: int) -> float:
    return 2.0 * rows * n_in * n_out


def conv_out(size: int, kernel: int, stride: int = 2) -> int:
    return (size - kernel) // stride + 1


def deconv_out(size: int, kernel: int, stride: int = 2) -> int:
    return (size - 1) * stride + kernel


# --------------------------------------------------------------------------------------- networks


def mlp(t: Tally, name: str, rows: float, widths: list[int], *, train: bool, input_grad: bool) -> None:
    """Linear layers widths[0] -> widths[1] -> ... on ``rows`` rows."""
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        t.add(name, linear(rows, a, b), train=train, input_grad=input_grad or i > 0)


def encoder(t: Tally, cfg: Config, frames: float, *, train: bool, name: str = "encoder") -> None:
    om, S = cfg.obs_model, cfg.image_channels
    c = om.channels
    if cfg.env.observation == "grid":
        grid_encoder(t, cfg, frames, train=train, name=name)
        return
    if cfg.env.observation == "vector":  # vector_nets: the MLP on the S numbers
        widths = [S, om.mlp_hidden, om.mlp_hidden, cfg.latent_dim]
        mlp(t, name, frames, widths, train=train, input_grad=False)
        return
    size = 64
    for i, (c_in, c_out) in enumerate(zip([S, c, 2 * c, 4 * c], [c, 2 * c, 4 * c, 8 * c], strict=True)):
        size = conv_out(size, 4)
        # The frames need no gradient, so the first conv has no input gradient.
        t.add(name, 2.0 * frames * size * size * c_in * c_out * 16, train=train, input_grad=i > 0)
    mlp(
        t,
        name,
        frames,
        [8 * c * size * size, om.mlp_hidden, om.mlp_hidden, cfg.latent_dim],
        train=train,
        input_grad=True,
    )


def grid_encoder(t: Tally, cfg: Config, frames: float, *, train: bool, name: str) -> None:
    """twm.models.observation.grid_nets' encoder: 3x3 convs S -> 4c (G x G) -> 8c (G/2 x G/2), the MLP."""
    om, S, G = cfg.obs_model, cfg.image_channels, cfg.frame_size
    c, half = om.channels, cfg.frame_size // 2
    t.add(name, 2.0 * frames * G * G * S * 4 * c * 9, train=train, input_grad=False)
    t.add(name, 2.0 * frames * half * half * 4 * c * 8 * c * 9, train=train)
    widths = [8 * c * half * half, om.mlp_hidden, om.mlp_hidden, cfg.latent_dim]
    mlp(t, name, frames, widths, train=train, input_grad=True)


def grid_decoder(t: Tally, cfg: Config, frames: float, *, train: bool) -> None:
    """grid_nets' decoder: two linears, a 4x4 transposed conv 8c -> 4c (G/2 -> G), a 3x3 conv to S."""
    om, S, G = cfg.obs_model, cfg.image_channels, cfg.frame_size
    c, half = om.channels, cfg.frame_size // 2
    mlp(t, "decoder", frames, [cfg.latent_dim, om.mlp_hidden, 8 * c * half * half], train=train, input_grad=True)
    t.add("decoder", 2.0 * frames * half * half * 8 * c * 4 * c * 16, train=train)
    t.add("decoder", 2.0 * frames * G * G * 4 * c * S * 9, train=train)


def decoder(t: Tally, cfg: Config, frames: float, *, train: bool) -> None:
    c, S = cfg.obs_model.channels, cfg.image_channels
    if cfg.env.observation == "grid":
        grid_decoder(t, cfg, frames, train=train)
        return
    if cfg.env.observation == "vector":  # vector_nets: the MLP to the S numbers
        om = cfg.obs_model
        mlp(t, "decoder", frames, [cfg.latent_dim, om.mlp_hidden, om.mlp_hidden, S], train=train, input_grad=True)
        return
    # The latent carries the straight-through gradient to the encoder: every layer has an input gradient.
    t.add("decoder", linear(frames, cfg.latent_dim, 16 * c), train=train)
    size = 1
    for c_in, c_out, k in zip([16 * c, 4 * c, 2 * c, c], [4 * c, 2 * c, c, S], [5, 5, 6, 6], strict=True):
        t.add("decoder", 2.0 * frames * size * size * c_in * c_out * k * k, train=train)
        size = deconv_out(size, k)


def actor_or_critic(t: Tally, name: str, cfg: Config, rows: float, out: int, *, train: bool) -> None:
    ac = cfg.actor_critic
    mlp(t, name, rows, [cfg.latent_dim] + [ac.hidden] * ac.layers + [out], train=train, input_grad=False)


def heads(t: Tally, cfg: Config, rows: float, *, train: bool) -> None:
    dc = cfg.dynamics
    for name, hidden, layers, out in [
        ("dyn_heads", dc.z_head_hidden, dc.z_head_layers, cfg.latent_dim),
        ("dyn_heads", dc.reward_head_hidden, dc.reward_head_layers, 1),
        ("dyn_heads", dc.discount_head_hidden, dc.discount_head_layers, 1),
    ]:
        mlp(t, name, rows, [dc.d_model] + [hidden] * layers + [out], train=train, input_grad=True)


def transformer_call(
    t: Tally,
    cfg: Config,
    batch: float,
    new_tokens: int,
    memory_tokens: int,
    *,
    train: bool,
    kv_cache: bool,
    positions: bool = True,
) -> None:
    """One Transformer-XL call: ``new_tokens`` queries over ``memory_tokens`` + new keys, every layer.

    ``positions``: whether the call projects the relative-position table (a cached rollout does it once).
    """
    dc = cfg.dynamics
    n = 3 if dc.input_rewards else 2
    d, h, hd, inner = dc.d_model, dc.heads, dc.head_dim, dc.heads * dc.head_dim
    num_distances = n * (dc.memory_steps + 1) + 1
    N, K = new_tokens, memory_tokens + new_tokens
    projected = N if kv_cache else K  # the plain memory re-projects its hidden states
    for _ in range(dc.layers):
        t.add("attention_proj", linear(batch * projected, d, 3 * inner), train=train)
        if positions:
            # The sinusoidal table needs no gradient.
            t.add("attention_proj", linear(num_distances, d, inner), train=train, input_grad=False)
        t.add("attention_scores", 2.0 * batch * h * N * num_distances * hd, train=train)  # position term
        t.add("attention_scores", 2.0 * batch * h * N * K * hd * 2, train=train)  # q k^T and p v
        t.add("attention_proj", linear(batch * N, inner, d), train=train)
        t.add("feed_forward", linear(batch * N, d, dc.ff_dim) + linear(batch * N, dc.ff_dim, d), train=train)


def embeddings(t: Tally, cfg: Config, rows: float, *, train: bool) -> None:
    d = cfg.dynamics.d_model
    # z arrives detached (and rewards are data): no input gradient.
    t.add("embeddings", linear(rows, cfg.latent_dim, d), train=train, input_grad=False)
    if cfg.dynamics.input_rewards:
        t.add("embeddings", linear(rows, 1, d), train=train, input_grad=False)


# --------------------------------------------------------------------------------------- update


def world_model_flops(cfg: Config) -> Tally:
    """The world-model part of one update (``Learner.update``) on a B x T batch (context step and next
    observation included)."""
    B, T = cfg.replay.batch_size, cfg.replay.sequence_length
    n = 3 if cfg.dynamics.input_rewards else 2
    t = Tally()
    encoder(t, cfg, 2 * B, train=False, name="encoder_no_grad")  # context step and next observation
    encoder(t, cfg, B * T, train=True)
    decoder(t, cfg, B * T, train=True)
    steps = T + 1
    embeddings(t, cfg, B * steps, train=True)
    transformer_call(t, cfg, B, n * steps - 1, 0, train=True, kv_cache=False)
    heads(t, cfg, B * steps, train=True)
    return t


def imagination_flops(
    cfg: Config, num_actions: int, fresh_starts: int = 0, kv_cache: bool | None = None
) -> Tally:
    """One rollout of ``num_starts`` x ``horizon`` steps; ``fresh_starts`` latents encoded after ends."""
    ac, dc = cfg.actor_critic, cfg.dynamics
    kv_cache = dc.kv_cache if kv_cache is None else kv_cache
    B, H = ac.num_starts, ac.horizon
    n = 3 if dc.input_rewards else 2
    keep = n * dc.memory_steps + 2
    t = Tally()
    context = n - 1  # the context step's z and a (no reward token before it)
    embeddings(t, cfg, B, train=False)
    transformer_call(t, cfg, B, context, 0, train=False, kv_cache=False)
    heads(t, cfg, B, train=False)
    if kv_cache:  # keys and values of the context tokens, then each token is projected once
        for _ in range(dc.layers):
            t.add("attention_proj", linear(B * context, dc.d_model, 3 * dc.heads * dc.head_dim))
    memory = context
    for _ in range(H):
        actor_or_critic(t, "actor", cfg, B, num_actions, train=False)
        embeddings(t, cfg, B, train=False)
        transformer_call(t, cfg, B, n, memory, train=False, kv_cache=kv_cache, positions=not kv_cache)
        heads(t, cfg, B, train=False)
        memory = min(memory + n, keep)
    if kv_cache:
        for _ in range(dc.layers):
            num_distances = n * (dc.memory_steps + 1) + 1
            t.add("attention_proj", linear(num_distances, dc.d_model, dc.heads * dc.head_dim))
    if fresh_starts:
        encoder(t, cfg, fresh_starts, train=False, name="encoder_no_grad")
    return t


def actor_critic_flops(cfg: Config, num_actions: int) -> Tally:
    ac = cfg.actor_critic
    B, H = ac.num_starts, ac.horizon
    t = Tally()
    actor_or_critic(t, "critic", cfg, B * (H + 1), 1, train=False)  # values for the returns
    actor_or_critic(t, "critic", cfg, B * H, 1, train=True)
    actor_or_critic(t, "actor", cfg, B * H, num_actions, train=True)
    return t


def update_flops(
    cfg: Config, num_actions: int, fresh_starts: int = 0, kv_cache: bool | None = None
) -> dict[str, Tally]:
    """FLOPs of one update by part (``world_model``, ``imagination``, ``actor_critic``)."""
    return {
        "world_model": world_model_flops(cfg),
        "imagination": imagination_flops(cfg, num_actions, fresh_starts, kv_cache),
        "actor_critic": actor_critic_flops(cfg, num_actions),
    }
