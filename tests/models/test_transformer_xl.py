"""Transformer-XL: the attention mask against a brute-force loop, the relative-position gather against
Transformer-XL's rel-shift, and the plain vs fused attention paths."""

from __future__ import annotations

import math

import pytest
import torch

from twm.models.dynamics import DynamicsMemory, chunk_tokens, extend_memory
from twm.models.transformer_xl import (
    A_TOKEN,
    R_TOKEN,
    Z_TOKEN,
    RelativeAttention,
    TransformerXL,
    build_attention_mask,
    sinusoidal_table,
)

# --------------------------------------------------------------------------------------- brute force


def stream(num_steps: int, n: int) -> list[tuple[int, int]]:
    """(step, type) of every token z_0 a_0 [r_0] ... z_{T-1} a_{T-1} (no reward token of the last step)."""
    tokens = [(s, k) for s in range(num_steps) for k in range(n)]
    return tokens[:-1] if n == 3 else tokens


def brute_force_mask(dones: list[bool], n: int, memory_steps: int) -> torch.Tensor:
    """(N, N) True where query token i may attend to key token j, by the rules written out in words.

    - causal: j is not after i;
    - window (released code): z_s and a_s see back to the same token type of step s-M-1, r_s sees
      back to z_{s-M};
    - episodes: no d_k true for step(j) <= k < step(i).
    """
    tokens = stream(len(dones), n)
    M = memory_steps
    mask = torch.zeros(len(tokens), len(tokens), dtype=torch.bool)
    for i, (si, ki) in enumerate(tokens):
        for j, (sj, kj) in enumerate(tokens):
            if j > i:
                continue
            if ki in (Z_TOKEN, A_TOKEN):
                in_window = sj > si - M - 1 or (sj == si - M - 1 and kj >= ki)
            else:
                assert ki == R_TOKEN
                in_window = sj >= si - M
            crosses_end = any(dones[k] for k in range(sj, si))
            mask[i, j] = in_window and not crosses_end
    return mask


def random_dones(generator: torch.Generator, batch: int, steps: int, p: float = 0.25) -> torch.Tensor:
    return torch.rand(batch, steps, generator=generator) < p


@pytest.mark.parametrize("n", [3, 2])
@pytest.mark.parametrize("memory_steps", [1, 2, 4])
def test_mask_matches_brute_force_without_memory(n: int, memory_steps: int) -> None:
    g = torch.Generator().manual_seed(n * 10 + memory_steps)
    B, T = 4, 9
    dones = random_dones(g, B, T)
    # One pass over the whole stream: dones of steps 0..T-2 are inputs.
    positions, episode = chunk_tokens(dones[:, :-1], None, n)
    assert positions.tolist() == list(range(len(stream(T, n))))
    mask = build_attention_mask(positions, positions, episode, episode, n, memory_steps)
    for b in range(B):
        expected = brute_force_mask(dones[b].tolist(), n, memory_steps)
        assert torch.equal(mask[b], expected), f"row {b}, dones {dones[b].tolist()}"
        assert mask[b].diagonal().all()  # no fully masked softmax row


@pytest.mark.parametrize("n", [3, 2])
@pytest.mark.parametrize("memory_steps", [1, 3])
def test_mask_matches_brute_force_with_memory(n: int, memory_steps: int) -> None:
    """Feed the stream in random chunks with a memory: each chunk's mask is the brute-force block, and
    the memory never drops a token that some query of the next chunk may attend to."""
    g = torch.Generator().manual_seed(100 + n * 10 + memory_steps)
    B, T = 3, 14
    keep = n * memory_steps + 2
    for trial in range(4):
        dones = random_dones(g, B, T, p=0.2 if trial else 0.0)
        brute = torch.stack([brute_force_mask(dones[b].tolist(), n, memory_steps) for b in range(B)])
        memory: DynamicsMemory | None = None
        t0 = 0
        while t0 < T:
            t1 = min(T, t0 + int(torch.randint(1, 4, (1,), generator=g)))
            chunk_dones = dones[:, max(t0 - 1, 0) : t1 - 1]  # steps before each new z
            positions, episode = chunk_tokens(chunk_dones, memory, n)
            if memory is None:
                key_positions, key_episode = positions, episode
            else:
                key_positions = torch.cat([memory.positions(), positions])
                key_episode = torch.cat([memory.episode, episode], dim=1)
            mask = build_attention_mask(positions, key_positions, episode, key_episode, n, memory_steps)
            expected = brute[:, positions][:, :, key_positions]
            assert torch.equal(mask, expected), f"trial {trial}, chunk {t0}..{t1}"
            # Nothing older than the memory is visible to these queries.
            assert not brute[:, positions, : int(key_positions[0])].any()
            memory = extend_memory(memory, [], episode, int(positions[-1]) + 1, keep)
            t0 = t1
        assert memory is not None and memory.num_tokens == len(stream(T, n))


# --------------------------------------------------------------------------------------- attention


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """Transformer-XL's shift: x[..., i, c] scored against distance K-1-c -> out[..., i, j] at distance
    (K - Q + i) - j (valid for j <= i + K - Q; the rest is masked)."""
    *batch, Q, K = x.shape
    padded = torch.cat([x.new_zeros(*batch, Q, 1), x], dim=-1)  # (..., Q, K+1)
    # Reading the padded rows with stride Q moves row i left by Q - 1 - i.
    return padded.view(*batch, K + 1, Q)[..., 1:, :].reshape(*batch, Q, K)  # (..., Q, K)


