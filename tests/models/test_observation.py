"""Observation model (categorical VAE, docs/method.md "Observation model"): architecture, latents, loss terms."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from twm.config import ObservationModelConfig
from twm.models.observation import (
    ObservationModel,
    consistency_ce,
    decoder_bernoulli_nll,
    decoder_nll,
    entropy_hinge,
    latent_entropy,
    mode_one_hot,
    moved_mask,
    moved_weights,
    sample_one_hot,
)

LOG_2PI = math.log(2 * math.pi)


def tiny_cfg(**kw: float) -> ObservationModelConfig:
    return ObservationModelConfig(channels=4, mlp_hidden=16, categoricals=3, classes=5, **kw)


def output_shapes(seq: nn.Sequential, kind: type[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shape of every ``kind`` layer of ``seq`` on input ``x`` (via forward hooks)."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for m in seq
        if isinstance(m, kind)
    ]
    with torch.no_grad():
        seq(x)
    for h in hooks:
        h.remove()
    return shapes


# --------------------------------------------------------------------------------------- architecture


def test_paper_config_shapes_through_encoder_and_decoder() -> None:
    torch.manual_seed(0)
    model = ObservationModel(ObservationModelConfig())
    frames = torch.rand(1, 4, 64, 64)
    convs = output_shapes(model.encoder, nn.Conv2d, frames)
    assert convs == [(1, 48, 31, 31), (1, 96, 14, 14), (1, 192, 6, 6), (1, 384, 2, 2)]
    linears = output_shapes(model.encoder, nn.Linear, frames)
    assert linears == [(1, 512), (1, 512), (1, 1024)]  # flatten gives 384*2*2 = 1536 inputs
    assert model.encoder[-1].in_features == 512 and model.encoder[9].in_features == 1536

    z = torch.zeros(1, 1024)
    deconvs = output_shapes(model.decoder, nn.ConvTranspose2d, z)
    assert deconvs == [(1, 192, 5, 5), (1, 96, 13, 13), (1, 48, 30, 30), (1, 4, 64, 64)]
    assert model.decoder[0].out_features == 768


def test_activations_silu_after_every_encoder_layer_but_the_output_and_between_deconvs() -> None:
    model = ObservationModel(tiny_cfg())
    enc = [type(m).__name__ for m in model.encoder]
    assert enc == ["Conv2d", "SiLU"] * 4 + ["Flatten"] + ["Linear", "SiLU"] * 2 + ["Linear"]
    dec = [type(m).__name__ for m in model.decoder]
    assert dec == ["Linear", "SiLU", "Unflatten"] + ["ConvTranspose2d", "SiLU"] * 3 + ["ConvTranspose2d"]


def test_encode_decode_any_leading_dims_and_rows_are_independent() -> None:
    torch.manual_seed(0)
    model = ObservationModel(tiny_cfg())
    frames = torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8)
    logits = model.encode(frames)
    assert logits.shape == (2, 3, 3, 5)
    # Flattening the leading dims must keep rows apart: one frame encoded alone gives the same.
    torch.testing.assert_close(logits[1, 2], model.encode(frames[1, 2]))
    z = model.sample(logits)
    assert z.shape == (2, 3, 15)
    recon = model.decode(z)
    assert recon.shape == (2, 3, 4, 64, 64)
    torch.testing.assert_close(recon[0, 1], model.decode(z[0, 1]))


def test_uint8_frames_are_scaled_to_unit_interval() -> None:
    torch.manual_seed(0)
    model = ObservationModel(tiny_cfg())
    frames = torch.randint(0, 256, (2, 4, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(model.encode(frames), model.encode(frames.float() / 255.0))


def test_wrong_shapes_raise() -> None:
    model = ObservationModel(tiny_cfg())
    with pytest.raises(ValueError, match="frames must end in"):
        model.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="z must end in 15"):
        model.decode(torch.zeros(2, 16))


def test_initialisation() -> None:
    torch.manual_seed(0)
    model = ObservationModel(tiny_cfg())
    for m in list(model.encoder) + [model.decoder[0]]:
        if isinstance(m, nn.Linear | nn.Conv2d):
            assert torch.all(m.bias == 0)
            fan_in = m.weight[0].numel()
            gain = 1.0 if m is model.encoder[-1] else math.sqrt(2.0)
            bound = gain * math.sqrt(3.0 / fan_in)
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.8 * bound  # uniform over the whole range


def test_decoder_last_bias_is_half_so_a_blank_latent_decodes_to_mid_grey() -> None:
    torch.manual_seed(0)
    model = ObservationModel(ObservationModelConfig())
    last = model.decoder[-1]
    assert isinstance(last, nn.ConvTranspose2d)
    assert torch.all(last.bias == 0.5)
    z = torch.zeros(2, 1024)
    with torch.no_grad():
        # At init only the (small, default-initialised) hidden deconv biases move it off 0.5.
        out = model.decoder(z)
        assert (out - 0.5).abs().max() < 0.05
        # With those zeroed, a zero latent gives exactly the last bias: no activation after it.
        for m in model.decoder:
            if isinstance(m, nn.ConvTranspose2d) and m is not last:
                m.bias.zero_()
        assert torch.equal(model.decoder(z), torch.full((2, 4, 64, 64), 0.5))


# --------------------------------------------------------------------------------------- latents


@pytest.mark.parametrize("sampler", ["multinomial", "inverse_cdf"])
def test_sample_is_exactly_one_hot_with_the_gradient_of_the_probabilities(sampler: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)  # (B, T, C, K)
    z = sample_one_hot(logits, None, sampler)
    assert z.shape == (2, 3, 20)
    per_cat = z.detach().reshape(2, 3, 4, 5)
    assert torch.all((per_cat == 0) | (per_cat == 1))
    assert torch.all(per_cat.sum(-1) == 1)

    w = torch.randn(2, 3, 20)
    (grad_z,) = torch.autograd.grad((w * z).sum(), logits)
    (grad_p,) = torch.autograd.grad((w * logits.softmax(-1).flatten(-2)).sum(), logits)
    torch.testing.assert_close(grad_z, grad_p)
    assert grad_z.abs().sum() > 0


@pytest.mark.parametrize("sampler", ["multinomial", "inverse_cdf"])
def test_sample_follows_the_distribution_and_is_reproducible_with_a_generator(sampler: str) -> None:
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.7, 0.1, 0.2]])  # (C, K)
    logits = probs.log().expand(4000, 2, 3)  # (N, C, K)
    z = sample_one_hot(logits, torch.Generator().manual_seed(1), sampler).reshape(4000, 2, 3)
    freq = z.mean(0)
    assert (freq - probs).abs().max() < 0.03  # ~4 standard errors at N = 4000

    again = sample_one_hot(logits, torch.Generator().manual_seed(1), sampler).reshape(4000, 2, 3)
    other = sample_one_hot(logits, torch.Generator().manual_seed(2), sampler).reshape(4000, 2, 3)
    assert torch.equal(z, again)
    assert not torch.equal(z, other)


def test_the_model_samples_with_its_configured_sampler() -> None:
    logits = torch.randn(50, 4, 5)  # (N, C, K)
    for sampler in ("multinomial", "inverse_cdf"):
        model = ObservationModel(dataclasses.replace(tiny_cfg(), sampler=sampler))
        got = model.sample(logits, torch.Generator().manual_seed(3))
        assert torch.equal(got, sample_one_hot(logits, torch.Generator().manual_seed(3), sampler))
    other = sample_one_hot(logits, torch.Generator().manual_seed(3), "multinomial")
    assert not torch.equal(got, other)  # the two samplers are different draws


def test_mode_is_the_one_hot_argmax() -> None:
    logits = torch.tensor([[[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]]], requires_grad=True)  # (1, C=2, K=3)
    z = mode_one_hot(logits)
    assert torch.equal(z, torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.0, 0.0]]))
    assert not z.requires_grad
    model = ObservationModel(tiny_cfg())
    assert torch.equal(model.mode(logits), z)


# --------------------------------------------------------------------------------------- loss terms


def test_decoder_nll_on_a_hand_computed_case() -> None:
    recon = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[0.5, 0.0], [0.0, 0.0]]]])  # (B=2, S=1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    # Frame 0: 4 pixels of squared error 1; frame 1: one of 0.25. Each pixel adds 0.5 ln 2pi.
    frame0 = 4 * 0.5 + 4 * 0.5 * LOG_2PI
    frame1 = 0.5 * 0.25 + 4 * 0.5 * LOG_2PI
    assert decoder_nll(recon, target).item() == pytest.approx((frame0 + frame1) / 2)


def test_decoder_nll_weights_each_pixel_by_hand() -> None:
    recon = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (B=1, S=1, 2, 2)
    target = torch.zeros(1, 1, 2, 2)
    weights = torch.tensor([[[[3.0, 1.0], [1.0, 2.0]]]])
    # Pixel (0, 0): squared error 1, weight 3; the others 0 error: only the constant, weighted 1, 1, 2.
    expected = 3 * (0.5 + 0.5 * LOG_2PI) + (1 + 1 + 2) * 0.5 * LOG_2PI
    assert decoder_nll(recon, target, weights).item() == pytest.approx(expected)
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 1, 1, 2)  # p = 1/2 and 3/4
    cells = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    # -log(1/2) weighted 2, -log(1/4) weighted 1
    weighted = decoder_bernoulli_nll(logits, cells, torch.tensor([2.0, 1.0]).reshape(1, 1, 1, 2))
    assert weighted.item() == pytest.approx(2 * math.log(2.0) + math.log(4.0))


def test_moved_mask_by_hand_gray_and_colour() -> None:
    # Three gray 2x2 frames, oldest first: (0, 0) changes from the first to the second frame, (1, 1)
    # from the second to the third, (0, 1) by less than half a gray level, (1, 0) never.
    frames = torch.zeros(3, 2, 2)
    frames[1:, 0, 0] = 1.0
    frames[2, 1, 1] = 0.5
    frames[1:, 0, 1] = 0.1 / 255
    mask = moved_mask(frames, frame_channels=1)
    assert mask.shape == (1, 2, 2)
    assert mask[0].tolist() == [[True, False], [False, True]]
    # Two RGB frames (S = 6): a pixel whose colours differ from each other but not over time has not
    # moved; one whose green alone changes has. A mask taken across channels would mark both.
    rgb = torch.zeros(2, 3, 2, 2)  # (stack, c, H, W)
    rgb[:, 0, 0, 0] = 1.0  # red in both frames at (0, 0)
    rgb[1, 1, 1, 1] = 1.0  # green appears at (1, 1)
    mask = moved_mask(rgb.flatten(0, 1)[None], frame_channels=3)  # (1, 1, 2, 2) with a batch dimension
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0].tolist() == [[False, False], [False, True]]
    weights = moved_weights(rgb.flatten(0, 1), frame_channels=3, weight=5.0)
    assert weights[0].tolist() == [[1.0, 1.0], [1.0, 5.0]]


@pytest.mark.parametrize("observation", ["picture", "grid"])
def test_compute_loss_with_moved_weight_weighs_what_changes(observation: str) -> None:
    torch.manual_seed(0)
    if observation == "grid":
        model = grid_model(moved_weight=4.0).double()
        frames = (torch.rand(2, 3, 6, 10, 10) < 0.2).double()  # (B, T, S = 2 frames x 3 kinds, 10, 10)
    else:
        model = ObservationModel(tiny_cfg(moved_weight=4.0), frame_stack=4, frame_channels=1).double()
        frames = torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8)
        frames[..., :32, :] = frames[..., :1, :32, :]  # the top half still: every frame as the first
        frames = frames.double() / 255  # floats in [0, 1], as the model reads them (double for the comparison)
    logits = model.encode(frames)
    z = model.sample(logits, torch.Generator().manual_seed(0))
    _, m = model.compute_loss(frames, z, logits)
    target = frames
    out = model.decode(z)
    # Brute force: a pixel moved if any frame of the stack differs from the one before it there.
    c, stack = model.frame_channels, model.frame_stack
    moved = torch.zeros(*frames.shape[:2], *frames.shape[-2:], dtype=torch.bool)
    for k in range(1, stack):
        now, before = target[:, :, k * c : (k + 1) * c], target[:, :, (k - 1) * c : k * c]
        moved |= ((now - before).abs() > 0.5 / 255).any(dim=2)
    weights = (1 + 3 * moved.double())[:, :, None]  # (B, T, 1, H, W)
    if observation == "grid":
        per = -(target * out.log() + (1 - target) * (1 - out).log())
    else:
        per = 0.5 * (target - out) ** 2 + 0.5 * LOG_2PI
    expected = (per * weights).sum((-3, -2, -1)).mean()
    assert m["obs/decoder_loss"].item() == pytest.approx(expected.item(), rel=1e-9)
    if observation == "picture":
        assert not moved[..., :32, :].any() and moved[..., 32:, :].float().mean() > 0.9
    plain = dataclasses.replace(model.cfg, moved_weight=1.0)
    model.cfg = plain
    _, m1 = model.compute_loss(frames, z, logits)
    assert m1["obs/decoder_loss"].item() == pytest.approx((per.sum((-3, -2, -1)).mean()).item(), rel=1e-9)
    assert m1["obs/decoder_loss"] < m["obs/decoder_loss"]


def test_latent_entropy_and_hinge_on_two_by_two() -> None:
    # Categorical 1: p = (1/2, 1/2); categorical 2: p = (3/4, 1/4).
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # (1, C=2, K=2)
    h = math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert latent_entropy(logits).item() == pytest.approx(h)
    norm = h / (2 * math.log(2))  # ~0.906

    loss, mean_h = entropy_hinge(logits, coef=5.0, threshold=0.95)
    assert loss.item() == pytest.approx(5.0 * (0.95 - norm))
    assert mean_h.item() == pytest.approx(h)
    loss, _ = entropy_hinge(logits, coef=5.0, threshold=0.1)  # above the threshold: inactive
    assert loss.item() == 0.0


def test_entropy_hinge_acts_on_the_batch_mean_entropy() -> None:
    # One uniform latent (normalised entropy 1) and one near-deterministic (~0).
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[20.0, 0.0], [0.0, 20.0]]])  # (B=2, C=2, K=2)
    p = 1 / (1 + math.exp(20.0))
    h_det = -2 * (p * math.log(p) + (1 - p) * math.log(1 - p))
    mean_norm = (2 * math.log(2) + h_det) / 2 / (2 * math.log(2))
    loss, _ = entropy_hinge(logits, coef=5.0, threshold=0.6)
    assert loss.item() == pytest.approx(5.0 * (0.6 - mean_norm))  # 0.5 - (a mean of hinges is 1.5)


def test_consistency_cross_entropy_on_two_by_two_and_its_gradient() -> None:
    enc = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], requires_grad=True)  # q = (.5,.5), (.75,.25)
    dyn = torch.tensor([[[math.log(4.0), 0.0], [0.0, 0.0]]], requires_grad=True)  # p = (.8,.2), (.5,.5)
    ce = consistency_ce(enc, dyn)
    manual = -(0.8 * math.log(0.5) + 0.2 * math.log(0.5)) - (0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert ce.item() == pytest.approx(manual)
    # The targets are the dynamics probabilities: d CE / d enc logits = q - p; nothing reaches dyn.
    grad_enc, grad_dyn = torch.autograd.grad(ce, [enc, dyn], allow_unused=True)
    expected = torch.tensor([[[0.5 - 0.8, 0.5 - 0.2], [0.75 - 0.5, 0.25 - 0.5]]])
    torch.testing.assert_close(grad_enc, expected)
    assert grad_dyn is None


def test_consistency_mask_weights_the_average() -> None:
    torch.manual_seed(0)
    enc, dyn = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)  # (B, T, C, K)
    per = -(dyn.softmax(-1) * enc.log_softmax(-1)).sum((-2, -1))  # (B, T)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    assert consistency_ce(enc, dyn).item() == pytest.approx(per.mean().item(), rel=1e-6)
    assert consistency_ce(enc, dyn, mask).item() == pytest.approx(per[mask].mean().item(), rel=1e-6)
    assert consistency_ce(enc, dyn, torch.zeros(2, 3)).item() == 0.0


# --------------------------------------------------------------------------------------- compute_loss


def test_compute_loss_is_the_sum_of_its_terms() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(entropy_threshold=1.0)  # the hinge acts for any entropy below the maximum
    model = ObservationModel(cfg)
    frames = torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8)
    logits = model.encode(frames)
    z = model.sample(logits, torch.Generator().manual_seed(0))
    dyn = torch.randn(2, 3, 3, 5)
    loss, m = model.compute_loss(frames, z, logits, dyn)

    recon = model.decode(z)
    target = frames.float() / 255
    dec = (0.5 * (target - recon) ** 2 + 0.5 * LOG_2PI).sum((-3, -2, -1)).mean()
    norm = latent_entropy(logits).mean() / (3 * math.log(5))
    ent = 5.0 * torch.relu(1.0 - norm)
    con = 0.01 * -(dyn.softmax(-1) * logits.log_softmax(-1)).sum((-2, -1)).mean()
    torch.testing.assert_close(m["obs/decoder_loss"], dec.detach())
    torch.testing.assert_close(m["obs/entropy_loss"], ent.detach())
    assert ent.item() > 0
    torch.testing.assert_close(m["obs/consistency_loss"], con.detach())
    torch.testing.assert_close(m["obs/consistency_ce"], con.detach() / 0.01)
    torch.testing.assert_close(m["obs/norm_entropy"], norm.detach())
    torch.testing.assert_close(loss, dec + ent + con)
    torch.testing.assert_close(m["obs/loss"], loss.detach())
    assert set(m) == {
        "obs/loss",
        "obs/decoder_loss",
        "obs/entropy_loss",
        "obs/consistency_loss",
        "obs/consistency_ce",
        "obs/entropy",
        "obs/norm_entropy",
        "obs/recon_mae",
    }

    _, m0 = model.compute_loss(frames, z, logits)  # pretraining: no consistency term
    assert "obs/consistency_loss" not in m0
    torch.testing.assert_close(m0["obs/loss"], (dec + ent).detach())


def test_consistency_gradient_reaches_the_encoder_but_not_the_dynamics_logits() -> None:
    torch.manual_seed(0)
    model = ObservationModel(tiny_cfg())
    frames = torch.randint(0, 256, (2, 4, 64, 64), dtype=torch.uint8)
    logits = model.encode(frames)
    z = model.sample(logits, torch.Generator().manual_seed(0))
    dyn = torch.randn(2, 3, 5, requires_grad=True)
    with_con, _ = model.compute_loss(frames, z, logits, dyn)
    without, _ = model.compute_loss(frames, z, logits)
    enc_params, dec_params = list(model.encoder.parameters()), list(model.decoder.parameters())
    grads = torch.autograd.grad(with_con - without, enc_params + dec_params + [dyn], allow_unused=True)
    enc_grads, dec_grads, dyn_grad = grads[: len(enc_params)], grads[len(enc_params) : -1], grads[-1]
    assert dyn_grad is None
    assert all(g is not None for g in enc_grads)
    assert sum(g.abs().sum() for g in enc_grads) > 0
    # The difference is the consistency term only: it leaves the decoder alone.
    assert all(g is None or torch.all(g == 0) for g in dec_grads)


def test_dynamics_logits_must_match() -> None:
    model = ObservationModel(tiny_cfg())
    frames = torch.zeros(2, 4, 64, 64, dtype=torch.uint8)
    logits = model.encode(frames)
    with pytest.raises(ValueError, match="must match logits"):
        model.compute_loss(frames, model.sample(logits), logits, torch.zeros(2, 3, 4))


def test_one_hot_without_range_check_equals_torch_one_hot() -> None:
    from twm.models.observation import one_hot_of

    index = torch.randint(0, 7, (3, 5, 4), generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        expected = torch.nn.functional.one_hot(index, 7).to(dtype)
        got = one_hot_of(index, 7, dtype)
        assert got.dtype == dtype and torch.equal(got, expected)


# --------------------------------------------------------------------------------------- grids


def grid_model(**kw: float) -> ObservationModel:
    """A grid model of 2 stacked frames with 3 kinds of object on MinAtar's 10x10 grid."""
    return ObservationModel(tiny_cfg(**kw), frame_stack=2, frame_channels=3, grid_size=10)


