"""Speed switches against the plain float32 path on the same inputs (the KV cache: tests/models/test_kv_cache.py).

- obs_model.fast_convs (same function): float64 outputs and gradients within 1e-10, float32 updates
  within 1e-5 and with the same sampled latents;
- train.precision=bfloat16 (precision changes): losses within 2% and gradient norms within 10% of
  float32 after one update, predictions returned in float32;
- train.optimizer_impl (same update rule): foreach and fused Adam against torch's for-loop reference,
  weights after three updates within 1e-6 (fused rounds differently; foreach matches exactly), and
  the fused path has no host sync in its optimiser steps;
- train.compile: the same update with the compiled networks (aot_eager backend, which traces and
  differentiates exactly as inductor does but generates no code: inductor takes minutes on a CPU;
  set TWM_TEST_INDUCTOR=1 to run it too), losses within 1e-5 with dropout off.
"""

from __future__ import annotations

import os

import pytest
import torch

from builders import counting_compiled_graphs
from twm.agent import Agent
from twm.config import Config, ConfigError
from twm.config_files import load_config
from twm.models.observation import ObservationModel
from twm.models.world_model import WorldModel
from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
from twm.update import Learner

NUM_ACTIONS = 3


def smoke(*overrides: str) -> Config:
    return load_config("smoke", ["env.game=catch", *overrides])


def one_update(cfg: Config, compile_backend: str | None = None, seed: int = 0) -> tuple[dict, Learner]:
    """One Learner.update on synthetic data from a seeded init; returns its metrics (floats) and the learner."""
    torch.manual_seed(seed)
    agent = Agent(cfg, NUM_ACTIONS)
    if compile_backend is not None:
        agent.compile_networks(compile_backend)
    learner = Learner(agent)
    batch = synthetic_batch(cfg, NUM_ACTIONS, "cpu", seed)
    gen = torch.Generator().manual_seed(seed)
    metrics = learner.update(batch, synthetic_obs_sampler(cfg, torch.device("cpu")), gen)
    return {k: float(v) for k, v in metrics.items()}, learner


def assert_metrics_close(got: dict, expected: dict, rtol: float, grad_rtol: float | None = None) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        tol = grad_rtol if grad_rtol is not None and key.endswith("grad_norm") else rtol
        assert got[key] == pytest.approx(value, rel=tol, abs=tol), key


# --------------------------------------------------------------------------------------- fast convs


def obs_models(cfg: Config) -> tuple[ObservationModel, ObservationModel]:
    torch.manual_seed(0)
    plain = ObservationModel(load_config("smoke", ["obs_model.fast_convs=false"]).obs_model).double()
    fast = ObservationModel(cfg.obs_model).double()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def test_fast_convs_compute_the_same_function_float64() -> None:
    cfg = smoke()
    assert cfg.obs_model.fast_convs is True  # the default
    plain, fast = obs_models(cfg)
    frames = torch.rand(3, 2, 4, 64, 64, dtype=torch.float64)
    results = []
    for model in (plain, fast):
        model.zero_grad()
        logits = model.encode(frames)
        z = logits.softmax(-1).flatten(-2)  # a differentiable latent, so the decoder's input grad counts
        recon = model.decode(z)
        (recon.square().mean() + logits.square().mean()).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((logits.detach(), recon.detach(), grads))
    (l0, r0, g0), (l1, r1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(r1, r0, rtol=1e-10, atol=1e-10)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-10, msg=name)


def test_fast_convs_switch_takes_the_matrix_product_path() -> None:
    """The equality above says nothing if both models ran the same code: the fast decoder must not
    call its first transposed conv's kernel, and the plain one must."""
    plain, fast = obs_models(smoke())
    calls = {"plain": 0, "fast": 0}
    for name, model in (("plain", plain), ("fast", fast)):
        first = model.decoder[3]
        assert isinstance(first, torch.nn.ConvTranspose2d)
        first.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        model.decode(torch.zeros(2, model.latent_dim, dtype=torch.float64))
    assert calls == {"plain": 1, "fast": 0}


def test_fast_convs_update_matches_plain_float32() -> None:
    plain, plain_learner = one_update(smoke("obs_model.fast_convs=false"))
    fast, fast_learner = one_update(smoke("obs_model.fast_convs=true"))
    assert_metrics_close(fast, plain, rtol=1e-5)
    pairs = zip(plain_learner.agent.named_parameters(), fast_learner.agent.parameters(), strict=True)
    for (name, p), q in pairs:
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------------------- bfloat16


def test_bfloat16_update_is_close_to_float32() -> None:
    reference, _ = one_update(smoke())
    bf16, _ = one_update(smoke("train.precision=bfloat16"))
    assert_metrics_close(bf16, reference, rtol=2e-2, grad_rtol=1e-1)


def test_bfloat16_networks_return_float32() -> None:
    cfg = smoke("train.precision=bfloat16")
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    wm = agent.world_model
    frames = torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8)
    with wm.autocast():
        hidden = wm.obs_model.encoder[0](frames[0].float())  # a layer inside runs in bfloat16
        logits = wm.obs_model.encode(frames)
        z = wm.obs_model.sample(logits)
        recon = wm.obs_model.decode(z)
        out = wm.dynamics(
            z, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool)
        )
    assert hidden.dtype == torch.bfloat16
    for t in (logits, z, recon, out.z_logits, out.reward_mean, out.discount_logit, out.h):
        assert t.dtype == torch.float32