def reference_attention(
    attn: RelativeAttention, x: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor, u, v
) -> torch.Tensor:
    """The released/Transformer-XL formulation: encodings of positions K-1..0, then rel_shift."""
    B, Q, d = x.shape
    h, hd = attn.heads, attn.head_dim
    context = torch.cat([memory, x], dim=1)
    K = context.shape[1]
    q, k, val = attn.qkv(context).chunk(3, dim=-1)
    q = q[:, -Q:].view(B, Q, h, hd)  # (B, Q, h, hd)
    k = k.view(B, K, h, hd)  # (B, K, h, hd)
    val = val.view(B, K, h, hd)  # (B, K, h, hd)
    table = sinusoidal_table(K, d).to(x.dtype)
    r = attn.pos(table.flip(0)).view(K, h, hd)  # (K, h, hd), row c encodes distance K-1-c
    ac = torch.einsum("bqhd,bkhd->bhqk", q + u, k)
    bd = rel_shift(torch.einsum("bqhd,khd->bhqk", q + v, r))
    scores = ((ac + bd) / math.sqrt(d)).masked_fill(~allowed[:, None], float("-inf"))
    y = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), val).reshape(B, Q, h * hd)  # (B, Q, h*hd)
    return attn.out(y)


def test_gather_equals_rel_shift() -> None:
    torch.manual_seed(0)
    B, L, Q, d, h, hd = 2, 5, 4, 12, 3, 4
    attn = RelativeAttention(d, h, hd, dropout=0.0, attention="plain").double()
    x, memory = torch.randn(B, Q, d, dtype=torch.float64), torch.randn(B, L, d, dtype=torch.float64)
    u, v = torch.randn(h, hd, dtype=torch.float64), torch.randn(h, hd, dtype=torch.float64)
    positions = torch.arange(L + Q)
    allowed = (positions[None, :] <= positions[L:, None]).expand(B, Q, L + Q)  # causal over memory + new
    distance = (positions[L:, None] - positions[None, :]).clamp(0, L + Q - 1)
    table = sinusoidal_table(L + Q, d).double()
    ours = attn(x, memory, table, distance, ~allowed[:, None], u, v)
    torch.testing.assert_close(ours, reference_attention(attn, x, memory, allowed, u, v), rtol=0, atol=1e-12)


def tiny_transformer(attention: str, dropout: float = 0.0) -> TransformerXL:
    torch.manual_seed(1)
    return TransformerXL(
        d_model=16,
        layers=2,
        heads=2,
        head_dim=8,
        ff_dim=24,
        dropout=dropout,
        max_distance=9,
        attention=attention,
    ).double()


def test_stack_matches_rel_shift_reference() -> None:
    """One layer of the stack (positions -> distances, shared u, v) equals the rel-shift formulation."""
    torch.manual_seed(3)
    model = TransformerXL(
        d_model=16, layers=1, heads=2, head_dim=8, ff_dim=24, dropout=0.0, max_distance=9
    ).double()
    B, L, Q, n, M = 2, 10, 5, 3, 2
    x = torch.randn(B, Q, 16, dtype=torch.float64)
    memory = torch.randn(B, L, 16, dtype=torch.float64)
    positions = torch.arange(7, 7 + L + Q)
    episode = torch.zeros(B, L + Q, dtype=torch.long)
    allowed = build_attention_mask(positions[L:], positions, episode[:, L:], episode, n, M)
    assert not allowed[:, :, :2].any()  # the window cuts the oldest memory tokens
    out, _ = model(x, positions, allowed, [memory])
    layer = model.layers[0]
    y = layer.norm1(x + reference_attention(layer.attn, x, memory, allowed, model.u, model.v))
    torch.testing.assert_close(out, layer.norm2(y + layer.ff(y)), rtol=0, atol=1e-12)


def test_plain_and_fused_attention_agree() -> None:
    """Same outputs and gradients (float64, dropout off), with a memory and episode cuts."""
    plain, fused = tiny_transformer("plain"), tiny_transformer("fused")
    fused.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(2)
    B, L, Q, n, M = 3, 6, 7, 3, 2
    x = torch.randn(B, Q, 16, generator=g, dtype=torch.float64)
    memory = [torch.randn(B, L, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    positions = torch.arange(20, 20 + L + Q)
    episode = (torch.rand(B, L + Q, generator=g) < 0.2).long().cumsum(1)
    allowed = build_attention_mask(positions[L:], positions, episode[:, L:], episode, n, M)
    assert (~allowed).any() and allowed.sum(-1).min() >= 1

    grads = []
    for model in (plain, fused):
        x_ = x.clone().requires_grad_()
        out, inputs = model(x_, positions, allowed, memory)
        (out * torch.linspace(-1, 1, 16, dtype=torch.float64)).pow(2).sum().backward()
        grads.append((out.detach(), x_.grad, {k: p.grad for k, p in model.named_parameters()}))
        assert len(inputs) == 2 and inputs[0] is x_
    (out_p, gx_p, gp_p), (out_f, gx_f, gp_f) = grads
    torch.testing.assert_close(out_f, out_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx_f, gx_p, rtol=0, atol=1e-12)
    for name in gp_p:
        torch.testing.assert_close(gp_f[name], gp_p[name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("attention", ["plain", "fused"])
def test_dropout_is_active_only_in_training(attention: str) -> None:
    model = tiny_transformer(attention, dropout=0.5)
    positions = torch.arange(5)
    episode = torch.zeros(1, 5, dtype=torch.long)
    allowed = build_attention_mask(positions, positions, episode, episode, 3, 2)
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model(x, positions, allowed)[0], model(x, positions, allowed)[0])
    model.train()
    assert not torch.allclose(model(x, positions, allowed)[0], model(x, positions, allowed)[0])
