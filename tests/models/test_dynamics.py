"""Dynamics model: incremental (imagination) == full pass, plain == fused, the loss, the memory."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from builders import A, C, K, random_batch, tiny_cfg, tiny_model
from twm.config import DynamicsConfig
from twm.models.dynamics import DynamicsMemory, DynamicsModel, DynamicsOutput


def run_in_chunks(
    model: DynamicsModel, z, a, r, d, sizes: list[int]
) -> tuple[list[DynamicsOutput], DynamicsMemory]:
    """Feed steps in chunks the imagination way: each call gets the outcomes of the steps before its z's."""
    outs, memory, t0 = [], None, 0
    for size in sizes:
        t1 = t0 + size
        prev = slice(max(t0 - 1, 0), t1 - 1)
        out = model(z[:, t0:t1], a[:, t0:t1], r[:, prev], d[:, prev], memory)
        outs.append(out)
        memory, t0 = out.memory, t1
    assert t0 == z.shape[1]
    return outs, memory


FIELDS = ("h", "z_logits", "reward_mean", "discount_logit")


@pytest.mark.parametrize("input_rewards", [True, False])
@pytest.mark.parametrize("sizes", [[1] * 11, [3, 3, 3, 2], [2, 1, 5, 1, 2]])
def test_incremental_equals_full_pass(input_rewards: bool, sizes: list[int]) -> None:
    """11 steps > memory_steps + 1 = 3, so the window cuts old tokens; episode ends at steps 2 and 6."""
    model = tiny_model(input_rewards=input_rewards)
    z, a, r, d = random_batch(B=3, T=11, seed=1, done_at=(2, 6))
    with torch.no_grad():
        full = model(z, a, r[:, :-1], d[:, :-1])
        outs, memory = run_in_chunks(model, z, a, r, d, sizes)
    for name in FIELDS:
        chunked = torch.cat([getattr(o, name) for o in outs], dim=1)
        torch.testing.assert_close(chunked, getattr(full, name), rtol=0, atol=1e-10, msg=name)
    # The memories agree too, so continuing from either gives the same future.
    assert memory.num_tokens == full.memory.num_tokens
    assert memory.length == full.memory.length == model.memory_tokens
    assert torch.equal(memory.episode, full.memory.episode)
    for m_chunk, m_full in zip(memory.hiddens, full.memory.hiddens, strict=True):
        torch.testing.assert_close(m_chunk, m_full, rtol=0, atol=1e-10)


def test_window_and_episode_end_cut_the_past() -> None:
    """Changing z of an early step changes nothing beyond its window or across an episode end."""
    model = tiny_model()  # memory_steps 2: tokens of step s see at most steps s-3 .. s
    z, a, r, d = random_batch(B=1, T=9, seed=2)
    d[:] = False
    z2 = z.clone()
    z2[0, 0] = torch.roll(z2[0, 0], 1)  # another latent at step 0
    with torch.no_grad():
        h1 = model(z, a, r[:, :-1], d[:, :-1]).h
        h2 = model(z2, a, r[:, :-1], d[:, :-1]).h
    changed = (h1 - h2).abs().amax(-1)[0] > 1e-12
    # z_0 enters layer-1 outputs up to z_3 (z_s sees back to z_{s-3}); the layer-2 output at a_s sees
    # back to a_{s-3}, so it reaches h_s for s <= 5 (a_5 sees z_3) and no further.
    assert changed.tolist() == [True] * 6 + [False] * 3
    d[0, 1] = True  # episode ends after step 1: steps >= 2 never see step 0
    with torch.no_grad():
        h1 = model(z, a, r[:, :-1], d[:, :-1]).h
        h2 = model(z2, a, r[:, :-1], d[:, :-1]).h
    changed = (h1 - h2).abs().amax(-1)[0] > 1e-12
    assert changed[:2].all() and not changed[2:].any()


