"""The world-model update: alignment of targets, where gradients flow, and that it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twm.agent import Agent
from twm.config import Config
from twm.config_files import load_config
from twm.models.batch import TorchSequenceBatch
from twm.models.world_model import WorldModel, WorldModelOutput
from twm.replay import ReplayBuffer
from twm.update import Learner

NUM_ACTIONS = 3


def smoke_config(**dynamics: object) -> Config:
    overrides = [f"dynamics.{k}={v}" for k, v in dynamics.items()]
    return load_config("smoke", ["env.game=catch", *overrides])


@pytest.fixture(scope="module")
def replay(filled_catch_replay: ReplayBuffer) -> ReplayBuffer:
    return filled_catch_replay


def make_batch(replay: ReplayBuffer, cfg: Config, seed: int = 0) -> TorchSequenceBatch:
    replay.rng = np.random.default_rng(seed)
    batch = replay.sample_sequences_uniform(cfg.replay.batch_size, cfg.replay.sequence_length)
    return TorchSequenceBatch.from_numpy(batch, "cpu")


def world_model_update(
    learner: Learner, batch: TorchSequenceBatch, generator: torch.Generator | None = None
) -> WorldModelOutput:
    """The world-model part of ``Learner.update``: its losses, one backward, both optimiser steps."""
    losses = learner.agent.world_model.compute_loss(batch, generator)
    obs_norm, dyn_norm = learner.step([losses.obs_loss, losses.dyn_loss], ("obs", "dyn"))
    metrics = {**losses.metrics, "obs/grad_norm": obs_norm, "dyn/grad_norm": dyn_norm}
    return WorldModel.output(batch, losses.z, metrics)


def test_update_losses_equal_a_step_by_step_recomputation(replay: ReplayBuffer) -> None:
    """The logged losses equal a loop over steps with the targets of docs/method.md (dropout off, same draws)."""
    cfg = smoke_config(dropout=0.0)
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    batch = make_batch(replay, cfg)
    # Force an episode end inside the sequences so the masking matters.
    batch.terminated[0, 2] = True
    B, T = batch.actions.shape[0], batch.actions.shape[1] - 1

    # Expected values, computed before the update changes the weights, with the same random draws.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        om = model.obs_model.eval()
        logits_all = om.encode(batch.obs)  # (B, T+2, C, K)
        z0 = om.sample(logits_all[:, :1], gen)
        z = om.sample(logits_all[:, 1:-1], gen)
        z_in = torch.cat([z0, z], dim=1)
        dones = batch.terminated | batch.truncated
        out = model.dynamics.eval()(z_in, batch.actions, batch.rewards[:, :-1], dones[:, :-1])
        z_ce, r_nll, g_nll, weight = 0.0, 0.0, 0.0, 0.0
        for b in range(B):
            for t in range(1, T + 1):  # the steps after the context step
                target = logits_all[b, t + 1].softmax(-1)  # encoder distribution of z_{t+1}
                log_q = out.z_logits[b, t].log_softmax(-1)
                if not bool(dones[b, t]):
                    z_ce += float(-(target * log_q).sum())
                    weight += 1
                r_nll += 0.5 * float(batch.rewards[b, t] - out.reward_mean[b, t]) ** 2 + 0.5 * math.log(
                    2 * math.pi
                )
                g_target = cfg.env.discount * (0.0 if bool(batch.terminated[b, t]) else 1.0)
                p = float(torch.sigmoid(out.discount_logit[b, t]))
                g_nll += -(g_target * math.log(p) + (1 - g_target) * math.log(1 - p))
        consistency = 0.0
        for b in range(B):
            for t in range(1, T + 1):  # z_t predicted at step t-1
                p_dyn = out.z_logits[b, t - 1].softmax(-1)
                consistency += float(-(p_dyn * logits_all[b, t].log_softmax(-1)).sum())
    n = B * T

    metrics = model.compute_loss(batch, generator=torch.Generator().manual_seed(1)).metrics
    assert metrics["dyn/z_loss"].item() == pytest.approx(z_ce / weight, rel=1e-5)
    assert metrics["dyn/reward_loss"].item() == pytest.approx(r_nll / n, rel=1e-5)
    assert metrics["dyn/discount_loss"].item() == pytest.approx(g_nll / n, rel=1e-5)
    assert metrics["obs/consistency_ce"].item() == pytest.approx(consistency / n, rel=1e-5)


def test_gradients_flow_where_the_spec_says(replay: ReplayBuffer) -> None:
    """Dynamics loss: no gradient in the observation model. Observation loss: none in the dynamics."""
    cfg = smoke_config()
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    losses = model.compute_loss(make_batch(replay, cfg))
    seen: list[dict[str, bool]] = []
    for loss in (losses.dyn_loss, losses.obs_loss):
        model.zero_grad(set_to_none=True)  # each backward from clean gradients
        loss.backward()
        seen.append(
            {
                "encoder": any(
                    p.grad is not None and p.grad.abs().sum() > 0
                    for p in model.obs_model.encoder.parameters()
                ),
                "decoder": any(
                    p.grad is not None and p.grad.abs().sum() > 0
                    for p in model.obs_model.decoder.parameters()
                ),
                "dynamics": any(
                    p.grad is not None and p.grad.abs().sum() > 0 for p in model.dynamics.parameters()
                ),
            }
        )
    dyn_step, obs_step = seen
    assert dyn_step == {"encoder": False, "decoder": False, "dynamics": True}
    assert obs_step == {"encoder": True, "decoder": True, "dynamics": False}


def _dyn_loss_gradients(share: float, batch: TorchSequenceBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients of the dynamics loss alone, with ``dynamics.encoder_grad=share``, and the loss."""
    cfg = smoke_config(dropout=0.0, encoder_grad=share)
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    losses.dyn_loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, losses.dyn_loss.detach()


