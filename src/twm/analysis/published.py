"""Published Atari 100k aggregates of TWM and the methods it is usually compared with.

These are facts, stated here so that ``twm report`` can put our results beside them without
shipping anyone's per-run data. Every figure is an aggregate of human-normalized scores (hns)
over the 26 Atari 100k games, computed from the per-run final scores each method released:

- ``mean`` / ``median``: mean / median over games of the per-game mean hns,
- ``games_above_human``: games whose mean hns exceeds 1,
- ``iqm``: interquartile mean over all runs pooled over games, as docs/method.md ("Published results") lists it (the
  middle half by rank, see ``twm.analysis.aggregate``); ``iqm_rliable``: rliable's
  ``scipy.stats.trim_mean(hns, 0.25)`` of the same runs,
- ``optimality_gap``: ``mean(max(0, 1 - hns))`` of all runs (rliable, Agarwal et al. 2021).

Sources: mean, median and games above human are the figures of docs/method.md ("Published results") and
of the reference-data README (shared anchors; the per-run files: tests/data/anchors/); recomputing them from the released per-run scores
gives the same values, and so does the IQM (see the note below). ``iqm_rliable`` and the optimality
gap are rliable's estimators (rliable 1.2.0, ``metrics.aggregate_iqm`` and
``metrics.aggregate_optimality_gap``) applied to the same released per-run scores. The references name each method's paper; the per-run scores are those released
with it (SPR and DrQ(eps): the 100-run sets of Agarwal et al. 2021).

Note on the IQM: docs/method.md ("Published results") lists 0.450 / 0.550 / 0.488 / 0.337 / 0.125 / 0.280 / 0.954 for
TWM / STORM / IRIS / SPR / SimPLe / DrQ(eps) / EfficientZero. All seven are the mean of the runs whose
rank lies in (n/4, 3n/4] of the released per-run scores; rliable's ``aggregate_iqm`` (a 25% trimmed
mean) gives 0.459 / 0.561 / 0.501 / 0.337 / 0.130 / 0.280 / 1.047: the same when the number of runs
is a multiple of 4 (SPR, DrQ: 2,600), one more value at the top otherwise (5 runs x 26 games = 130).
Our own runs are measured both ways, so either column compares like with like.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedResult:
    method: str
    reference: str
    runs_per_game: int
    mean: float
    median: float
    iqm: float
    optimality_gap: float
    games_above_human: int
    iqm_rliable: float
    note: str = ""


PUBLISHED: dict[str, PublishedResult] = {
    r.method: r
    for r in (
        PublishedResult(
            "TWM", "Robine et al., ICLR 2023", 5, 0.956, 0.505, 0.450, 0.513, 8, iqm_rliable=0.459
        ),
        PublishedResult(
            "STORM", "Zhang et al., NeurIPS 2023", 5, 1.222, 0.425, 0.550, 0.472, 9, iqm_rliable=0.561
        ),
        PublishedResult(
            "IRIS", "Micheli et al., ICLR 2023", 5, 1.046, 0.289, 0.488, 0.512, 9, iqm_rliable=0.501
        ),
        PublishedResult(
            "SPR", "Schwarzer et al., ICLR 2021", 100, 0.616, 0.396, 0.337, 0.577, 6, iqm_rliable=0.337
        ),
        PublishedResult(
            "SimPLe", "Kaiser et al., ICLR 2020", 5, 0.332, 0.134, 0.125, 0.729, 1, iqm_rliable=0.130
        ),
        PublishedResult(
            "DrQ(eps)",
            "Kostrikov et al. 2021, as run by Agarwal et al. 2021",
            100,
            0.465,
            0.313,
            0.280,
            0.631,
            3,
            iqm_rliable=0.280,
        ),
        PublishedResult(
            "EfficientZero",
            "Ye et al., NeurIPS 2021",
            1,
            1.943,
            1.090,
            0.954,
            0.367,
            14,
            iqm_rliable=1.047,
            note="uses lookahead search",
        ),
    )
}

# The methods docs/method.md ("Published results") compares TWM with; the default of ``twm report --compare``.
DEFAULT_COMPARE: tuple[str, ...] = ("TWM", "STORM", "IRIS", "SPR", "SimPLe")

SOURCE_NOTE = (
    "Published methods: aggregates over the 26 games computed with rliable's definitions from each "
    "method's released per-run scores (mean, median and games > human equal the published figures; "
    "see twm.analysis.published)."
)


def _key(name: str) -> str:
    # "DrQ(eps)", "drq-eps" and "DRQ_EPS" all name the same method.
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_methods(names: str | list[str]) -> list[PublishedResult]:
    """The published rows for a comma-separated list (or list) of method names; '' / 'none' -> [].

    Raises ValueError naming the valid methods for an unknown name.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    items = [item.strip() for item in items if item.strip()]
    if [_key(item) for item in items] == ["none"]:
        return []
    by_key = {_key(name): result for name, result in PUBLISHED.items()}
    results: list[PublishedResult] = []
    for item in items:
        result = by_key.get(_key(item))
        if result is None:
            raise ValueError(f"unknown method {item!r} for --compare; valid: {', '.join(PUBLISHED)}, none")
        if result not in results:
            results.append(result)
    return results