def test_bernoulli_decoder_nll_matches_a_hand_computation() -> None:
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 1, 1, 2)  # p = 1/2 and 3/4
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    # -log(1/2) - log(1 - 3/4) = log 8, summed over the cells of one frame
    assert decoder_bernoulli_nll(logits, target).item() == pytest.approx(math.log(8.0))
    # Averaged over leading dimensions: a second frame predicted perfectly (large logits) adds ~0.
    both = torch.stack([logits, torch.tensor([40.0, -40.0]).reshape(1, 1, 1, 2)])
    assert decoder_bernoulli_nll(both, torch.stack([target, target])).item() == pytest.approx(math.log(8.0) / 2)


def test_grid_model_shapes_and_its_decoder_loss_is_the_bernoulli_nll_of_its_probabilities() -> None:
    torch.manual_seed(0)
    model = grid_model().double()
    assert model.observation == "grid" and model.frame_size == 10 and model.in_channels == 6
    frames = (torch.rand(2, 5, 6, 10, 10) < 0.1).double()  # (B, T, S, 10, 10) cells in {0, 1}
    logits = model.encode(frames)
    assert logits.shape == (2, 5, 3, 5)
    z = model.sample(logits)
    p = model.decode(z)
    assert p.shape == (2, 5, 6, 10, 10) and bool(((p > 0) & (p < 1)).all())
    _, metrics = model.compute_loss(frames, z, logits)
    t = frames
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).sum(dim=(-3, -2, -1)).mean()
    assert metrics["obs/decoder_loss"].item() == pytest.approx(expected.item(), rel=1e-9)
    assert metrics["obs/recon_mae"].item() == pytest.approx((t - p).abs().mean().item(), rel=1e-9)
    with pytest.raises(ValueError, match=r"\(6, 10, 10\)"):
        model.encode(torch.zeros(2, 6, 64, 64, dtype=torch.uint8))



