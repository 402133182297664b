"""Transformer-XL decoder (Dai et al. 2019) as TWM's dynamics model uses it.

Read bottom-up:

1. ``sinusoidal_table``       -- fixed encodings of relative distances 0, 1, 2, ...
2. ``build_attention_mask``   -- which key token each query token may attend to (causal, window,
                                 episode boundaries), in terms of TWM's z/a/r token stream
3. ``RelativeAttention``      -- multi-head self-attention over [memory, new tokens] with relative
                                 positions: score = (q + u) k^T + (q + v) R^T, scaled by 1/sqrt(d_model)
4. ``TransformerXLLayer``     -- post-norm block: x = LN(x + Attn(x)); x = LN(x + FF(x))
5. ``TransformerXL``          -- the stack, with u, v and the positional table shared by all layers;
                                 ``start_cache`` / ``forward_cached`` run it on a ``KVCache`` (each
                                 layer's keys and values of the tokens fed so far, for inference)

Faithful to the released TWM code (jrobine/twm, ``nets.py``): scores are scaled by 1/sqrt(d_model),
not 1/sqrt(head_dim); the q/k/v, position and output projections have no bias; dropout acts on the
positional encodings, the attention probabilities, after the output projection and in the
feed-forward block (after the activation and after the second linear layer). The released code does
*not* apply dropout to the input embeddings, so neither do we.

Relative positions: Transformer-XL computes the position term for every key offset and then aligns
it with a "relative shift" (pad, reshape, slice). We compute the term once per distance 0..P-1 and
gather the entry for each (query, key) pair, which yields exactly the same numbers
(term[i, j] uses distance pos_i - pos_j in both) and is easier to follow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from twm.models.kv_cache import KVCache

# Position of each token type inside a time step of TWM's token stream z_0 a_0 r_0 z_1 a_1 r_1 ...
Z_TOKEN, A_TOKEN, R_TOKEN = 0, 1, 2


# --------------------------------------------------------------------------------------- positions


def sinusoidal_table(num_distances: int, dim: int) -> Tensor:
    """(num_distances, dim) sinusoidal encodings of the distances 0..num_distances-1.

    Even channels hold sines and odd channels cosines of geometrically spaced frequencies (as the
    released code does; the interleaving is irrelevant because a learned projection follows).
    """
    distance = torch.arange(num_distances, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_distances, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(distance * inv_freq)
    table[:, 1::2] = torch.cos(distance * inv_freq)[:, : dim // 2]
    return table.float()


# --------------------------------------------------------------------------------------- mask


def window_start(pos: Tensor, tokens_per_step: int, memory_steps: int) -> Tensor:
    """Absolute position of the oldest token that the token at ``pos`` may attend to (before clamping).

    The token stream is z_0 a_0 r_0 z_1 a_1 r_1 ... (or z_0 a_0 z_1 a_1 ... without reward tokens),
    so the token at ``pos`` belongs to step ``pos // n`` and has type ``pos % n``. With M memory
    steps the released code (``PredictionNet._get_base_mask``) lets

    - z_s and a_s see the n * (M + 1) previous tokens, i.e. back to z_{s-M-1}, resp. a_{s-M-1};
    - r_s see back to z_{s-M}, the first token of step s - M (n * M + 2 previous tokens).

    This is exactly what a memory of n * M + 2 tokens can serve when imagination feeds one step at a
    time as (r_{t-1}, z_t, a_t): the memory then ends at a_{t-1} and starts at z_{t-M-1}; r_{t-1}
    and z_t see all of it, a_t all of it except z_{t-M-1} (its window is n * (M + 1) tokens long).
    So the window is "the last n * (M + 1) tokens, but nothing older than the memory can hold".
    """
    n = tokens_per_step
    step, kind = pos // n, pos % n
    return torch.where(kind == R_TOKEN, n * (step - memory_steps), pos - n * (memory_steps + 1))


def build_attention_mask(
    query_pos: Tensor,
    key_pos: Tensor,
    query_episode: Tensor,
    key_episode: Tensor,
    tokens_per_step: int,
    memory_steps: int,
) -> Tensor:
    """(B, Q, K) boolean mask, True where a query token may attend to a key token.

    Args:
        query_pos: (Q,) absolute stream positions of the query tokens (step * n + type).
        key_pos: (K,) absolute stream positions of the key tokens (memory first, then the queries).
        query_episode, key_episode: (B, Q), (B, K) episode ids: the number of episode ends
            (terminated or truncated) among the steps *before* the token's step. A token of step i
            may not see a token of step j < i when some d_k is true for j <= k < i, which is the
            same as "their episode ids differ", since id_i - id_j = sum_{j <= k < i} d_k.
        tokens_per_step: n = 3 (z, a, r) or 2 (z, a; no reward tokens).
        memory_steps: M, how many time steps attention reaches back (see ``window_start``).

    Every token sees itself (causal, inside its window, same episode), so no row is fully masked
    and the softmax never meets a row of -inf only.
    """
    same_episode = query_episode[:, :, None] == key_episode[:, None, :]  # (B, Q, K)
    return position_mask(query_pos, key_pos, tokens_per_step, memory_steps)[None] & same_episode


def position_mask(query_pos: Tensor, key_pos: Tensor, tokens_per_step: int, memory_steps: int) -> Tensor:
    """(Q, K) the part of ``build_attention_mask`` that depends on positions only: causal, in window."""
    causal = key_pos[None, :] <= query_pos[:, None]  # (Q, K)
    start = window_start(query_pos, tokens_per_step, memory_steps)  # (Q,)
    return causal & (key_pos[None, :] >= start[:, None])


# --------------------------------------------------------------------------------------- attention


class RelativeAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions and a memory of past inputs."""

    def __init__(
        self, d_model: int, heads: int, head_dim: int, dropout: float, attention: Literal["plain", "fused"]
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.dropout = dropout
        self.attention = attention
        # The released model scales by the model width, not by the head dimension.
        self.scale = 1.0 / math.sqrt(d_model)
        inner = heads * head_dim
        self.qkv = nn.Linear(d_model, 3 * inner, bias=False)
        self.pos = nn.Linear(d_model, inner, bias=False)  # W_{k,R} of the paper
        self.out = nn.Linear(inner, d_model, bias=False)
        self.attn_drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        rel_table: Tensor,
        distance: Tensor,
        blocked: Tensor,
        u: Tensor,
        v: Tensor,
        attention_out: list[Tensor] | None = None,
    ) -> Tensor:
        """x (B, Q, d), memory (B, L, d) or None, rel_table (P, d), distance (Q, L+Q) in [0, P),
        blocked (B, 1, Q, L+Q) = ~allowed[:, None] (True where a key may not be attended to), u and v (heads, head_dim) -> (B, Q, d).

        ``attention_out``: a list to which the attention probabilities (B, h, Q, L+Q), before
        attention dropout and detached, are appended (for visualisation). It only reads what the
        computation produces: the output is bitwise the same with or without it.
        """
        B, Q, _ = x.shape
        h, hd = self.heads, self.head_dim
        # Keys and values come from the memory and the new tokens; queries only from the new ones.
        context = x if memory is None else torch.cat([memory, x], dim=1)  # (B, K, d)
        K = context.shape[1]
        q, k, val = self.qkv(context).chunk(3, dim=-1)  # 3 x (B, K, h*hd)
        q = q[:, K - Q :].reshape(B, Q, h, hd).transpose(1, 2)  # (B, h, Q, hd)
        k = k.reshape(B, K, h, hd).transpose(1, 2)  # (B, h, K, hd)
        val = val.reshape(B, K, h, hd).transpose(1, 2)  # (B, h, K, hd)
        r = self.project_positions(rel_table)  # (h, P, hd)
        return self.attend(q, k, val, r, distance, blocked, u, v, attention_out)

    def project_positions(self, rel_table: Tensor) -> Tensor:
        """W_{k,R} applied to the relative-position table: (P, d) -> (h, P, hd)."""
        return self.pos(rel_table).reshape(-1, self.heads, self.head_dim).transpose(0, 1)

    def project_keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, h, N, hd) of hidden states x (B, N, d) (the queries are dropped)."""
        B, N, _ = x.shape
        _, k, val = self.qkv(x).chunk(3, dim=-1)
        shape = (B, N, self.heads, self.head_dim)
        return k.reshape(shape).transpose(1, 2), val.reshape(shape).transpose(1, 2)

    def fused_attend(
        self, q_content: Tensor, k: Tensor, val: Tensor, bias: Tensor, attention_out: list[Tensor] | None
    ) -> Tensor:
        """softmax(q_content k^T * scale + bias) @ val with ``scaled_dot_product_attention``: (B, h, Q, hd).

        bias (B, h, Q, K) holds the scaled position term, -inf where a key is blocked.
        """
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q_content, k, val, attn_mask=bias, dropout_p=p, scale=self.scale)
        if attention_out is not None:
            # The fused kernel does not expose its probabilities: recompute them on the side, so
            # the output above stays the fused one.
            scores = (q_content @ k.transpose(-1, -2)) * self.scale + bias  # (B, h, Q, K)
            attention_out.append(scores.softmax(dim=-1).detach())
        return y

    def forward_cached(
        self,
        x: Tensor,
        cache: KVCache,
        layer: int,
        distance: Tensor,
        blocked: Tensor,
        attention_out: list[Tensor] | None = None,
    ) -> Tensor:
        """The same attention as ``forward`` with the memory's keys and values read from ``cache``.

        x (B, Q, d) are the new tokens; their keys and values are written into the cache at
        ``cache.filled .. cache.filled + Q`` and the keys attended to are the last
        ``distance.shape[1]`` tokens of the cache (the memory, then x).

        Fewer operations than ``attend``, the same scores: the projection adds u to the queries
        (``cache.qkv_bias``), so the content term is (q + u) . k as there, and the position term
        (q + v) . r_d = (q + u) . r_d + (v - u) . r_d takes its second part from
        ``cache.position_bias``: one batched product with its bias (and the scale) added, no
        per-step adds, multiplies or copies of the queries.
        """
        B, Q, _ = x.shape
        h, hd = self.heads, self.head_dim
        qkv = F.linear(x, self.qkv.weight, cache.qkv_bias).view(B, Q, 3, h, hd)  # q + u, k, v
        end = cache.filled + Q
        start = end - distance.shape[1]
        kv = cache.kv[layer]  # (2, B, h, capacity, hd)
        kv[:, :, :, cache.filled : end] = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)  # (2, B, h, Q, hd)
        keys, values = kv[0, :, :, start:end], kv[1, :, :, start:end]  # (B, h, K, hd)
        q_u = qkv[:, :, 0]  # (B, Q, h, hd)
        K = keys.shape[2]

        # Position term, scaled, one score per distance: (h, B*Q, hd) @ (h, hd, P) plus (h, 1, P).
        r = cache.positions[layer]  # (h, P, hd)
        P = r.shape[1]
        q_rows = q_u.reshape(B * Q, h, hd).transpose(0, 1)  # (h, B*Q, hd), a view
        pos = torch.baddbmm(
            cache.position_bias[layer], q_rows, r.transpose(1, 2), beta=self.scale, alpha=self.scale
        )  # (h, B*Q, P)
        pos = pos.view(h, B, Q, P).transpose(0, 1)  # (B, h, Q, P)
        bias = pos.gather(-1, distance[None, None].expand(B, h, Q, K))  # (B, h, Q, K)
        bias = bias.masked_fill(blocked, float("-inf"))
        q_content = q_u.transpose(1, 2)  # (B, h, Q, hd)
        if self.attention == "fused":
            y = self.fused_attend(q_content, keys, values, bias, attention_out)
        else:
            scores = torch.baddbmm(
                bias.reshape(B * h, Q, K),
                q_content.reshape(B * h, Q, hd),
                keys.reshape(B * h, K, hd).transpose(1, 2),
                alpha=self.scale,
            ).view(B, h, Q, K)
            weights = scores.softmax(dim=-1)  # (B, h, Q, K)
            if attention_out is not None:
                attention_out.append(weights.detach())
            y = weights @ values  # (B, h, Q, hd); no dropout in eval mode, where the cache lives
        y = y.transpose(1, 2).reshape(B, Q, h * hd)  # (B, Q, h*hd)
        return self.out(y)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        val: Tensor,
        r: Tensor,
        distance: Tensor,
        blocked: Tensor,
        u: Tensor,
        v: Tensor,
        attention_out: list[Tensor] | None = None,
    ) -> Tensor:
        """Queries (B, h, Q, hd) over keys and values (B, h, K, hd), positions r (h, P, hd) -> (B, Q, d)."""
        B, h, Q, hd = q.shape
        K = k.shape[2]

        # Position term (terms (b) + (d) of Dai et al.): one score per distance, then the entry of
        # each (query, key) pair is gathered -- the exact equivalent of Transformer-XL's rel-shift.
        # One matrix product per head over all B*Q queries: (h, B*Q, hd) @ (h, hd, P). Broadcasting
        # (B, h, Q, hd) @ (h, hd, P) instead would copy r B times and run B*h tiny products.
        qv = (q + v[:, None, :]).transpose(0, 1).reshape(h, B * Q, hd)  # (h, B*Q, hd)
        P = r.shape[1]
        pos_scores = (qv @ r.transpose(1, 2)).reshape(h, B, Q, P).transpose(0, 1)  # (B, h, Q, P)
        index = distance[None, None].expand(B, h, Q, K)  # (B, h, Q, K)
        pos_scores = pos_scores.gather(-1, index)  # (B, h, Q, K)
        q_content = q + u[:, None, :]  # (B, h, Q, hd), terms (a) + (c)

        if self.attention == "fused":
            # scaled_dot_product_attention computes softmax(q k^T * scale + attn_mask): fold the
            # (scaled) position term and the mask into the additive float mask.
            bias = (pos_scores * self.scale).masked_fill(blocked, float("-inf"))  # (B, h, Q, K)
            y = self.fused_attend(q_content, k, val, bias, attention_out)
        else:
            scores = (q_content @ k.transpose(-1, -2) + pos_scores) * self.scale  # (B, h, Q, K)
            scores = scores.masked_fill(blocked, float("-inf"))
            weights = scores.softmax(dim=-1)  # (B, h, Q, K)
            if attention_out is not None:
                attention_out.append(weights.detach())
            probs = self.attn_drop(weights)
            y = probs @ val  # (B, h, Q, hd)
        y = y.transpose(1, 2).reshape(B, Q, h * hd)  # (B, Q, h*hd)
        return self.out(y)


# --------------------------------------------------------------------------------------- block


class TransformerXLLayer(nn.Module):
    """Post-norm block: x = LN(x + Dropout(Attn(x))); x = LN(x + FF(x))."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        head_dim: int,
        ff_dim: int,
        dropout: float,
        attention: Literal["plain", "fused"],
    ) -> None:
        super().__init__()
        self.attn = RelativeAttention(d_model, heads, head_dim, dropout, attention)
        self.attn_out_drop = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, d_model),
            nn.Dropout(dropout),
        )
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        rel_table: Tensor,
        distance: Tensor,
        blocked: Tensor,
        u: Tensor,
        v: Tensor,
        attention_out: list[Tensor] | None = None,
    ) -> Tensor:
        attn = self.attn(x, memory, rel_table, distance, blocked, u, v, attention_out)
        return self.finish(x, attn)

    def finish(self, x: Tensor, attn: Tensor) -> Tensor:
        """The residual blocks around the attention output attn (B, Q, d)."""
        x = self.norm1(x + self.attn_out_drop(attn))
        return self.norm2(x + self.ff(x))


