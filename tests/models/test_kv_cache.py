"""Key/value cache (dynamics.kv_cache): the same predictions and the same rollouts as the plain memory.

The plain Transformer-XL memory stores each layer's input hidden states and re-projects them into
keys and values at every call; the cache projects each token once. In float64 both paths agree to
rounding (1e-10), and the rollouts' random draws (actions, latent samples, fresh starts) are the same.
"""

from __future__ import annotations

import pytest
import torch

from builders import NUM_ACTIONS, make_start, random_batch, seeded_rollout, smoke, tiny_model
from twm.agent import Agent
from twm.imagination import ImaginationStart, imagine
from twm.models.dynamics import DynamicsModel
from twm.models.observation import mode_one_hot

TIGHT = dict(rtol=1e-10, atol=1e-10)
FIELDS = ("h", "z_logits", "reward_mean", "discount_logit")


def run_cached(model: DynamicsModel, z, a, r, d, sizes: list[int], capacity: int) -> list:
    """Like test_dynamics.run_in_chunks, but the memory after the first chunk is key/value-cached."""
    outs, memory, t0 = [], None, 0
    for i, size in enumerate(sizes):
        t1 = t0 + size
        prev = slice(max(t0 - 1, 0), t1 - 1)
        out = model(z[:, t0:t1], a[:, t0:t1], r[:, prev], d[:, prev], memory)
        outs.append(out)
        memory, t0 = out.memory, t1
        if i == 0:
            memory = model.cache_memory(memory, capacity=capacity)
    return outs


@pytest.mark.parametrize("input_rewards", [True, False])
@pytest.mark.parametrize("sizes", [[1] * 11, [2, 3, 1, 5], [3, 1, 1, 1, 1, 1, 1, 1, 1]])
@pytest.mark.parametrize("capacity", [100, 9])  # 9: the buffers fill up and the memory moves to the front
def test_cached_memory_equals_full_pass(input_rewards: bool, sizes: list[int], capacity: int) -> None:
    """11 steps > memory_steps + 1 = 3 (the window cuts old tokens); episode ends at steps 2 and 6."""
    model = tiny_model(input_rewards=input_rewards)
    z, a, r, d = random_batch(B=3, T=11, seed=1, done_at=(2, 6))
    with torch.no_grad():
        full = model(z, a, r[:, :-1], d[:, :-1])
        outs = run_cached(model, z, a, r, d, sizes, capacity)
    for name in FIELDS:
        cached = torch.cat([getattr(o, name) for o in outs], dim=1)
        torch.testing.assert_close(cached, getattr(full, name), **TIGHT)


def test_cached_memory_with_fused_attention() -> None:
    model = tiny_model(attention="fused")
    z, a, r, d = random_batch(B=3, T=9, seed=3, done_at=(4,))
    with torch.no_grad():
        full = model(z, a, r[:, :-1], d[:, :-1])
        outs = run_cached(model, z, a, r, d, [2] + [1] * 7, capacity=12)
    for name in FIELDS:
        torch.testing.assert_close(
            torch.cat([getattr(o, name) for o in outs], dim=1), getattr(full, name), **TIGHT
        )


def test_cached_attention_maps_equal_plain() -> None:
    model = tiny_model()
    z, a, r, d = random_batch(B=2, T=6, seed=4, done_at=(1,))
    with torch.no_grad():
        first = model(z[:, :3], a[:, :3], r[:, :2], d[:, :2])
        plain = model(z[:, 3:], a[:, 3:], r[:, 2:5], d[:, 2:5], first.memory, return_attention=True)
        cached_memory = model.cache_memory(first.memory, capacity=20)
        cached = model(z[:, 3:], a[:, 3:], r[:, 2:5], d[:, 2:5], cached_memory, return_attention=True)
    assert plain.attention is not None and cached.attention is not None
    for p, c in zip(plain.attention.probs, cached.attention.probs, strict=True):
        torch.testing.assert_close(c, p, **TIGHT)
    assert torch.equal(plain.attention.allowed, cached.attention.allowed)


