"""TWM's dynamics model: a Transformer-XL over the token stream z_0 a_0 r_0 z_1 a_1 r_1 ... (docs/method.md, "Dynamics model").

Read bottom-up:

1. ``DynamicsMemory``    -- what one call hands to the next: per-layer hidden states of the last
                            tokens plus the bookkeeping (episode ids, stream position) for the mask
2. ``chunk_tokens``      -- positions and episode ids of the tokens one call feeds;
   ``StreamPositions``   -- what depends on the positions alone (kept per model: the same each update)
   ``extend_memory``     -- append them to the memory and keep the last n * memory_steps + 2
3. ``mlp_head``          -- SiLU, then an MLP: the heads that read h_t
4. ``DynamicsModel``     -- embeddings -> Transformer-XL -> h_t at each a_t token -> heads, and the loss

Token stream and calls
----------------------
Step t contributes z_t, a_t and r_t (the reward after a_t). The output at a_t is h_t; it predicts
z_{t+1}, r_t and gamma_t, so r_t is an *input* only to later steps. A call therefore feeds, for every
new step t, the group (r_{t-1}, z_t, a_t): the reward of the step before and the new z and a.

- ``forward(z, actions, rewards, dones)`` (no memory) starts a stream at step 0, which has no step
  before it: ``rewards`` and ``dones`` are (B, T-1), the outcomes r_t, d_t of steps 0..T-2 (the last
  step's outcome is what the model predicts, not an input). Tokens: z_0 a_0 r_0 z_1 ... r_{T-2} z_{T-1} a_{T-1}.
- ``forward(z, actions, rewards, dones, memory)`` continues the stream: ``rewards`` and ``dones`` are
  (B, T), the outcomes of the T steps before each new z (the first of them is the previous call's
  last step). Tokens: r_{t0-1} z_{t0} a_{t0} ... r_{t0+T-2} z_{t0+T-1} a_{t0+T-1}.

So a training batch is ``forward(z, a, r[:, :-1], d[:, :-1])`` and one imagination step is
``forward(z_t, a_t, r_{t-1}, d_{t-1}, memory)`` (each with a time axis of length 1). Feeding a
sequence in any chunking gives the same outputs as one pass (tests/models/test_dynamics.py), because every
token's attention window (``transformer_xl.window_start``) fits in the memory of
n * memory_steps + 2 tokens, the size of the released code's memory (``mem_length`` in
``PredictionNet``: 16 * 3 + 2 = 50).

An episode end d_{t-1} (terminated or truncated) cuts attention: tokens from step t on never see
tokens of step t-1 or earlier. The reward token r_{t-1} still belongs to step t-1 (it sees its own
episode), as in the released code's ``_get_mask``. Imagination restarts a rollout the same way: feed
d_{t-1} = True with the fresh z_t.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twm.config import DynamicsConfig
from twm.models.distributions import TwoHotSymlog, mix_uniform, zero_output_layer
from twm.models.kv_cache import KVCache
from twm.models.observation import full_precision
from twm.models.transformer_xl import TransformerXL, position_mask

# --------------------------------------------------------------------------------------- memory


@dataclass
class DynamicsMemory:
    """The state one ``DynamicsModel.forward`` call hands to the next (no gradient flows through it).

    Attributes:
        hiddens: per transformer layer, the (B, L, d) inputs that layer saw for the last L tokens.
        episode: (B, L) episode id of each of these tokens (number of episode ends before its step).
        num_tokens: tokens fed so far (the same for every batch row), i.e. the stream position of the
            next token; the memory tokens sit at positions num_tokens - L .. num_tokens - 1.
        kv: instead of ``hiddens``, the keys and values of every layer in a ``KVCache``
            (``DynamicsModel.cache_memory``; inference only). The cache is extended in place, so only
            the newest memory of a stream can be continued.
    """

    hiddens: list[Tensor]
    episode: Tensor
    num_tokens: int
    kv: KVCache | None = None

    @property
    def length(self) -> int:
        return self.episode.shape[1]

    def positions(self) -> Tensor:
        """(L,) stream positions of the memory tokens."""
        return torch.arange(self.num_tokens - self.length, self.num_tokens, device=self.episode.device)


def chunk_tokens(dones: Tensor, memory: DynamicsMemory | None, tokens_per_step: int) -> tuple[Tensor, Tensor]:
    """Stream positions (N,) and episode ids (B, N) of the tokens one call feeds.

    ``dones`` holds the episode-end flags of the steps before each new z (see the module docstring):
    (B, T-1) without memory, (B, T) with memory. The call feeds groups (r_{t-1}, z_t, a_t) -- or
    (z_t, a_t) without reward tokens -- where z_t and a_t open a new episode when d_{t-1} is true and
    r_{t-1} stays in the episode of step t-1. Without memory the first group has no r_{-1} token.
    """
    episode = chunk_episodes(dones, memory, tokens_per_step)  # (B, N)
    first = 0 if memory is None else memory.num_tokens
    positions = torch.arange(first, first + episode.shape[1], device=dones.device)  # (N,)
    return positions, episode


def chunk_episodes(dones: Tensor, memory: DynamicsMemory | None, tokens_per_step: int) -> Tensor:
    """The episode ids (B, N) of ``chunk_tokens`` (its positions are first, first + 1, ...)."""
    n = tokens_per_step
    B = dones.shape[0]
    prev_done = dones.long()  # (B, T) or (B, T-1)
    if memory is None:
        # A virtual step -1 that did not end: step 0 starts episode 0 at position 0.
        prev_done = torch.cat([prev_done.new_zeros(B, 1), prev_done], dim=1)  # (B, T)
        last_episode = prev_done.new_zeros(B)
    else:
        last_episode = memory.episode[:, -1]  # episode of the previous call's last step
    T = prev_done.shape[1]
    step_episode = last_episode[:, None] + prev_done.cumsum(dim=1)  # (B, T) episode of z_t and a_t
    if n == 3:
        reward_episode = step_episode - prev_done  # (B, T) episode of r_{t-1}, i.e. of step t-1
        groups = [reward_episode, step_episode, step_episode]
    else:
        groups = [step_episode, step_episode]
    episode = torch.stack(groups, dim=2).reshape(B, n * T)  # (B, T*n) in stream order
    if memory is None and n == 3:
        episode = episode[:, 1:]  # drop r_{-1}: z_0 is at position 0
    return episode


@dataclass(frozen=True)
class StreamPositions:
    """What one call needs of its tokens' positions alone: the new tokens sit at ``query``
    (first_query .. first_query + N - 1) and attend to ``keys`` (first_key .. the last new token).

    mask (N, K): ``position_mask`` (causal and inside the window); distance (N, K): the clamped
    query-key distances that index the relative-position table.
    """

    query: Tensor
    keys: Tensor
    mask: Tensor
    distance: Tensor


def extend_memory(
    memory: DynamicsMemory | None, layer_inputs: list[Tensor], episode: Tensor, num_tokens: int, keep: int
) -> DynamicsMemory:
    """Append a call's tokens (per-layer inputs (B, N, d), episode ids (B, N)) and keep the last ``keep``.

    The hidden states are detached: imagination never backpropagates into earlier calls.
    """
    if memory is not None:
        layer_inputs = [torch.cat([m, x], dim=1) for m, x in zip(memory.hiddens, layer_inputs, strict=True)]
        episode = torch.cat([memory.episode, episode], dim=1)  # (B, L+N)
    return DynamicsMemory(
        hiddens=[x[:, -keep:].detach() for x in layer_inputs],  # each (B, min(L+N, keep), d)
        episode=episode[:, -keep:],  # (B, min(L+N, keep))
        num_tokens=num_tokens,
    )


# --------------------------------------------------------------------------------------- heads


def _kaiming_uniform_(linear: nn.Linear, gain: float) -> None:
    """Uniform init with std = gain / sqrt(fan_in) and zero bias, as the released ``nets.MLP``."""
    bound = math.sqrt(3.0) * gain / math.sqrt(linear.in_features)
    nn.init.uniform_(linear.weight, -bound, bound)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


# The released code initialises layers followed by SiLU with the ReLU gain.
SILU_GAIN = math.sqrt(2.0)
# How many StreamPositions a model keeps (a rollout uses horizon + 1 of them; a dream grows forever).
MAX_KEPT_POSITIONS = 1024


def mlp_head(
    in_dim: int, hidden: int, layers: int, out_dim: int, dropout: float, final_bias: float = 0.0
) -> nn.Sequential:
    """SiLU, then ``layers`` x (Linear, SiLU, Dropout), then a Linear whose bias starts at ``final_bias``.

    The leading SiLU acts on h_t (the released heads use ``pre_activation=True``), and dropout
    follows each hidden activation as in the released ``nets.MLP`` with ``dropout_p=0.1``.
    """
    modules: list[nn.Module] = [nn.SiLU()]
    width = in_dim
    for _ in range(layers):
        linear = nn.Linear(width, hidden)
        _kaiming_uniform_(linear, SILU_GAIN)
        modules += [linear, nn.SiLU(), nn.Dropout(dropout)]
        width = hidden
    final = nn.Linear(width, out_dim)
    _kaiming_uniform_(final, 1.0)
    nn.init.constant_(final.bias, final_bias)
    modules.append(final)
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------------------- model


@dataclass
class AttentionMaps:
    """What the new tokens of one ``DynamicsModel.forward`` call attended to (``return_attention``).

    Attributes:
        probs: per transformer layer, (B, heads, N, K) attention probabilities (before attention
            dropout) of the N new tokens over the K keys (the memory tokens, then the new tokens).
        allowed: (B, N, K) the attention mask (True where a key may be attended to).
        query_positions: (N,) stream positions of the new tokens; ``pos // n`` is the token's step
            and ``pos % n`` its type (``transformer_xl.Z_TOKEN``, ``A_TOKEN``, ``R_TOKEN``).
        key_positions: (K,) stream positions of the keys.
    """

    probs: list[Tensor]
    allowed: Tensor
    query_positions: Tensor
    key_positions: Tensor


@dataclass
class DynamicsOutput:
    """Predictions for T steps, all read from h_t (the transformer output at token a_t).

    Attributes:
        z_logits: (B, T, C, K) logits of z_{t+1} (C categoricals of K classes).
        reward_mean: (B, T) mean of the unit-variance Gaussian over r_t.
        discount_logit: (B, T) Bernoulli logit of gamma_t (the probability is the discount).
        h: (B, T, d) deterministic states.
        memory: what the next call continues from.
        attention: the attention maps of the call, only with ``return_attention=True``.
        reward_logits: (B, T, bins) with ``reward_head`` 'twohot' (``reward_mean`` is then their
            decoded value), else None.
    """

    z_logits: Tensor
    reward_mean: Tensor
    discount_logit: Tensor
    h: Tensor
    memory: DynamicsMemory
    attention: AttentionMaps | None = None
    reward_logits: Tensor | None = None

    def time_slice(self, index: slice) -> DynamicsOutput:
        """The predictions of some steps (e.g. ``slice(1, None)`` drops the context step); same memory."""
        return dataclasses.replace(
            self,
            z_logits=self.z_logits[:, index],
            reward_mean=self.reward_mean[:, index],
            reward_logits=None if self.reward_logits is None else self.reward_logits[:, index],
            discount_logit=self.discount_logit[:, index],
            h=self.h[:, index],
        )


class DynamicsModel(nn.Module):
    """Embeddings -> Transformer-XL -> heads on h_t (docs/method.md, "Dynamics model")."""

    def __init__(
        self,
        cfg: DynamicsConfig,
        latent_dim: int,
        categoricals: int,
        classes: int,
        num_actions: int,
        latent_unimix: float = 0.0,
    ) -> None:
        super().__init__()
        # The next-latent prediction mixes in the uniform distribution as the encoder does
        # (obs_model.unimix; 0 in the paper).
        self.latent_unimix = latent_unimix
        if latent_dim != categoricals * classes:
            raise ValueError(f"latent_dim {latent_dim} != categoricals {categoricals} x classes {classes}")
        self.cfg = cfg
        self.categoricals, self.classes = categoricals, classes
        self.tokens_per_step = 3 if cfg.input_rewards else 2
        n, d = self.tokens_per_step, cfg.d_model
        # The first new token of a call sees back to z_{t-M-1}: that and everything up to a_{t-1}
        # is n * M + 2 tokens (see transformer_xl.window_start).
        self.memory_tokens = n * cfg.memory_steps + 2

        embed_z = nn.Linear(latent_dim, d)
        _kaiming_uniform_(embed_z, SILU_GAIN)
        self.embed_z = nn.Sequential(embed_z, nn.SiLU())
        self.embed_a = nn.Embedding(num_actions, d)
        self.embed_r: nn.Sequential | None = None
        if cfg.input_rewards:
            embed_r = nn.Linear(1, d)
            _kaiming_uniform_(embed_r, SILU_GAIN)
            self.embed_r = nn.Sequential(embed_r, nn.SiLU())

        self.transformer = TransformerXL(
            d_model=d,
            layers=cfg.layers,
            heads=cfg.heads,
            head_dim=cfg.head_dim,
            ff_dim=cfg.ff_dim,
            dropout=cfg.dropout,
            max_distance=n * (cfg.memory_steps + 1),  # the longest window (z and a tokens)
            attention=cfg.attention,
        )

        # StreamPositions by (first key, first query, count, device): a rollout asks for the same
        # few at every update, so they are built once instead of by a dozen small operators each step.
        self._positions: dict[tuple[int, int, int, str], StreamPositions] = {}

        self.z_head = mlp_head(d, cfg.z_head_hidden, cfg.z_head_layers, latent_dim, cfg.dropout)
        # reward_head 'twohot': logits over the bins of ``reward_bins``, starting uniform (predicting 0).
        self.reward_bins = TwoHotSymlog(spacing=cfg.reward_bins) if cfg.reward_head == "twohot" else None
        reward_out = 1 if self.reward_bins is None else self.reward_bins.num_bins
        self.reward_head = mlp_head(d, cfg.reward_head_hidden, cfg.reward_head_layers, reward_out, cfg.dropout, 0.0)
        if self.reward_bins is not None:
            zero_output_layer(cast(nn.Linear, self.reward_head[-1]))
        # Starts predicting P(not terminated) = sigmoid(0.99), as the released code (final_bias_init
        # = env_discount_factor): a bias of 0.99 on the logit, not a probability of 0.99.
        self.discount_head = mlp_head(
            d, cfg.discount_head_hidden, cfg.discount_head_layers, 1, cfg.dropout, final_bias=0.99
        )

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        z: Tensor,
        actions: Tensor,
        rewards: Tensor | None,
        dones: Tensor,
        memory: DynamicsMemory | None = None,
        return_attention: bool = False,
    ) -> DynamicsOutput:
        """Feed T new steps and predict, for each, z_{t+1}, r_t and gamma_t from h_t.

        Args:
            z: (B, T, latent_dim) latents z_t (one-hot samples).
            actions: (B, T) long, actions a_t.
            rewards: rewards of the steps before each new z: (B, T-1) without memory, (B, T) with
                memory (see the module docstring). May be None when ``cfg.input_rewards`` is false.
            dones: (B, T-1) or (B, T) bool, terminated | truncated of the same steps as ``rewards``.
            memory: the previous call's ``DynamicsOutput.memory``, or None to start a new stream.
            return_attention: also return the attention probabilities (``DynamicsOutput.attention``)
                for visualisation; the predictions are exactly the same either way.
        """
        B, T = actions.shape
        n = self.tokens_per_step
        expected = T if memory is not None else T - 1
        if z.shape[:2] != (B, T) or dones.shape != (B, expected):
            raise ValueError(
                f"z {tuple(z.shape)}, actions {tuple(actions.shape)}, dones {tuple(dones.shape)}: "
                f"dones (and rewards) need shape ({B}, {expected}) {'with' if memory is not None else 'without'} memory"
            )
        if memory is not None and memory.episode.shape[0] != B:
            raise ValueError(f"memory holds {memory.episode.shape[0]} rows, the input {B}")

        # Token embeddings, grouped per new step as (r_{t-1}, z_t, a_t) in stream order.
        groups = [self.embed_z(z), self.embed_a(actions)]  # 2 x (B, T, d)
        if self.embed_r is not None:
            if rewards is None or rewards.shape != (B, expected):
                got = None if rewards is None else tuple(rewards.shape)
                raise ValueError(f"rewards need shape ({B}, {expected}), got {got}")
            if memory is None:  # a placeholder r_{-1}, dropped below, keeps the groups rectangular
                rewards = torch.cat([rewards.new_zeros(B, 1), rewards], dim=1)  # (B, T)
            groups.insert(0, self.embed_r(rewards[..., None].to(z.dtype)))  # (B, T, d)
        tokens = torch.stack(groups, dim=2).reshape(B, T * n, -1)  # (B, T*n, d)
        dropped = int(memory is None and n == 3)
        tokens = tokens[:, dropped:]  # (B, T*n - dropped, d)

        episode = chunk_episodes(dones, memory, n)  # (B, N)
        if memory is None:
            key_episode, hiddens = episode, None
            pos = self.stream_positions(0, 0, episode.shape[1], episode.device)
        else:
            key_episode = torch.cat([memory.episode, episode], dim=1)  # (B, L+N)
            hiddens = memory.hiddens
            first = memory.num_tokens
            pos = self.stream_positions(first - memory.length, first, episode.shape[1], episode.device)
        positions, key_positions = pos.query, pos.keys  # (N,), (L+N,)
        # build_attention_mask, with its position part kept: (B, N, L+N)
        allowed = pos.mask[None] & (episode[:, :, None] == key_episode[:, None, :])
        attention_out: list[Tensor] | None = [] if return_attention else None
        # Count tokens on the host (no device sync): the stream now ends after the new tokens.
        num_tokens = (0 if memory is None else memory.num_tokens) + tokens.shape[1]
        if memory is not None and memory.kv is not None:
            kv = memory.kv
            if kv.tokens != memory.num_tokens:
                raise ValueError("a key/value-cached memory can only be continued from its newest state")
            out = self.transformer.forward_cached(tokens, key_positions, allowed, kv, attention_out, pos.distance)
            kv.tokens = num_tokens
            keep = self.memory_tokens
            new_memory = DynamicsMemory(
                hiddens=[], episode=key_episode[:, -keep:], num_tokens=num_tokens, kv=kv
            )
        else:
            out, layer_inputs = self.transformer(
                tokens, key_positions, allowed, hiddens, attention_out, pos.distance
            )
            new_memory = extend_memory(memory, layer_inputs, episode, num_tokens, self.memory_tokens)

        # h_t is the output at a_t, the last token of each group: tokens n-1-dropped, 2n-1-dropped, ...
        h = out[:, n - 1 - dropped :: n]  # (B, T, d), a view
        # Under bfloat16 autocast the predictions leave in float32 (losses, sampling).
        h = full_precision(h)
        # (B, T, C, K)
        z_logits = full_precision(self.z_head(h)).reshape(B, T, self.categoricals, self.classes)
        z_logits = mix_uniform(z_logits, self.latent_unimix)
        reward_out = full_precision(self.reward_head(h))  # (B, T, 1) or (B, T, bins)
        if self.reward_bins is None:
            reward_mean, reward_logits = reward_out.squeeze(-1), None
        else:
            reward_mean, reward_logits = self.reward_bins.decode(reward_out), reward_out
        return DynamicsOutput(
            z_logits=z_logits,
            reward_mean=reward_mean,  # (B, T)
            reward_logits=reward_logits,
            discount_logit=full_precision(self.discount_head(h)).squeeze(-1),  # (B, T)
            h=h,
            memory=new_memory,
            attention=None
            if attention_out is None
            else AttentionMaps(attention_out, allowed, positions, key_positions),
        )

    def stream_positions(self, first_key: int, first_query: int, count: int, device: torch.device) -> StreamPositions:
        """The ``StreamPositions`` of ``count`` new tokens from ``first_query`` over keys from ``first_key``."""
        if torch.compiler.is_compiling():
            # Inside a captured region the positions are built in the graph (constants to inductor).
            # Reading the cache would make the region guard on it, and eager acting, which fills and
            # clears the cache (a policy reading h steps the transformer at every real step), would
            # then recompile the region again and again.
            return self._build_positions(first_key, first_query, count, device)
        key = (first_key, first_query, count, str(device))
        found = self._positions.get(key)
        if found is None:
            if len(self._positions) >= MAX_KEPT_POSITIONS:  # long streams (dreams) never repeat one
                self._positions.clear()
            with torch.inference_mode(False):  # usable in training too
                found = self._build_positions(first_key, first_query, count, device)
            self._positions[key] = found
        return found

    @torch.no_grad()
    def _build_positions(self, first_key: int, first_query: int, count: int, device: torch.device) -> StreamPositions:
        query = torch.arange(first_query, first_query + count, device=device)  # (N,)
        keys = torch.arange(first_key, first_query + count, device=device)  # (K,)
        mask = position_mask(query, keys, self.tokens_per_step, self.cfg.memory_steps)
        return StreamPositions(query, keys, mask, self.transformer.distance(keys, count))

    def cache_memory(self, memory: DynamicsMemory, capacity: int) -> DynamicsMemory:
        """The same memory with each layer's keys and values in a ``KVCache`` of ``capacity`` tokens.

        Continuing from it gives the same predictions as continuing from ``memory`` (the keys and
        values are those the plain path would re-project at every call), at the cost of projecting
        each token once. For inference only (eval mode, no gradient); ``capacity`` should cover the
        memory and the tokens still to come (e.g. ``memory.length + 3 * horizon``), more are
        possible at the cost of a copy.
        """
        if memory.kv is not None:
            return memory
        if torch.is_grad_enabled():
            raise RuntimeError("the key/value cache is for inference: run it under torch.no_grad()")
        kv = self.transformer.start_cache(memory.hiddens, capacity)
        kv.tokens = memory.num_tokens
        return DynamicsMemory(hiddens=[], episode=memory.episode, num_tokens=memory.num_tokens, kv=kv)

    # ------------------------------------------------------------------ loss

    def compute_loss(
        self,
        out: DynamicsOutput,
        target_z_probs: Tensor,
        rewards: Tensor,
        terminated: Tensor,
        truncated: Tensor,
        gamma: float = 0.99,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Dynamics loss of docs/method.md ("Dynamics model") for the T steps of ``out``.

        Args:
            out: predictions for steps t = 0..T-1 (slice off a context step first if needed).
            target_z_probs: (B, T, C, K) the encoder's (detached) distribution of z_{t+1}.
            rewards: (B, T) r_t.
            terminated, truncated: (B, T) bool, how step t ended.
            gamma: discount target of a transition that did not terminate.

        Returns:
            loss = z_loss + reward_coef * reward_loss + discount_coef * discount_loss (without z_loss
            when ``cfg.latent_loss`` is false), and the unweighted sub-losses (detached) under "dyn/...".

        - z_loss: cross-entropy -sum p log q over classes, summed over categoricals, averaged over
          the steps that did not end the episode (after d_t, z_{t+1} belongs to another episode).
        - reward_loss: NLL of r_t under N(mean, 1), averaged over all steps. It includes the
          constant 0.5 log(2 pi) (as torch's Normal.log_prob in the released code), which only
          shifts the reported value, not the gradient. With ``reward_head`` 'twohot': the
          cross-entropy from the two-hot encoding of symlog(r_t) instead.
        - discount_loss: Bernoulli NLL with the soft target gamma (or 0 if terminated), all steps.
        """
        cfg = self.cfg
        target_z_probs = target_z_probs.detach()
        log_q = out.z_logits.log_softmax(dim=-1)  # (B, T, C, K)
        z_ce = -(target_z_probs * log_q).sum(dim=(-1, -2))  # (B, T)
        valid = (~(terminated | truncated)).to(z_ce.dtype)  # (B, T)
        # A batch whose every step ended an episode has no z target: loss 0 rather than 0/0.
        z_loss = (z_ce * valid).sum() / valid.sum().clamp_min(1.0)

        if self.reward_bins is None or out.reward_logits is None:
            reward_loss = (0.5 * (rewards - out.reward_mean) ** 2).mean() + 0.5 * math.log(2 * math.pi)
        else:  # reward_head 'twohot': cross-entropy to the two-hot symlog target
            reward_loss = self.reward_bins.loss(out.reward_logits, rewards).mean()

        discount_target = gamma * (~terminated).to(out.discount_logit.dtype)  # (B, T)
        discount_loss = F.binary_cross_entropy_with_logits(out.discount_logit, discount_target)

        loss = cfg.reward_coef * reward_loss + cfg.discount_coef * discount_loss
        if cfg.latent_loss:  # off: the released code, whose next-latent head never learns
            loss = loss + z_loss
        metrics = {
            "dyn/loss": loss.detach(),
            "dyn/z_loss": z_loss.detach(),
            "dyn/reward_loss": reward_loss.detach(),
            "dyn/discount_loss": discount_loss.detach(),
            "dyn/reward_mae": (rewards - out.reward_mean).abs().mean().detach(),
            "dyn/discount_mae": (discount_target - out.discount_logit.sigmoid()).abs().mean().detach(),
        }
        return loss, metrics
