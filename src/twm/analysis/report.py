"""``twm report``: per-game scores, human-normalized aggregates with confidence intervals, and the
published methods beside them, as Markdown or JSON, with optional plots.

The numbers come from :mod:`twm.analysis.aggregate` (definitions there) and the published figures
from :mod:`twm.analysis.published`. Plots need matplotlib (``pip install 'twm[report]'``), which is
imported only when a plot is asked for, so the text report works with numpy alone.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from twm.analysis.aggregate import (
    METRIC_LABELS,
    METRICS,
    AggregateResult,
    GameSummary,
    aggregate_hns,
    summarize_game,
)
from twm.analysis.published import DEFAULT_COMPARE, SOURCE_NOTE, PublishedResult, resolve_methods
from twm.analysis.scores import Curve, LoadedScores, load_inputs, sort_games
from twm.games import ATARI100K_GAMES, human_normalized_score

MATPLOTLIB_HINT = "pip install 'twm[report]'"
PLOTTED_METRICS: tuple[str, ...] = ("mean", "median", "iqm", "optimality_gap")


class ReportError(ValueError):
    """A report option that cannot be honoured; reported as one line by the CLI."""


@dataclass
class Report:
    label: str
    inputs: list[str]
    games: list[GameSummary]
    excluded: list[str]  # games shown with raw scores only: no human/random reference scores
    aggregate: AggregateResult | None
    published: list[PublishedResult]
    warnings: list[str] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)


def build_report(
    loaded: LoadedScores,
    *,
    label: str = "ours",
    inputs: Sequence[str] = (),
    compare: Sequence[PublishedResult] = (),
    reps: int = 2000,
    seed: int = 0,
) -> Report:
    games: list[GameSummary] = []
    excluded: list[str] = []
    hns_by_game: dict[str, np.ndarray] = {}
    crafter = loaded.crafter_scores_by_game()
    crafter_train = loaded.crafter_scores_by_game(train=True)
    for game, scores in loaded.scores_by_game().items():
        if game in ATARI100K_GAMES:
            hns = np.array([human_normalized_score(game, s) for s in scores], dtype=np.float64)
            hns_by_game[game] = hns
        else:
            hns = None
            excluded.append(game)
        games.append(summarize_game(game, scores, hns, crafter.get(game), crafter_train.get(game)))
    aggregate = aggregate_hns(hns_by_game, reps=reps, seed=seed) if hns_by_game else None
    return Report(
        label,
        list(inputs),
        games,
        excluded,
        aggregate,
        list(compare),
        list(loaded.warnings),
        list(loaded.curves),
    )


# ------------------------------------------------------------------------------------- Markdown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metric(name: str, value: float) -> str:
    # Counts are whole numbers, but a bootstrap percentile of counts may fall between two.
    if name == "games_above_human":
        return f"{value:g}" if value == int(value) else f"{value:.1f}"
    return f"{value:.3f}"


def render_markdown(report: Report) -> str:
    lines = [f"# TWM report: {report.label}", ""]
    n_runs = sum(g.runs for g in report.games)
    lines.append(
        f"{_count(len(report.games), 'game')}, {_count(n_runs, 'run')}, from: {', '.join(report.inputs)}"
    )
    if report.warnings:
        lines += ["", "Skipped:"] + [f"- {w}" for w in report.warnings]

    lines += [
        "",
        "## Per-game scores",
        "",
        "| game | runs | mean score | std | mean HNS | random | x random |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g in report.games:
        hns = "n/a" if g.mean_hns is None else f"{g.mean_hns:.3f}"
        rnd = "n/a" if g.random is None else f"{g.random:.2f}"
        ratio = "n/a" if g.random_ratio is None else f"{g.random_ratio:.2f}"
        lines.append(
            f"| {g.game} | {g.runs} | {g.mean_score:.1f} | {_num(g.std_score, 1)} | {hns} | {rnd} | {ratio} |"
        )
    lines += [
        "",
        "Score: mean of a run's final evaluation episodes; std across runs (n - 1). HNS: human-normalized "
        "(Atari). x random: mean score / random-policy score, for games without human scores whose random "
        "score (measured by scripts/random_scores.py) is positive; n/a elsewhere.",
    ]
    crafter_games = [g for g in report.games if g.crafter_scores]
    if crafter_games:
        lines += [
            "",
            "| game | runs | Crafter score, final evaluation (%) | over all training games (%) | random policy (%) |",
            "|---|---:|---:|---:|---:|",
        ]
        from twm.games import measured_random_scores

        for g in crafter_games:
            scores = g.crafter_scores or []  # not empty: filtered above
            train = f"{np.mean(g.crafter_train_scores):.2f}" if g.crafter_train_scores else "n/a"
            rnd_score = measured_random_scores().get(g.game, {}).get("crafter_score")
            lines.append(f"| {g.game} | {len(scores)} | {np.mean(scores):.2f} | {train} | {_num(rnd_score, 2)} |")
        lines.append(
            "The Crafter paper's score is the one over all training games within the interaction budget "
            "(prefill included); n/a for runs written before it was recorded."
        )
    if report.excluded:
        lines.append("")
        lines.append(
            f"{', '.join(report.excluded)}: no human scores, so raw scores (and x random where a random "
            "score was measured); left out of the human-normalized aggregates."
        )

    agg = report.aggregate
    lines += ["", "## Aggregates (human-normalized scores)", ""]
    if agg is None:
        lines.append("None: no game with human/random reference scores among the inputs.")
    else:
        if agg.ci is None:
            lines.append(
                f"{_count(len(agg.games), 'game')}, {_count(agg.runs, 'run')} (no confidence intervals: --reps 0)."
            )
        else:
            lines.append(
                f"{_count(len(agg.games), 'game')}, {_count(agg.runs, 'run')}; {agg.confidence:.0%} confidence "
                "intervals from a "
                f"stratified bootstrap ({agg.reps} replicates, seed {agg.seed}, percentile method)."
            )
        lines += ["", f"| metric | {report.label} | {agg.confidence:.0%} CI |", "|---|---:|---:|"]
        for name in METRICS:
            ci = (
                "–"
                if agg.ci is None
                else f"[{_metric(name, agg.ci[name][0])}, {_metric(name, agg.ci[name][1])}]"
            )
            lines.append(f"| {METRIC_LABELS[name]} | {_metric(name, agg.point[name])} | {ci} |")
        lines += [
            "",
            "Mean / median: over games of the per-game mean HNS. IQM: mean of the middle half (ranks in "
            "(n/4, 3n/4]) of all runs' HNS pooled over games, the convention of the published figures; "
            "IQM (rliable trim_mean): scipy's 25% trimmed mean, as rliable (equal when n is a multiple of 4). "
            "Optimality gap: mean over all runs of max(0, 1 - HNS). Games > human: per-game mean HNS > 1.",
        ]

    if report.published:
        lines += [
            "",
            "## Compared with published methods",
            "",
            "| method | games | mean HNS | median HNS | IQM | optimality gap | games > human |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        if agg is not None:
            p = agg.point
            lines.append(
                f"| **{report.label}** (this report) | {len(agg.games)} | {p['mean']:.3f} | {p['median']:.3f} | "
                f"{p['iqm']:.3f} | {p['optimality_gap']:.3f} | {p['games_above_human']:g} |"
            )
        for r in report.published:
            note = f"; {r.note}" if r.note else ""
            lines.append(
                f"| {r.method} ({r.reference}{note}) | 26 | {r.mean:.3f} | {r.median:.3f} | {r.iqm:.3f} | "
                f"{r.optimality_gap:.3f} | {r.games_above_human} |"
            )
        lines += ["", SOURCE_NOTE]
        if agg is not None and len(agg.games) < len(ATARI100K_GAMES):
            lines.append("")
            lines.append(
                f"These inputs cover {len(agg.games)} of the {len(ATARI100K_GAMES)} Atari 100k games and the "
                "published figures all 26, so the rows are not directly comparable."
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- JSON


def report_to_json(report: Report) -> dict[str, Any]:
    agg = report.aggregate
    aggregates: dict[str, Any] | None = None
    if agg is not None:
        aggregates = {"games": agg.games, "runs": agg.runs}
        for name in METRICS:
            aggregates[name] = {
                "value": agg.point[name],
                "ci": None if agg.ci is None else list(agg.ci[name]),
            }
    return {
        "label": report.label,
        "inputs": report.inputs,
        "warnings": report.warnings,
        "games": {
            g.game: {
                "runs": g.runs,
                "scores": g.scores,
                "mean_score": g.mean_score,
                "std_score": g.std_score,
                "hns": g.hns,
                "mean_hns": g.mean_hns,
                "random": g.random,
                "random_ratio": g.random_ratio,
                "crafter_scores": g.crafter_scores,
                "crafter_train_scores": g.crafter_train_scores,
            }
            for g in report.games
        },
        "excluded_from_aggregates": report.excluded,
        "aggregates": aggregates,
        "bootstrap": None
        if agg is None or agg.ci is None
        else {
            "method": "stratified bootstrap over runs within each game, percentile intervals",
            "reps": agg.reps,
            "seed": agg.seed,
            "confidence": agg.confidence,
        },
        "published": {
            r.method: {
                "reference": r.reference,
                "runs_per_game": r.runs_per_game,
                "mean": r.mean,
                "median": r.median,
                "iqm": r.iqm,
                "optimality_gap": r.optimality_gap,
                "games_above_human": r.games_above_human,
            }
            for r in report.published
        },
    }


# ------------------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ReportError(f"--plot and --curves need matplotlib: {MATPLOTLIB_HINT}") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, plt: Any, path: str | Path) -> None:
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot write {path}: {exc}") from None
    finally:
        plt.close(fig)


def plot_aggregates(report: Report, path: str | Path) -> None:
    """One panel per aggregate: ours as the point with its interval, the published methods as points."""
    agg = report.aggregate
    if agg is None:
        raise ReportError("--plot: no human-normalized aggregates (no game with reference scores)")
    plt = _pyplot()
    # Our row is named apart: it may carry a published method's name (a released score file).
    rows = [f"{report.label} (this report)"] + [r.method for r in report.published]
    fig, axes = plt.subplots(
        1, len(PLOTTED_METRICS), figsize=(3.2 * len(PLOTTED_METRICS), 0.5 * len(rows) + 1.3)
    )
    for ax, name in zip(axes, PLOTTED_METRICS, strict=True):
        y_ours = len(rows) - 1
        if agg.ci is not None:
            lo, hi = agg.ci[name]
            ax.barh(y_ours, hi - lo, left=lo, height=0.6, color="tab:blue", alpha=0.45)
        ax.vlines(agg.point[name], y_ours - 0.3, y_ours + 0.3, color="tab:blue", linewidth=2.5)
        for i, r in enumerate(report.published):
            ax.plot(getattr(r, name), y_ours - 1 - i, "o", color="0.35")
        ax.set_yticks(range(len(rows)), list(reversed(rows)))
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_title(METRIC_LABELS[name])
        ax.grid(axis="x", alpha=0.3)
        if ax is not axes[0]:
            ax.tick_params(labelleft=False)
    ci_text = "" if agg.ci is None else f"; bars: {agg.confidence:.0%} stratified bootstrap CI"
    fig.suptitle(
        f"Human-normalized score ({_count(len(agg.games), 'game')}, {_count(agg.runs, 'run')}{ci_text})",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, plt, path)


def plot_curves(curves: Sequence[Curve], path: str | Path) -> None:
    """Eval score against interactions, one panel per game: mean over seeds with a min/max band."""
    if not curves:
        raise ReportError(
            "--curves: no learning curves (no input run folder has a metrics.jsonl with eval/mean_score)"
        )
    plt = _pyplot()
    by_game: dict[str, list[Curve]] = {}
    for curve in curves:
        by_game.setdefault(curve.game, []).append(curve)
    games = sort_games(by_game)
    cols = min(3, len(games))
    rows = math.ceil(len(games) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, game in zip(axes.flat, games, strict=False):
        runs = by_game[game]
        # Runs may have logged different steps (one stopped early): each point aggregates the runs
        # that logged that step.
        values_at: dict[float, list[float]] = {}
        for curve in runs:
            for step, value in zip(curve.steps.tolist(), curve.values.tolist(), strict=True):
                values_at.setdefault(step, []).append(value)
        steps = np.array(sorted(values_at))
        stacked = [np.array(values_at[s]) for s in steps]
        mean = np.array([v.mean() for v in stacked])
        ax.fill_between(
            steps,
            [v.min() for v in stacked],
            [v.max() for v in stacked],
            color="tab:blue",
            alpha=0.25,
            linewidth=0,
        )
        ax.plot(steps, mean, color="tab:blue")
        ax.set_title(f"{game} ({_count(len(runs), 'run')})", fontsize=10)
        ax.set_xlabel("interactions (agent steps)")
        ax.set_ylabel("eval score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(games) :]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, plt, path)


# ------------------------------------------------------------------------------------- entry point


def default_label(inputs: Sequence[str]) -> str:
    """A single score file is usually one method's released results: name the row after it."""
    if len(inputs) == 1 and Path(inputs[0]).is_file() and Path(inputs[0]).name != "final.json":
        return Path(inputs[0]).stem
    return "ours"