def test_plain_and_fused_dynamics_agree() -> None:
    plain, fused = tiny_model(), tiny_model(attention="fused")
    fused.load_state_dict(plain.state_dict())
    z, a, r, d = random_batch(B=2, T=6, seed=3, done_at=(3,))
    results = []
    for model in (plain, fused):
        start = model(z[:, :2], a[:, :2], r[:, :1], d[:, :1])
        out = model(z[:, 2:], a[:, 2:], r[:, 1:-1], d[:, 1:-1], start.memory)
        target = F.softmax(
            torch.randn(2, 4, C, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1
        )
        loss, _ = model.compute_loss(out, target, r[:, 2:], d[:, 2:], torch.zeros_like(d[:, 2:]))
        loss.backward()
        results.append((out, {k: p.grad for k, p in model.named_parameters()}))
    (out_p, grad_p), (out_f, grad_f) = results
    for name in FIELDS:
        torch.testing.assert_close(getattr(out_f, name), getattr(out_p, name), rtol=0, atol=1e-12, msg=name)
    for name in grad_p:
        torch.testing.assert_close(grad_f[name], grad_p[name], rtol=0, atol=1e-12, msg=name)


def test_memory_carries_no_gradient_and_shapes() -> None:
    model = tiny_model().train()
    z, a, r, d = random_batch(B=2, T=4, seed=4)
    out = model(z, a, r[:, :-1], d[:, :-1])
    assert out.z_logits.shape == (2, 4, C, K) and out.h.shape == (2, 4, 16)
    assert out.reward_mean.shape == out.discount_logit.shape == (2, 4)
    assert len(out.memory.hiddens) == 2 and all(not m.requires_grad for m in out.memory.hiddens)
    # 11 tokens fed; the memory keeps the last 3 * memory_steps + 2 = 8.
    assert out.memory.num_tokens == 3 * 4 - 1 and out.memory.length == model.memory_tokens == 8
    step = model(z[:, :1], a[:, :1], r[:, :1], d[:, :1], out.memory)
    assert step.h.shape == (2, 1, 16) and step.memory.length == model.memory_tokens


def test_wrong_reward_length_is_explained() -> None:
    model = tiny_model()
    z, a, r, d = random_batch(B=2, T=4, seed=5)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        model(z, a, r, d)  # without memory the outcomes of steps 0..T-2 only


# --------------------------------------------------------------------------------------- loss


def hand_case() -> tuple[DynamicsModel, DynamicsOutput, torch.Tensor, torch.Tensor]:
    """2 steps, 2 categoricals of 2 classes, known logits."""
    model = DynamicsModel(tiny_cfg(), 4, 2, 2, A).double()
    z_logits = torch.tensor(
        [[[[0.0, 0.0], [math.log(3.0), 0.0]], [[1.0, 2.0], [0.0, math.log(4.0)]]]], dtype=torch.float64
    )  # (1, 2, 2, 2): step 0 -> q = (1/2, 1/2), (3/4, 1/4); step 1 -> q = softmax(1, 2), (1/5, 4/5)
    out = DynamicsOutput(
        z_logits=z_logits,
        reward_mean=torch.tensor([[0.5, -1.0]], dtype=torch.float64),
        discount_logit=torch.tensor([[0.0, 2.0]], dtype=torch.float64),
        h=torch.zeros(1, 2, 16, dtype=torch.float64),
        memory=None,  # type: ignore[arg-type]
    )
    target = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [1.0, 0.0]]]], dtype=torch.float64)
    rewards = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    return model, out, target, rewards


def test_loss_on_hand_computed_case() -> None:
    model, out, target, rewards = hand_case()
    terminated = torch.tensor([[False, True]])
    truncated = torch.tensor([[False, False]])
    loss, metrics = model.compute_loss(out, target, rewards, terminated, truncated, gamma=0.99)

    # z: only step 0 counts (step 1 terminated): -log(1/2) - (0.5 log 3/4 + 0.5 log 1/4).
    z_loss = math.log(2) - 0.5 * math.log(0.75) - 0.5 * math.log(0.25)
    # reward: mean of 0.5 (r - mean)^2 + 0.5 log(2 pi) over both steps.
    reward_loss = 0.5 * (0.25 + 1.0) / 2 + 0.5 * math.log(2 * math.pi)
    # discount: targets 0.99 (sigmoid(0) = 1/2 -> log 2) and 0 (-log(1 - sigmoid(2)) = log(1 + e^2)).
    discount_loss = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert metrics["dyn/z_loss"].item() == pytest.approx(z_loss, abs=1e-12)
    assert metrics["dyn/reward_loss"].item() == pytest.approx(reward_loss, abs=1e-12)
    assert metrics["dyn/discount_loss"].item() == pytest.approx(discount_loss, abs=1e-12)
    assert loss.item() == pytest.approx(z_loss + 10 * reward_loss + 50 * discount_loss, abs=1e-10)