# ------------------------------------------------------------------ vectors (env.observation=vector)


def vector_model(**kw: object) -> ObservationModel:
    """A vector model of 2 stacked observations of 3 numbers."""
    return ObservationModel(tiny_cfg(**kw), frame_stack=2, frame_channels=3, vector=True)


def test_vector_encoder_reads_the_symlog_of_the_numbers() -> None:
    torch.manual_seed(0)
    model = vector_model().double()
    assert model.observation == "vector" and model.frame_size == 1 and model.in_channels == 6
    e = math.e
    x = torch.tensor([-(e**2 - 1), -(e - 1), 0.0, e - 1, e**2 - 1, 1e6], dtype=torch.float64).reshape(1, 6, 1, 1)
    flat_symlog = model.encoder[:2](x)  # flatten, symlog
    expected = [-2.0, -1.0, 0.0, 1.0, 2.0, math.log1p(1e6)]
    assert flat_symlog.squeeze(0).tolist() == pytest.approx(expected, rel=1e-12)
    # The same numbers give the same logits through encode (symlog first, then the MLP).
    mlp = model.encoder[2:]
    torch.testing.assert_close(model.encode(x).flatten(-2), mlp(torch.tensor([expected], dtype=torch.float64)))


def test_vector_decoder_loss_is_the_unit_gaussian_nll_of_the_symlog_numbers() -> None:
    torch.manual_seed(0)
    model = vector_model().double()
    frames = torch.randn(2, 5, 6, 1, 1, dtype=torch.float64) * 30  # (B, T, S, 1, 1) numbers of any scale
    logits = model.encode(frames)
    z = model.sample(logits)
    means = model._decode(z)  # symlog means, (B, T, S, 1, 1)
    decoded = model.decode(z)
    # decode gives the numbers themselves: symexp of the symlog means.
    torch.testing.assert_close(decoded, torch.sign(means) * torch.expm1(means.abs()))
    _, metrics = model.compute_loss(frames, z, logits)
    target = torch.sign(frames) * torch.log1p(frames.abs())
    expected = (0.5 * (target - means) ** 2 + 0.5 * math.log(2 * math.pi)).sum(dim=(-3, -2, -1)).mean()
    assert metrics["obs/decoder_loss"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert metrics["obs/recon_mae"].item() == pytest.approx((frames - decoded).abs().mean().item(), rel=1e-9)
    with pytest.raises(ValueError, match=r"\(6, 1, 1\)"):
        model.encode(torch.zeros(2, 6, 64, 64))
    with pytest.raises(ValueError, match="grids or vectors"):
        ObservationModel(tiny_cfg(), frame_stack=2, frame_channels=3, vector=True, grid_size=10)
