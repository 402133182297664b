"""Symlog, two-hot heads and uniform mixing (twm.models.distributions): known answers."""

from __future__ import annotations

import math

import pytest
import torch

from twm.models.distributions import (
    TwoHotSymlog,
    categorical_index,
    mix_uniform,
    symexp,
    symlog,
    zero_output_layer,
)


def test_symlog_known_values_and_symexp_is_its_inverse() -> None:
    e = math.e
    x = torch.tensor([0.0, e - 1, -(e - 1), e**2 - 1], dtype=torch.float64)
    torch.testing.assert_close(symlog(x), torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64))
    values = torch.linspace(-1e4, 1e4, 2001, dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(values)), values, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(symlog(symexp(values / 1e3)), values / 1e3, rtol=1e-12, atol=1e-12)


def test_two_hot_weights_of_a_small_table_by_hand() -> None:
    table = TwoHotSymlog(bins=5, low=-2.0, high=2.0)  # bins at -2, -1, 0, 1, 2 (symlog space)
    x = symexp(torch.tensor([0.25, 1.0, 3.0, -1.5, 2.0]))
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.75, 0.25, 0.0],  # 0.25: a quarter of the way from bin 0 to bin 1
            [0.0, 0.0, 0.0, 1.0, 0.0],  # exactly on a bin
            [0.0, 0.0, 0.0, 0.0, 1.0],  # above the range: the end bin
            [0.5, 0.5, 0.0, 0.0, 0.0],  # -1.5: halfway between -2 and -1
            [0.0, 0.0, 0.0, 0.0, 1.0],  # the top bin itself
        ]
    )
    torch.testing.assert_close(table.encode(x), expected, rtol=0, atol=1e-6)


def test_two_hot_weights_of_the_default_table_by_hand() -> None:
    # 255 bins on [-20, 20]: spacing 40/254. symlog(e - 1) = 1 = -20 + 133.35 spacings, so bin 133
    # gets 0.65 and bin 134 gets 0.35.
    table = TwoHotSymlog()
    target = table.encode(torch.tensor([math.e - 1]))[0]
    assert torch.nonzero(target).flatten().tolist() == [133, 134]
    torch.testing.assert_close(target[133:135], torch.tensor([0.65, 0.35]), rtol=0, atol=1e-5)


def test_two_hot_encode_then_decode_returns_the_value() -> None:
    table = TwoHotSymlog().double()
    values = torch.tensor([0.0, 0.3, -0.76, 1.0, 7.5, -123.0, 4000.0], dtype=torch.float64)
    logits = table.encode(values).log()  # log of the two-hot vector: its softmax is the vector
    torch.testing.assert_close(table.decode(logits), values, rtol=1e-9, atol=1e-9)


def test_two_hot_loss_is_the_cross_entropy_to_the_two_hot_target() -> None:
    table = TwoHotSymlog(bins=5, low=-2.0, high=2.0)
    logits = torch.tensor([[0.1, -0.3, 2.0, 0.5, -1.0]])
    log_p = logits.log_softmax(-1)[0]
    expected = -(0.75 * log_p[2] + 0.25 * log_p[3])  # target symlog 0.25: bins 2 and 3
    torch.testing.assert_close(table.loss(logits, symexp(torch.tensor([0.25]))), expected[None])


def test_a_zeroed_two_hot_head_predicts_zero() -> None:
    linear = torch.nn.Linear(8, 255)
    zero_output_layer(linear)
    assert TwoHotSymlog().decode(linear(torch.randn(3, 8))).abs().max() < 1e-5