# --------------------------------------------------------------------------------------- stack


class TransformerXL(nn.Module):
    """A stack of ``TransformerXLLayer`` with shared relative-position biases u, v and table.

    ``max_distance`` is the largest query-key distance that may be attended to (the window length);
    larger distances only occur for masked pairs and are clamped.
    """

    rel_table: Tensor  # a (non-persistent) buffer, registered in __init__

    def __init__(
        self,
        d_model: int,
        layers: int,
        heads: int,
        head_dim: int,
        ff_dim: int,
        dropout: float,
        max_distance: int,
        attention: Literal["plain", "fused"] = "plain",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerXLLayer(d_model, heads, head_dim, ff_dim, dropout, attention) for _ in range(layers)
        )
        # Learned content bias u and position bias v (Dai et al. 2019), shared across layers.
        self.u = nn.Parameter(torch.empty(heads, head_dim))
        self.v = nn.Parameter(torch.empty(heads, head_dim))
        nn.init.xavier_uniform_(self.u)
        nn.init.xavier_uniform_(self.v)
        # Deterministic, so not part of the state dict.
        self.register_buffer("rel_table", sinusoidal_table(max_distance + 1, d_model), persistent=False)
        self.pos_drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        allowed: Tensor,
        memory: list[Tensor] | None = None,
        attention_out: list[Tensor] | None = None,
        distance: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Run the new tokens x (B, Q, d) on top of an optional memory.

        Args:
            x: (B, Q, d) embedded new tokens.
            positions: (K,) absolute positions of all keys, K = L + Q: the L memory tokens, then x.
            allowed: (B, Q, K) mask from ``build_attention_mask``.
            memory: per layer (B, L, d), the inputs that layer saw for the L previous tokens.
            attention_out: if a list, each layer appends its attention probabilities (B, h, Q, K)
                (read-only: the outputs do not change).
            distance: (Q, K) ``self.distance(positions, Q)`` if the caller has it already.

        Returns:
            The output (B, Q, d) and, per layer, its input for the new tokens (B, Q, d) -- what the
            caller appends to the memory.
        """
        Q = x.shape[1]
        distance = self.distance(positions, Q) if distance is None else distance  # (Q, K)
        blocked = ~allowed[:, None]  # (B, 1, Q, K), once for all layers
        rel_table = self.pos_drop(self.rel_table)  # (P, d), one dropout mask shared by all layers
        inputs = []
        for i, layer in enumerate(self.layers):
            inputs.append(x)
            layer_memory = None if memory is None else memory[i]
            x = layer(x, layer_memory, rel_table, distance, blocked, self.u, self.v, attention_out)
        return x, inputs

    def typed_layers(self) -> Iterable[TransformerXLLayer]:
        """``self.layers``, typed as what it holds (iterating a ``ModuleList`` yields ``Module``)."""
        return cast("Iterable[TransformerXLLayer]", self.layers)

    # ------------------------------------------------------------------ key/value cache

    def distance(self, positions: Tensor, Q: int) -> Tensor:
        """Distance of each key behind each query; keys in the future or beyond the window are
        masked anyway, clamping just keeps the gather in range."""
        num_distances = self.rel_table.shape[0]
        return (positions[-Q:, None] - positions[None, :]).clamp(0, num_distances - 1)  # (Q, K)

    def start_cache(self, memory: list[Tensor], capacity: int) -> KVCache:
        """A cache holding the keys and values of a plain memory (per layer (B, L, d) inputs).

        ``capacity`` is the number of tokens the buffers hold (the memory's L plus the tokens that
        will be fed); feeding beyond it moves the memory to the front (``KVCache.make_room``).
        Only in eval mode: the cached position table has no dropout.
        """
        if self.training:
            raise RuntimeError("the key/value cache is for inference: call .eval() first")
        B, L, _ = memory[0].shape
        capacity = max(capacity, L)
        kvs, positions, position_bias = [], [], []
        v_minus_u = (self.v - self.u)[:, None, :]  # (h, 1, hd)
        for layer, hidden in zip(self.typed_layers(), memory, strict=True):
            attn = layer.attn
            k, val = attn.project_keys_values(hidden)  # (B, h, L, hd)
            kv = k.new_empty(2, B, attn.heads, capacity, attn.head_dim)
            kv[0, :, :, :L] = k
            kv[1, :, :, :L] = val
            kvs.append(kv)
            r = attn.project_positions(self.rel_table)  # (h, P, hd)
            positions.append(r)
            position_bias.append(v_minus_u @ r.transpose(1, 2))  # (h, 1, P)
        u = self.u.reshape(-1)
        qkv_bias = torch.cat([u, u.new_zeros(2 * u.numel())])  # (3 * h * hd,)
        return KVCache(kv=kvs, positions=positions, position_bias=position_bias, qkv_bias=qkv_bias, filled=L)

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        allowed: Tensor,
        cache: KVCache,
        attention_out: list[Tensor] | None = None,
        distance: Tensor | None = None,
    ) -> Tensor:
        """``forward`` for new tokens x (B, Q, d) on top of the memory held by ``cache``.

        ``positions`` (K,) are the absolute positions of the keys: the last K - Q tokens of the
        cache, then x. The cache is extended by x (``cache.filled`` grows by Q). Returns (B, Q, d).
        """
        if self.training:
            raise RuntimeError("the key/value cache is for inference: call .eval() first")
        Q = x.shape[1]
        cache.make_room(Q, positions.shape[0] - Q)
        distance = self.distance(positions, Q) if distance is None else distance  # (Q, K)
        blocked = ~allowed[:, None]  # (B, 1, Q, K), once for all layers
        for i, layer in enumerate(self.typed_layers()):
            attn = layer.attn.forward_cached(x, cache, i, distance, blocked, attention_out)
            x = layer.finish(x, attn)
        cache.filled += Q
        return x