def test_bfloat16_rollout_is_close_to_float32() -> None:
    rollouts = {}
    for precision in ("float32", "bfloat16"):
        _, learner = one_update(smoke(f"train.precision={precision}"))
        agent = learner.agent
        batch = synthetic_batch(agent.cfg, NUM_ACTIONS, "cpu", seed=1)
        gen = torch.Generator().manual_seed(2)
        # The world-model part of an update, then imagination from its latents.
        losses = agent.world_model.compute_loss(batch, gen)
        learner.step([losses.obs_loss, losses.dyn_loss], ("obs", "dyn"))
        wm_out = WorldModel.output(batch, losses.z, losses.metrics)
        rollouts[precision] = agent.imagine(
            wm_out, synthetic_obs_sampler(agent.cfg, torch.device("cpu")), gen
        )
    a, b = rollouts["float32"], rollouts["bfloat16"]
    assert b.h.dtype == torch.float32 and b.rewards.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: states within a few percent of their scale.
    scale = a.h.abs().max()
    assert (a.h - b.h).abs().max() < 0.05 * scale
    torch.testing.assert_close(b.discounts, a.discounts, rtol=0.05, atol=0.02)


def test_precision_and_switches_are_validated() -> None:
    with pytest.raises(ConfigError, match="train.precision must be one of float32, bfloat16"):
        smoke("train.precision=float16")
    for key in ("dynamics.kv_cache", "obs_model.fast_convs", "train.compile"):
        with pytest.raises(ConfigError, match=f"{key} must be true or false"):
            smoke(f"{key}=maybe")


def test_paper_preset_defaults() -> None:
    """atari100k is the paper's method: exact speed-ups on, precision float32, no compile."""
    cfg = load_config("atari100k")
    assert cfg.dynamics.kv_cache and cfg.obs_model.fast_convs
    assert cfg.train.precision == "float32" and not cfg.train.compile
    assert cfg.dynamics.attention == "plain"


# --------------------------------------------------------------------------------------- optimisers


def updated_weights(impl: str, updates: int = 3) -> tuple[dict[str, torch.Tensor], list[dict]]:
    cfg = smoke(f"train.optimizer_impl={impl}", "dynamics.dropout=0")
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    learner = Learner(agent)
    batch = synthetic_batch(cfg, NUM_ACTIONS, "cpu", 0)
    gen = torch.Generator().manual_seed(0)
    metrics = [
        {k: float(v) for k, v in learner.update(batch, synthetic_obs_sampler(cfg, torch.device("cpu")), gen).items()}
        for _ in range(updates)
    ]
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}, metrics


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_batched_optimisers_apply_the_same_update(impl: str) -> None:
    reference, ref_metrics = updated_weights("for_loop")
    weights, metrics = updated_weights(impl)
    assert weights.keys() == reference.keys()
    initial, _ = updated_weights("for_loop", updates=0)
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-6, atol=1e-6, msg=key)
    # The comparison means something: the updates moved (nearly) every parameter tensor.
    moved = [k for k in reference if k.endswith("weight") and not torch.equal(reference[k], initial[k])]
    assert len(moved) >= 0.9 * sum(k.endswith("weight") for k in reference)
    for got, expected in zip(metrics, ref_metrics, strict=True):
        assert_metrics_close(got, expected, rtol=1e-5)
    if impl == "foreach":
        assert all(torch.equal(weights[k], reference[k]) for k in reference)


def test_fused_optimiser_steps_do_not_sync() -> None:
    from twm.perf.op_count import CountOps
    from twm.update import adam, eager_clip_and_step

    def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        eager_clip_and_step(opt, 1.0)

    for impl, syncs in (("for_loop", True), ("fused", False)):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
        opt = adam(net.parameters(), 1e-3, 1e-5, 1e-6, impl)  # type: ignore[arg-type]
        x = torch.randn(16, 4)
        optimizer_step(opt, net(x).square().mean())  # creates the state
        with CountOps() as counter:
            optimizer_step(opt, net(x).square().mean())
        assert (counter.counts.syncs > 0) == syncs, impl


def test_optimisers_are_the_configured_kind() -> None:
    for impl in ("for_loop", "foreach", "fused"):
        learner = Learner(Agent(smoke(f"train.optimizer_impl={impl}"), NUM_ACTIONS))
        for opt in learner.optimizers:
            group = opt.param_groups[0]
            assert bool(group["fused"]) == (impl == "fused") and bool(group["foreach"]) == (impl == "foreach")


# --------------------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_compiled_update_matches_eager() -> None:
    cfg = smoke("dynamics.dropout=0")  # compiled dropout draws other random numbers
    eager, _ = one_update(cfg)
    with counting_compiled_graphs() as compiled_graphs:
        compiled, learner = one_update(cfg, compile_backend="aot_eager")
    assert_metrics_close(compiled, eager, rtol=1e-5)
    # The compiled networks ran (an eager fallback would pass the comparison above too).
    assert compiled_graphs["graphs"] > 0 and compiled_graphs["runs"] >= compiled_graphs["graphs"]
    # State dicts keep their keys (checkpoints load into an uncompiled agent).
    assert set(learner.agent.state_dict()) == set(Agent(cfg, NUM_ACTIONS).state_dict())


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("TWM_TEST_INDUCTOR") != "1",
    reason="inductor compiles for minutes on a CPU; TWM_TEST_INDUCTOR=1",
)
def test_inductor_update_matches_eager() -> None:
    cfg = smoke("dynamics.dropout=0")
    eager, _ = one_update(cfg)
    compiled, _ = one_update(cfg, compile_backend="inductor")
    assert_metrics_close(compiled, eager, rtol=1e-4)