def test_symexp_bins_of_a_small_table_by_hand() -> None:
    # Points -2, -1, 0, 1, 2 in symlog space: bins at -(e^2 - 1), -(e - 1), 0, e - 1, e^2 - 1, and
    # the weights are linear in the value itself.
    e = math.e
    table = TwoHotSymlog(bins=5, low=-2.0, high=2.0, spacing="symexp").double()
    torch.testing.assert_close(  # the bins are built in float32
        table.bins, torch.tensor([-(e**2) + 1, -e + 1, 0.0, e - 1, e**2 - 1], dtype=torch.float64), rtol=1e-7, atol=0
    )
    x = torch.tensor([0.5, e - 1, 50.0, -3.0], dtype=torch.float64)
    above = (0.5 - 0.0) / (e - 1)  # 0.5 between the bins 0 and e - 1
    below = (-(e - 1) + 3.0) / (-(e - 1) + e**2 - 1)  # -3 between -(e^2 - 1) and -(e - 1): share of the lower
    expected = torch.tensor(
        [
            [0.0, 0.0, 1 - above, above, 0.0],
            [0.0, 0.0, 0.0, 1.0, 0.0],  # on a bin
            [0.0, 0.0, 0.0, 0.0, 1.0],  # above the range: the end bin
            [below, 1 - below, 0.0, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(table.encode(x), expected, rtol=0, atol=1e-7)


def test_symexp_bins_are_mirrored_and_encode_then_decode_returns_the_value() -> None:
    table = TwoHotSymlog(spacing="symexp")
    assert torch.equal(table.bins, -table.bins.flip(0)) and table.bins[127] == 0
    assert table.bins[-1] == pytest.approx(math.expm1(20.0), rel=1e-6)
    double = TwoHotSymlog(spacing="symexp").double()
    values = torch.tensor([0.0, 0.3, -0.76, 1.0, 7.5, -123.0, 4000.0], dtype=torch.float64)
    torch.testing.assert_close(double.decode(double.encode(values).log()), values, rtol=1e-9, atol=1e-9)


def test_a_random_reward_reads_as_its_mean_only_with_symexp_bins() -> None:
    """A reward of 1 paid with chance p: the best two-hot prediction is the mixture p target(1) +
    (1 - p) target(0). Symlog bins read it as symexp(p symlog 1) = 2^p - 1; symexp bins as p."""
    for spacing, read in (("symlog", lambda p: 2.0**p - 1.0), ("symexp", lambda p: p)):
        table = TwoHotSymlog(spacing=spacing).double()
        one, zero = table.encode(torch.tensor([1.0, 0.0], dtype=torch.float64))
        for p in (0.1, 0.5, 0.9):
            mixture = p * one + (1 - p) * zero
            got = float(table.decode(mixture.log()))
            assert got == pytest.approx(read(p), rel=1e-9), (spacing, p)


def test_mean_is_the_distributions_mean_in_the_values_units() -> None:
    """``mean``: sum_i p_i symexp(b_i) for symlog bins (by hand here), ``decode`` itself for symexp bins."""
    table = TwoHotSymlog().double()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 255, generator=g, dtype=torch.float64) * 4
    by_hand = (logits.softmax(-1) * symexp(table.bins)).sum(-1)
    torch.testing.assert_close(table.mean(logits), by_hand, rtol=1e-12, atol=1e-6)
    # A reward of 1 with chance 0.1: symlog bins read 2^0.1 - 1, their mean is 0.1 up to the bins'
    # curvature (the two-hot weights of 1 are linear in symlog, not in the value).
    one, zero = table.encode(torch.tensor([1.0, 0.0], dtype=torch.float64))
    mixture = (0.1 * one + 0.9 * zero).log()
    assert float(table.decode(mixture)) == pytest.approx(2**0.1 - 1, rel=1e-9)
    assert float(table.mean(mixture)) == pytest.approx(0.1, rel=0.01)
    symexp_table = TwoHotSymlog(spacing="symexp").double()
    assert torch.equal(symexp_table.mean(logits), symexp_table.decode(logits))


def test_equal_logits_on_mirrored_symexp_bins_read_exactly_zero() -> None:
    """The outer bins are +-4.9e8: in a plain left-to-right sum the rounding of their terms would be
    far from 0. A zero-initialised head, and bins that no target reaches (whose logits get equal
    gradients), have equal logits on mirrored bins."""
    table = TwoHotSymlog(spacing="symexp")
    g = torch.Generator().manual_seed(0)
    half = torch.randn(4, 127, generator=g) * 3
    logits = torch.cat([half, torch.randn(4, 1, generator=g), half.flip(-1)], dim=-1)  # (4, 255)
    assert torch.equal(table.decode(logits), torch.zeros(4))
    linear = torch.nn.Linear(8, 255)
    zero_output_layer(linear)
    assert torch.equal(table.decode(linear(torch.randn(3, 8))), torch.zeros(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the sum is in float32 whatever the autocast
        assert torch.equal(table.decode(logits.bfloat16()).float(), torch.zeros(4))


def test_symexp_spacing_needs_a_symmetric_range() -> None:
    with pytest.raises(ValueError, match="low = -high"):
        TwoHotSymlog(bins=5, low=-1.0, high=2.0, spacing="symexp")
    with pytest.raises(ValueError, match="spacing"):
        TwoHotSymlog(spacing="linear")


@pytest.mark.parametrize("unimix", [0.01, 0.3])
def test_uniform_mixing_gives_the_stated_minimum_probability(unimix: float) -> None:
    K = 6
    logits = torch.tensor([[50.0, -50.0, 0.0, -30.0, 10.0, -80.0]], dtype=torch.float64)
    probs = mix_uniform(logits, unimix).softmax(-1)
    assert probs.min() >= unimix / K - 1e-12
    torch.testing.assert_close(probs.min(), torch.tensor(unimix / K, dtype=torch.float64))  # the -80 class
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(probs, (1 - unimix) * logits.softmax(-1) + unimix / K)
    assert mix_uniform(logits, 0.0) is logits  # off: untouched


def test_inverse_cdf_index_is_the_first_class_whose_cumulative_probability_exceeds_u() -> None:
    # Rows not normalised (total 2): u is scaled by the total. The uniforms are those of a generator
    # with seed 5, drawn the way categorical_index draws them; the answer is counted by hand per row.
    probs = torch.tensor([[0.5, 0.0, 1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # (3, 4)
    u = torch.rand(3, 1, generator=torch.Generator().manual_seed(5))
    expected = []
    for row, ui in zip(probs.tolist(), u[:, 0].tolist(), strict=True):
        cum, target = 0.0, ui * sum(row)
        for k, p in enumerate(row):
            cum += p
            if target < cum:
                expected.append(k)
                break
    got = categorical_index(probs, torch.Generator().manual_seed(5), "inverse_cdf")
    assert got.tolist() == expected
    assert got[1] == 1 and got[2] == 0  # the only classes with mass


def test_inverse_cdf_index_never_picks_a_class_of_probability_zero_and_matches_the_frequencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probs = torch.tensor([0.0, 0.25, 0.0, 0.5, 0.25, 0.0]).expand(100_000, 6)  # (N, K)
    index = categorical_index(probs, torch.Generator().manual_seed(0), "inverse_cdf")
    counts = torch.bincount(index, minlength=6).double() / 100_000
    assert counts[[0, 2, 5]].sum() == 0
    assert (counts - probs[0].double()).abs().max() < 0.006  # ~4 standard errors

    # The clamp is a guard: with u = 1 (outside torch.rand's [0, 1)) every cumulative probability is
    # <= u * total, and the index stays the last class instead of K.
    def largest_uniform(*shape: int, **kwargs: object) -> torch.Tensor:
        return torch.ones(shape[0])

    monkeypatch.setattr(torch, "rand", largest_uniform)
    edge = categorical_index(torch.tensor([[1.0, 1.0, 1.0]]), None, "inverse_cdf")
    assert edge.tolist() == [2]