def run_report(
    inputs: Sequence[str],
    *,
    compare: str = ",".join(DEFAULT_COMPARE),
    out: str | None = None,
    plot: str | None = None,
    curves: str | None = None,
    reps: int = 2000,
    seed: int = 0,
    as_json: bool = False,
    label: str | None = None,
    stdout: IO[str] = sys.stdout,
    stderr: IO[str] = sys.stderr,
) -> int:
    """Everything ``twm report`` does; raises ReportError / ReportInputError for user mistakes."""
    if reps < 0:
        raise ReportError(f"--reps must be 0 (no intervals) or more, got {reps}")
    try:
        published = resolve_methods(compare)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    if plot or curves:
        _pyplot()  # fail before the (possibly long) bootstrap when matplotlib is missing

    loaded = load_inputs(inputs)
    for warning in loaded.warnings:
        print(f"twm: warning: {warning}", file=stderr)
    report = build_report(
        loaded, label=label or default_label(inputs), inputs=inputs, compare=published, reps=reps, seed=seed
    )
    if report.excluded:
        print(
            f"twm: note: {', '.join(report.excluded)}: no human scores; "
            "left out of the human-normalized aggregates (shown raw and as x random where measured)",
            file=stderr,
        )

    markdown = render_markdown(report)
    if plot:
        plot_aggregates(report, plot)
    if curves:
        plot_curves(report.curves, curves)
    if out:
        try:
            Path(out).write_text(markdown)
        except OSError as exc:
            raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from None
    if as_json:
        print(json.dumps(report_to_json(report), indent=1), file=stdout)
    else:
        print(markdown, end="", file=stdout)
    return 0