def test_encoder_grad_lets_that_share_of_the_dynamics_gradient_into_the_encoder(replay: ReplayBuffer) -> None:
    batch = make_batch(replay, smoke_config())
    g0, loss0 = _dyn_loss_gradients(0.0, batch)
    half, loss_half = _dyn_loss_gradients(0.5, batch)
    full, loss_full = _dyn_loss_gradients(1.0, batch)
    # The same forward pass: the losses are equal bit for bit, and so are the dynamics' gradients.
    assert torch.equal(loss0, loss_half) and torch.equal(loss0, loss_full)
    for name in g0:
        assert name.startswith("dynamics.")
        assert torch.equal(g0[name], half[name]) and torch.equal(g0[name], full[name])
    # The encoder: nothing with share 0 (the paper), the gradient with 1, half of it with 0.5.
    encoder = [n for n in full if n.startswith("obs_model.encoder.")]
    assert encoder and not any(n.startswith("obs_model.") for n in g0)
    assert all(full[n].abs().sum() > 0 for n in encoder if n.endswith("weight"))
    for name in encoder:
        torch.testing.assert_close(half[name], 0.5 * full[name], rtol=1e-5, atol=1e-7)
    assert not any(n.startswith("obs_model.decoder.") for n in full)  # the decoder is not on the path


def _obs_gradients(cfg: Config, batch: TorchSequenceBatch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    losses.obs_loss.backward()
    return {n: p.grad.clone() for n, p in model.obs_model.named_parameters()}


def test_consistency_term_reaches_the_encoder_only(replay: ReplayBuffer) -> None:
    with_term = smoke_config(dropout=0.0)
    without = smoke_config(dropout=0.0)
    without.obs_model.consistency_coef = 0.0
    batch = make_batch(replay, with_term)
    g1, g0 = _obs_gradients(with_term, batch), _obs_gradients(without, batch)
    for name in g1:
        if name.startswith("decoder"):
            torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=0)
    assert any(not torch.equal(g1[n], g0[n]) for n in g1 if n.startswith("encoder"))


def test_update_returns_imagination_starts(replay: ReplayBuffer) -> None:
    cfg = smoke_config()
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    batch = make_batch(replay, cfg)
    out = world_model_update(learner, batch)
    B, T = cfg.replay.batch_size, cfg.replay.sequence_length
    assert out.z.shape == (B, T + 1, cfg.latent_dim) and not out.z.requires_grad
    # Latents are one-hot per categorical.
    per_cat = out.z.reshape(B, T + 1, cfg.obs_model.categoricals, cfg.obs_model.classes)
    assert torch.equal(per_cat.sum(-1), torch.ones(B, T + 1, cfg.obs_model.categoricals))
    assert torch.equal(out.actions, batch.actions)


def test_world_model_learns_on_a_fixed_batch(replay: ReplayBuffer) -> None:
    cfg = smoke_config()
    cfg.obs_model.lr = cfg.dynamics.lr = 1e-3
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    batch = make_batch(replay, cfg)
    first = world_model_update(learner, batch).metrics
    for _ in range(40):
        last = world_model_update(learner, batch).metrics
    assert last["obs/decoder_loss"] < first["obs/decoder_loss"]
    assert last["dyn/loss"] < first["dyn/loss"]


