"""Aggregate human-normalized scores over games, with stratified bootstrap confidence intervals.

The estimators follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"), whose functions take a (runs x games) matrix; we accept a different number of runs per
game and reduce to exactly rliable's numbers when the counts are equal:

- mean / median: mean / median over games of the per-game mean hns (``aggregate_mean/median``),
- IQM: the mean of the middle half of every run's hns pooled over games: sort the n pooled values
  and average those whose rank r (1-based) satisfies n/4 < r <= 3n/4. This is the convention of the
  published Atari 100k aggregates we compare with (it reproduces the IQMs of docs/method.md ("Published results") for all
  seven methods, e.g. TWM 0.450). rliable's ``aggregate_iqm`` is ``scipy.stats.trim_mean(x, 0.25)``,
  which drops ``int(n / 4)`` values at each end; the two agree whenever n is a multiple of 4 and
  otherwise differ by one value at the top (TWM's 130 runs: 0.459). We report that one too, as
  ``iqm_rliable``,
- optimality gap: ``1 - mean(min(hns, 1))`` = ``mean(max(0, 1 - hns))`` over every run pooled over
  games (``aggregate_optimality_gap`` with gamma = 1),
- games above human: the number of games whose mean hns exceeds 1.

Pooling weighs each game by its number of runs; with equal counts (the usual case, and the only one
rliable accepts) that is the same as averaging per game first.

Confidence intervals: rliable's ``StratifiedBootstrap`` with the percentile method — every
replicate resamples the runs of each game with replacement (games themselves are kept), the
statistic is recomputed, and the interval is the 2.5th and 97.5th percentiles (``np.percentile``,
linear interpolation, as arch does) of the replicates. Implemented here in numpy so that the
report needs neither rliable nor its arch/pandas stack, and seeded with ``numpy.random.default_rng``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

METRICS: tuple[str, ...] = ("mean", "median", "iqm", "iqm_rliable", "optimality_gap", "games_above_human")
METRIC_LABELS: dict[str, str] = {
    "mean": "mean HNS",
    "median": "median HNS",
    "iqm": "IQM",
    "iqm_rliable": "IQM (rliable trim_mean)",
    "optimality_gap": "optimality gap",
    "games_above_human": "games > human",
}
# Bootstrap replicates are computed in chunks so that memory stays bounded for many runs
# (SPR: 2,600 runs x 2,000 replicates); the chunk size is fixed so results depend only on the seed.
_CHUNK_VALUES = 2_000_000


def interquartile_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the values whose rank r (1-based) along ``axis`` satisfies n/4 < r <= 3n/4."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = values.shape[axis]
    lo, hi = n // 4, (3 * n) // 4  # 0-based: ranks floor(n/4)+1 .. floor(3n/4)
    if hi <= lo:  # fewer than 2 values: nothing to trim
        lo, hi = 0, n
    return np.take(values, np.arange(lo, hi), axis=axis).mean(axis=axis)


def trimmed_mean_25(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """25% trimmed mean along ``axis``, exactly as ``scipy.stats.trim_mean(values, 0.25, axis)`` (rliable's IQM)."""
    values = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = values.shape[axis]
    cut = int(0.25 * n)
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _statistics(per_game: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """All aggregates of per-game hns arrays shaped (..., runs_g); leading axes are replicates."""
    game_means = np.stack([runs.mean(axis=-1) for runs in per_game], axis=-1)
    pooled = np.concatenate(per_game, axis=-1)
    return {
        "mean": game_means.mean(axis=-1),
        "median": np.median(game_means, axis=-1),
        "iqm": interquartile_mean(pooled, axis=-1),
        "iqm_rliable": trimmed_mean_25(pooled, axis=-1),
        "optimality_gap": np.maximum(0.0, 1.0 - pooled).mean(axis=-1),
        "games_above_human": (game_means > 1.0).sum(axis=-1).astype(np.float64),
    }


def point_estimates(hns_by_game: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The aggregates of per-game arrays of run hns (see the module docstring)."""
    per_game = _check(hns_by_game)
    return {name: float(value) for name, value in _statistics(per_game).items()}


def stratified_bootstrap(
    hns_by_game: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals of every aggregate; runs resampled within each game."""
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    per_game = _check(hns_by_game)
    rng = np.random.default_rng(seed)
    total_runs = sum(len(runs) for runs in per_game)
    chunk = max(1, _CHUNK_VALUES // total_runs)
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)
        samples = [runs[rng.integers(0, len(runs), size=(size, len(runs)))] for runs in per_game]
        for name, values in _statistics(samples).items():
            replicates[name].append(values)
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals = {}
    for name, chunks in replicates.items():
        lo, hi = np.percentile(np.concatenate(chunks), [tail, 100.0 - tail])
        intervals[name] = (float(lo), float(hi))
    return intervals


def _check(hns_by_game: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    if not hns_by_game:
        raise ValueError("no games to aggregate")
    per_game = []
    for game, runs in hns_by_game.items():
        runs = np.asarray(runs, dtype=np.float64).ravel()
        if runs.size == 0:
            raise ValueError(f"no runs for {game}")
        per_game.append(runs)
    return per_game


@dataclass(frozen=True)
class AggregateResult:
    games: list[str]
    runs: int
    point: dict[str, float]
    ci: dict[str, tuple[float, float]] | None
    reps: int
    seed: int
    confidence: float = 0.95


def aggregate_hns(
    hns_by_game: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> AggregateResult:
    """Point estimates and (for reps > 0) stratified bootstrap intervals of every aggregate."""
    point = point_estimates(hns_by_game)
    ci = stratified_bootstrap(hns_by_game, reps, seed, confidence) if reps > 0 else None
    runs = sum(int(np.size(v)) for v in hns_by_game.values())
    return AggregateResult(list(hns_by_game), runs, point, ci, reps, seed, confidence)


@dataclass(frozen=True)
class GameSummary:
    game: str
    scores: list[float]
    mean_score: float
    std_score: float | None  # sample std (ddof=1) across runs; None with a single run
    hns: list[float] | None  # None for a game without reference scores (catch)
    random: float | None = None  # the random-policy score (Atari table, or measured: MinAtar, Crafter)
    random_ratio: float | None = None  # mean score / random, for games without human scores
    crafter_scores: list[float] | None = None  # Crafter: each run's Crafter score (%)
    # Crafter: each run's score over all its training games (the Crafter paper's definition)
    crafter_train_scores: list[float] | None = None

    @property
    def runs(self) -> int:
        return len(self.scores)

    @property
    def mean_hns(self) -> float | None:
        return None if self.hns is None else float(np.mean(self.hns))


def summarize_game(
    game: str,
    scores: np.ndarray,
    hns: np.ndarray | None,
    crafter_scores: list[float] | None = None,
    crafter_train_scores: list[float] | None = None,
) -> GameSummary:
    from twm.games import random_normalized_score, random_score

    scores = np.asarray(scores, dtype=np.float64)
    std = float(np.std(scores, ddof=1)) if scores.size > 1 else None
    mean = float(scores.mean())
    return GameSummary(
        game,
        scores.tolist(),
        mean,
        std,
        None if hns is None else np.asarray(hns, dtype=np.float64).tolist(),
        random=random_score(game),
        random_ratio=random_normalized_score(game, mean),
        crafter_scores=crafter_scores or None,
        crafter_train_scores=crafter_train_scores or None,
    )
