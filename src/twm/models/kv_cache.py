"""The key/value cache of a Transformer-XL run for inference (imagination, dreams).

``TransformerXL.start_cache`` fills one from a plain memory and ``forward_cached`` feeds it; this
module only holds the buffers and moves them when they are full.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens fed so far, in preallocated buffers.

    During an imagination rollout the weights are fixed, so a token's keys and values never change:
    they are computed once, when the token is fed, instead of re-projecting the memory's hidden
    states at every step (the plain Transformer-XL memory). Only the buffers' last tokens are
    attended to (the memory of the plain path), so the outputs are the same. What depends only on
    the weights is computed once too (``RelativeAttention.forward_cached`` says how it is used).

    Attributes:
        kv: per layer (2, B, heads, capacity, head_dim): keys [0] and values [1] in one buffer, so a
            step writes both with one copy; tokens 0 .. filled-1 are valid.
        positions: per layer (heads, P, head_dim), the projected relative-position table r.
        position_bias: per layer (heads, 1, P): (v - u) . r_d, the part of the position term that
            does not depend on the query (the query then carries u instead of v).
        qkv_bias: (3 * heads * head_dim,): u in the query part, zeros elsewhere, so the projection
            yields q + u directly.
        filled: valid tokens in the buffers.
        tokens: the caller's stream position after the last token fed (``DynamicsModel`` uses it
            to refuse continuing from a memory that is not the newest one).
    """

    kv: list[Tensor]
    positions: list[Tensor]
    position_bias: list[Tensor]
    qkv_bias: Tensor
    filled: int
    tokens: int = 0

    @property
    def capacity(self) -> int:
        return self.kv[0].shape[3]

    @property
    def keys(self) -> list[Tensor]:  # per layer (B, heads, capacity, head_dim), views of kv
        return [kv[0] for kv in self.kv]

    @property
    def values(self) -> list[Tensor]:
        return [kv[1] for kv in self.kv]

    def make_room(self, new: int, keep: int) -> None:
        """Make room for ``new`` tokens after the last ``keep`` ones, moving those to the front if needed."""
        if self.filled + new <= self.capacity:
            return
        capacity = self.capacity
        size = max(capacity, keep + new)
        for i, buf in enumerate(self.kv):
            kept = buf[:, :, :, self.filled - keep : self.filled].clone()
            if size > capacity:
                buf = buf.new_empty(*buf.shape[:3], size, buf.shape[4])
                self.kv[i] = buf
            buf[:, :, :, :keep] = kept
        self.filled = keep