def test_pretraining_steps_learn(replay: ReplayBuffer) -> None:
    cfg = smoke_config()
    cfg.obs_model.lr = cfg.dynamics.lr = 1e-3
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    model = learner.agent.world_model
    frames = torch.from_numpy(replay.stacked_obs(np.arange(64)))
    first = learner.pretrain_obs_step(frames)["obs/decoder_loss"]
    for _ in range(30):
        last = learner.pretrain_obs_step(frames)["obs/decoder_loss"]
    assert last < first
    encoder_before = [p.clone() for p in model.obs_model.parameters()]
    batch = make_batch(replay, cfg)
    first = learner.pretrain_dyn_step(batch)["dyn/loss"]
    for _ in range(30):
        last = learner.pretrain_dyn_step(batch)["dyn/loss"]
    assert last < first
    # Dynamics pretraining leaves the observation model untouched.
    for before, after in zip(encoder_before, model.obs_model.parameters(), strict=True):
        assert torch.equal(before, after)


def _z_head_gradients(cfg: Config, replay: ReplayBuffer) -> list[torch.Tensor]:
    """The next-latent head's gradients of the dynamics loss of one world-model update."""
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    model.compute_loss(make_batch(replay, cfg)).dyn_loss.backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.dynamics.z_head.parameters()]


def test_every_next_latent_head_parameter_learns_by_default(replay: ReplayBuffer) -> None:
    """Guard against jrobine/twm issue 4 (the released loss never trains the next-latent head)."""
    grads = _z_head_gradients(smoke_config(), replay)
    assert len(grads) >= 2
    assert all(g.abs().sum() > 0 for g in grads)  # every weight and bias, the output layer's included


def test_latent_loss_switch_off_is_the_released_behaviour(replay: ReplayBuffer) -> None:
    assert Config().dynamics.latent_loss  # the paper config trains the head
    grads = _z_head_gradients(smoke_config(latent_loss="false"), replay)
    assert all(g.abs().sum() == 0 for g in grads)


def test_imagined_inputs_replace_latents_by_one_step_predictions(replay: ReplayBuffer) -> None:
    """``dynamics.imagined_inputs``: the loss pass reads, at each replaced step t >= 1, a sample of
    the prediction made at step t-1 by a first pass over the real latents; the context latent, the
    steps right after an episode end and the returned imagination starts stay real."""
    share = 0.6
    cfg = smoke_config(dropout=0.0, imagined_inputs=share)
    torch.manual_seed(0)
    model = WorldModel.from_config(cfg, NUM_ACTIONS)
    batch = make_batch(replay, cfg)
    batch.terminated[:, 1] = True  # every z_2 starts another episode
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    modes: list[bool] = []
    states: list[torch.Tensor] = []
    forward, imagined_inputs = model.dynamics.forward, model._with_imagined_inputs

    def recording_forward(z, *args, **kwargs):
        out = forward(z, *args, **kwargs)
        calls.append((z.detach().clone(), out.z_logits.detach().clone()))
        modes.append(model.dynamics.training)
        return out

    def recording_imagined_inputs(z_in, batch, generator):
        states.append(generator.get_state())  # the draws of the replacement start here
        return imagined_inputs(z_in, batch, generator)

    model.dynamics.forward = recording_forward  # type: ignore[method-assign]
    model._with_imagined_inputs = recording_imagined_inputs  # type: ignore[method-assign]
    losses = model.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    (real, real_logits), (read, _) = calls  # the first pass, then the loss pass
    assert modes == [False, True]  # the first pass as imagination runs it: no dropout
    B, T1, _ = real.shape
    # The same draws by hand: a sample of the predictions of z_1..z_T made at steps 0..T-1, then
    # one uniform per step against the share.
    g = torch.Generator()
    g.set_state(states[0])
    imagined = model.obs_model.sample(real_logits[:, :-1], g)  # (B, T, C*K)
    draw = torch.rand(B, T1 - 1, generator=g)
    for b in range(B):
        assert torch.equal(read[b, 0], real[b, 0])  # the context step
        for t in range(1, T1):
            after_end = bool(batch.dones[b, t - 1])
            expected = real[b, t] if after_end or draw[b, t - 1] >= share else imagined[b, t - 1]
            assert torch.equal(read[b, t], expected), (b, t)
    replaced = ~(read == real).all(dim=-1)  # (B, T+1)
    assert not replaced[:, 2].any() and replaced.any() and (~replaced[:, 1:]).any()
    assert torch.equal(losses.z, real)  # imagination starts from the real latents
    # The consistency term reads the first pass's predictions: the observation loss is that of
    # the paper's update on the same draws, whatever the loss pass read.
    torch.manual_seed(0)
    paper = WorldModel.from_config(smoke_config(dropout=0.0), NUM_ACTIONS)
    paper_losses = paper.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(losses.obs_loss, paper_losses.obs_loss)
    assert not torch.equal(losses.dyn_loss, paper_losses.dyn_loss)