def test_only_the_newest_cached_memory_continues() -> None:
    model = tiny_model()
    z, a, r, d = random_batch(B=2, T=4, seed=2)
    with torch.no_grad():
        first = model(z[:, :2], a[:, :2], r[:, :1], d[:, :1])
        memory = model.cache_memory(first.memory, capacity=20)
        model(z[:, 2:3], a[:, 2:3], r[:, 1:2], d[:, 1:2], memory)
        with pytest.raises(ValueError, match="newest"):
            model(z[:, 2:3], a[:, 2:3], r[:, 1:2], d[:, 1:2], memory)  # the stale one


def test_cache_is_for_inference_only() -> None:
    model = tiny_model()
    z, a, r, d = random_batch(B=2, T=2, seed=2)
    with torch.no_grad():
        memory = model(z, a, r[:, :1], d[:, :1]).memory
    with pytest.raises(RuntimeError, match="no_grad"):
        model.cache_memory(memory, capacity=10)
    model.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="eval"):
        model.cache_memory(memory, capacity=10)


# --------------------------------------------------------------------------------------- rollouts


def double_start(start: ImaginationStart) -> ImaginationStart:
    return ImaginationStart(
        context_z=start.context_z.double(),
        context_action=start.context_action,
        context_reward=start.context_reward.double(),
        context_done=start.context_done,
        start_z=start.start_z.double(),
    )


@pytest.mark.parametrize("memory_steps", [2, 16])  # 2: the 8-step rollout outgrows the attention window
def test_cached_rollout_equals_plain_rollout_float64(memory_steps: int) -> None:
    torch.manual_seed(0)
    agent = Agent(smoke(f"dynamics.memory_steps={memory_steps}"), NUM_ACTIONS).double()
    start = double_start(make_start(agent.cfg, 12, seed=5))
    plain, plain_gen, plain_fresh = seeded_rollout(agent, start, 0.5, 8, kv_cache=False)
    cached, cached_gen, cached_fresh = seeded_rollout(agent, start, 0.5, 8, kv_cache=True)
    assert plain.dones.any() and (~plain.dones).any(), "the test needs imagined episode ends and fresh starts"
    # The same random draws: actions, latent samples, fresh starts, and the generators end in the same state.
    assert torch.equal(cached.actions, plain.actions)
    assert torch.equal(cached.z, plain.z)
    assert torch.equal(cached.dones, plain.dones)
    assert torch.equal(cached_gen, plain_gen) and torch.equal(cached_fresh, plain_fresh)
    for name in ("h", "rewards", "discounts", "weights"):
        torch.testing.assert_close(getattr(cached, name), getattr(plain, name), **TIGHT)


def test_cached_rollout_matches_in_float32() -> None:
    """The default arithmetic: the same draws, states within float32 rounding."""
    torch.manual_seed(0)
    agent = Agent(smoke("dynamics.memory_steps=16"), NUM_ACTIONS)
    start = make_start(agent.cfg, 12, seed=5)
    plain, plain_gen, _ = seeded_rollout(agent, start, 0.5, 8, kv_cache=False)
    cached, cached_gen, _ = seeded_rollout(agent, start, 0.5, 8, kv_cache=True)
    assert torch.equal(cached.actions, plain.actions) and torch.equal(cached.z, plain.z)
    assert torch.equal(cached_gen, plain_gen)
    torch.testing.assert_close(cached.h, plain.h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flag", [True, False])
def test_imagination_follows_the_config_switch(flag: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """imagine() caches the memory exactly when dynamics.kv_cache is on (the default)."""
    assert smoke().dynamics.kv_cache is True
    calls = []
    original = DynamicsModel.cache_memory

    def spy(self, memory, capacity):
        calls.append(capacity)
        return original(self, memory, capacity)

    monkeypatch.setattr(DynamicsModel, "cache_memory", spy)
    torch.manual_seed(0)
    agent = Agent(smoke(f"dynamics.kv_cache={str(flag).lower()}"), NUM_ACTIONS)
    wm, cfg = agent.world_model, agent.cfg

    def fresh(n: int) -> torch.Tensor:
        return mode_one_hot(torch.randn(n, cfg.obs_model.categoricals, cfg.obs_model.classes))

    imagine(wm.dynamics, wm.obs_model, agent.actor, make_start(cfg, 4), 3, 0.1, fresh)
    # Capacity: the context step's 2 tokens + 3 per imagined step.
    assert calls == ([2 + 3 * 3] if flag else [])