def test_z_loss_skips_steps_that_ended_the_episode() -> None:
    model, out, target, rewards = hand_case()
    ce_step1 = -math.log(math.exp(2) / (math.exp(1) + math.exp(2))) - math.log(1 / 5)
    no = torch.tensor([[False, False]])
    # Truncation also ends the episode: z_1 is not a target, but the discount target stays 0.99.
    _, m = model.compute_loss(out, target, rewards, no, torch.tensor([[True, False]]))
    assert m["dyn/z_loss"].item() == pytest.approx(ce_step1, abs=1e-12)
    assert m["dyn/discount_loss"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(
            out.discount_logit, torch.full((1, 2), 0.99, dtype=torch.float64)
        ).item()
    )
    ce_step0 = math.log(2) - 0.5 * math.log(0.75) - 0.5 * math.log(0.25)
    _, m = model.compute_loss(out, target, rewards, no, no)
    assert m["dyn/z_loss"].item() == pytest.approx((ce_step0 + ce_step1) / 2, abs=1e-12)
    _, m = model.compute_loss(out, target, rewards, torch.tensor([[True, True]]), no)
    assert m["dyn/z_loss"].item() == 0.0  # no target at all: 0, not NaN


# --------------------------------------------------------------------------------------- size


def test_memory_and_shared_biases_of_the_paper_config() -> None:
    """The released model's memory (16 x 3 + 2 tokens) and shared u, v (its size: tests/perf/test_info.py)."""
    model = DynamicsModel(DynamicsConfig(), 32 * 32, 32, 32, num_actions=6)
    assert model.memory_tokens == 50
    # u and v are shared by all layers: one (heads, head_dim) pair each.
    assert model.transformer.u.shape == model.transformer.v.shape == (4, 64)
    assert dataclasses.asdict(model.cfg) == dataclasses.asdict(DynamicsConfig())


def test_stream_positions_are_kept_and_equal_what_they_replace() -> None:
    """The memoised position part of the mask and the distance table equal a fresh build (the
    mask itself is checked against a loop in test_transformer_xl), and one built under
    inference_mode serves a training forward with backward afterwards."""
    from twm.models.transformer_xl import build_attention_mask

    model = tiny_model()
    cpu = torch.device("cpu")
    with torch.inference_mode():
        pos = model.stream_positions(4, 9, 5, cpu)
    assert model.stream_positions(4, 9, 5, cpu) is pos
    assert model.stream_positions(4, 10, 5, cpu) is not pos
    assert pos.query.tolist() == list(range(9, 14)) and pos.keys.tolist() == list(range(4, 14))
    one_episode = torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 10, dtype=torch.long)
    expected = build_attention_mask(pos.query, pos.keys, *one_episode, model.tokens_per_step, model.cfg.memory_steps)
    assert torch.equal(pos.mask, expected[0])
    limit = model.transformer.rel_table.shape[0] - 1
    distance = [[min(max(q - k, 0), limit) for k in range(4, 14)] for q in range(9, 14)]
    assert pos.distance.tolist() == distance

    z, a, r, d = random_batch(B=2, T=4, seed=3)
    with torch.inference_mode():
        model(z, a, r[:, :-1], d[:, :-1])  # builds the entries a training pass then reuses
    out = model.train()(z, a, r[:, :-1], d[:, :-1])
    out.h.sum().backward()
    assert all(p.grad is not None for p in model.transformer.parameters())
