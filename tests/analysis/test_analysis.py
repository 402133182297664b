"""Score loading, aggregates and bootstrap intervals of ``twm report``, checked against hand-computed
values (and against rliable and the published data when those are available)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twm.analysis.aggregate import (
    aggregate_hns,
    interquartile_mean,
    point_estimates,
    stratified_bootstrap,
    trimmed_mean_25,
)
from twm.analysis.published import DEFAULT_COMPARE, PUBLISHED, resolve_methods
from twm.analysis.report import build_report, render_markdown, report_to_json
from twm.analysis.scores import ReportInputError, load_inputs
from twm.games import UnknownGameError

# Released per-run scores of published methods, vendored with their sources (tests/data/anchors/SOURCES.md).
ANCHORS = Path(__file__).resolve().parents[1] / "data" / "anchors"

# Scores chosen so that every run's human-normalized score (hns) is a round number:
#   Boxing   hns = (s - 0.1) / 12.0     24.1 -> 2,  12.1 -> 1,  6.1 -> 0.5
#   Pong     hns = (s + 20.7) / 35.3   -20.7 -> 0, -3.05 -> 0.5
#   Breakout hns = (s - 1.7) / 28.8     8.9 -> 0.25, 23.3 -> 0.75, 16.1 -> 0.5, 30.5 -> 1
FIXTURE = {
    "Boxing": [24.1, 12.1, 6.1],
    "Pong": [-20.7, -3.05],
    "Breakout": [8.9, 23.3, 16.1, 30.5],
}
FIXTURE_HNS = {"Boxing": [2.0, 1.0, 0.5], "Pong": [0.0, 0.5], "Breakout": [0.25, 0.75, 0.5, 1.0]}
# Per-game mean hns: Boxing 7/6, Pong 1/4, Breakout 5/8.
EXPECTED = {
    "mean": (7 / 6 + 1 / 4 + 5 / 8) / 3,  # = 49/72
    "median": 5 / 8,
    # 9 pooled runs sorted: 0 .25 .5 .5 .5 .75 1 1 2; ranks in (2.25, 6.75] are the 3rd..6th.
    "iqm": (0.5 + 0.5 + 0.5 + 0.75) / 4,
    # rliable's trimmed mean drops int(9/4) = 2 at each end.
    "iqm_rliable": (0.5 + 0.5 + 0.5 + 0.75 + 1.0) / 5,
    # max(0, 1 - hns): 0 0 .5 | 1 .5 | .75 .25 .5 0 -> 3.5 over 9 runs.
    "optimality_gap": 3.5 / 9,
    "games_above_human": 1.0,
}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_run(
    run_dir: Path, game: str, episodes: list[float], seed: int, curve: list[float] | None = None
) -> Path:
    """A finished run folder as training leaves it: eval/final.json and metrics.jsonl."""
    write_json(
        run_dir / "eval" / "final.json",
        {"game": game, "seed": seed, "scores": episodes, "mean": float(np.mean(episodes)), "hns": None},
    )
    lines = [json.dumps({"step": 0, "time": 0.0, "obs/loss": 1.0})]
    for i, value in enumerate(curve or []):
        lines.append(json.dumps({"step": 5000 * (i + 1), "time": 1.0, "eval/mean_score": value}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


# ----------------------------------------------------------------------------- estimators


def test_fixture_aggregates_equal_hand_computed_values(tmp_path: Path) -> None:
    loaded = load_inputs([write_json(tmp_path / "scores.json", FIXTURE)])
    report = build_report(loaded, reps=0)
    assert report.aggregate is not None
    for name, expected in EXPECTED.items():
        assert report.aggregate.point[name] == pytest.approx(expected, abs=1e-12), name
    assert report.aggregate.ci is None
    assert report.aggregate.runs == 9
    hns = {g.game: g.hns for g in report.games}
    for game, expected in FIXTURE_HNS.items():
        assert hns[game] == pytest.approx(expected, abs=1e-12)


def test_per_game_table_by_hand(tmp_path: Path) -> None:
    report = build_report(load_inputs([write_json(tmp_path / "s.json", FIXTURE)]), reps=0)
    # Atari 100k order, not input order.
    assert [g.game for g in report.games] == ["Boxing", "Breakout", "Pong"]
    boxing = report.games[0]
    assert boxing.runs == 3
    assert boxing.mean_score == pytest.approx(14.1)
    # deviations 10, -2, -8: sum of squares 168 over n - 1 = 2
    assert boxing.std_score == pytest.approx(np.sqrt(84.0))
    assert boxing.mean_hns == pytest.approx(7 / 6)


def test_single_run_has_no_std(tmp_path: Path) -> None:
    report = build_report(load_inputs([write_json(tmp_path / "s.json", {"Pong": [0.0]})]), reps=10)
    assert report.games[0].std_score is None
    # One run per game: every replicate is the data itself, so the interval is the point.
    assert report.aggregate is not None and report.aggregate.ci is not None
    lo, hi = report.aggregate.ci["mean"]
    assert lo == hi == pytest.approx(report.aggregate.point["mean"])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0], 3.0),  # one value: nothing to trim
        ([3.0, 1.0, 2.0], 1.5),  # ranks in (0.75, 2.25]: the 1st and 2nd
        ([1.0, 100.0, 2.0, 3.0], 2.5),  # ranks in (1, 3]: the 2nd and 3rd
        ([5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, -50.0], 2.5),  # ranks in (2.25, 6.75]: 3rd..6th
        (list(range(10)), 4.0),  # ranks in (2.5, 7.5]: 3..7 -> values 2..6
    ],
)
def test_interquartile_mean_is_the_middle_half_by_rank(values: list[float], expected: float) -> None:
    assert float(interquartile_mean(np.array(values))) == pytest.approx(expected)


def test_trimmed_mean_matches_scipy_and_equals_iqm_for_multiples_of_four() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 26, 130, 131):
        x = rng.normal(size=n)
        assert float(trimmed_mean_25(x)) == pytest.approx(stats.trim_mean(x, 0.25))
    for n in (4, 8, 2600):
        x = rng.normal(size=n)
        assert float(interquartile_mean(x)) == pytest.approx(float(trimmed_mean_25(x)))


def _equal_runs_matrix() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    matrix = rng.gamma(2.0, 0.4, size=(4, 5))  # 4 runs x 5 games, some hns above 1
    games = ["Alien", "Boxing", "Pong", "Krull", "Hero"]
    return matrix, {g: matrix[:, i] for i, g in enumerate(games)}


def test_point_estimates_match_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    matrix, by_game = _equal_runs_matrix()
    ours = point_estimates(by_game)
    assert ours["mean"] == pytest.approx(metrics.aggregate_mean(matrix))
    assert ours["median"] == pytest.approx(metrics.aggregate_median(matrix))
    assert ours["iqm"] == pytest.approx(metrics.aggregate_iqm(matrix))  # 20 runs: both definitions agree
    assert ours["iqm_rliable"] == pytest.approx(metrics.aggregate_iqm(matrix))
    assert ours["optimality_gap"] == pytest.approx(metrics.aggregate_optimality_gap(matrix))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # arch's random_state deprecation
def test_intervals_agree_with_rliable_bootstrap() -> None:
    try:
        from rliable import library, metrics
    except Exception as exc:  # rliable 1.2 with arch 7.2 fails to import under pandas 3
        pytest.skip(f"rliable.library not importable: {exc}")
    matrix, by_game = _equal_runs_matrix()

    def func(x: np.ndarray) -> np.ndarray:
        return np.array(
            [metrics.aggregate_mean(x), metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x)]
        )

    _, ci = library.get_interval_estimates(
        {"m": matrix}, func, reps=4000, random_state=np.random.RandomState(0)
    )
    ours = stratified_bootstrap(by_game, reps=4000, seed=0)
    for row, name in enumerate(("mean", "iqm", "optimality_gap")):
        # Different random streams: the two agree up to Monte Carlo error.
        assert ours[name] == pytest.approx(tuple(ci["m"][:, row]), abs=0.03), name


def _synthetic(runs: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = {"Alien": 0.1, "Pong": 0.9, "Boxing": 3.0, "Breakout": 0.6, "Krull": 1.5, "Qbert": 0.3}
    return {g: c + rng.normal(0.0, 0.3, size=runs) for g, c in centres.items()}


def test_bootstrap_interval_contains_point_and_shrinks_with_more_runs() -> None:
    few = aggregate_hns(_synthetic(5), reps=1000, seed=0)
    many = aggregate_hns(_synthetic(80), reps=1000, seed=0)
    for result in (few, many):
        assert result.ci is not None
        for name in ("mean", "median", "iqm", "optimality_gap", "games_above_human"):
            lo, hi = result.ci[name]
            assert lo <= result.point[name] <= hi, name
    assert few.ci is not None and many.ci is not None
    for name in ("mean", "iqm", "optimality_gap"):
        width_few = few.ci[name][1] - few.ci[name][0]
        width_many = many.ci[name][1] - many.ci[name][0]
        assert width_many < 0.5 * width_few, name  # ~1/sqrt(16) expected


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    data = _synthetic(5)
    assert stratified_bootstrap(data, reps=300, seed=5) == stratified_bootstrap(data, reps=300, seed=5)
    assert stratified_bootstrap(data, reps=300, seed=5) != stratified_bootstrap(data, reps=300, seed=6)


def test_bootstrap_rejects_no_replicates() -> None:
    with pytest.raises(ValueError):
        stratified_bootstrap(_synthetic(3), reps=0)


# ----------------------------------------------------------------------------- inputs


def test_run_folders_and_sweep_root_found_recursively(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep / "Pong" / "seed0", "pong", [10.0, 20.0], 0, curve=[-20.0, -5.0])
    make_run(sweep / "Pong" / "seed1", "Pong", [-20.7], 1, curve=[-21.0, 0.0, 5.0])
    make_run(sweep / "deeper" / "group" / "boxing-3", "Boxing", [12.1, 12.1, 12.1], 3)
    unfinished = sweep / "Pong" / "seed2"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text('{"step": 5000, "eval/mean_score": 1.0}\n')

    loaded = load_inputs([sweep])
    scores = loaded.scores_by_game()
    # The run score is the mean of its final episodes.
    assert sorted(scores["Pong"].tolist()) == [-20.7, 15.0]
    assert scores["Boxing"].tolist() == [12.1]
    assert {r.seed for r in loaded.runs} == {0, 1, 3}
    assert len(loaded.warnings) == 1 and str(unfinished) in loaded.warnings[0]
    assert "eval/final.json" in loaded.warnings[0]
    curves = sorted(loaded.curves, key=lambda c: len(c.steps))
    assert [c.game for c in curves] == ["Pong", "Pong"]
    assert curves[0].steps.tolist() == [5000.0, 10000.0] and curves[0].values.tolist() == [-20.0, -5.0]

    # A run folder given directly, and again inside its root, is counted once.
    again = load_inputs([sweep / "Pong" / "seed0", sweep])
    assert len(again.runs) == 3


def test_run_folder_without_final_scores_is_skipped_then_error_if_nothing_left(tmp_path: Path) -> None:
    good = make_run(tmp_path / "good", "Pong", [0.0], 0)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("env:\n  game: Pong\n")
    loaded = load_inputs([good, bad])
    assert len(loaded.runs) == 1 and len(loaded.warnings) == 1 and "bad" in loaded.warnings[0]
    with pytest.raises(ReportInputError, match="no run scores found"):
        load_inputs([bad])


def test_unknown_game_and_missing_file_raise(tmp_path: Path) -> None:
    with pytest.raises(UnknownGameError, match=r"scores\.json: unknown game 'Pongg'"):
        load_inputs([write_json(tmp_path / "scores.json", {"Pongg": [1.0]})])
    with pytest.raises(ReportInputError, match="no such file"):
        load_inputs([tmp_path / "nope.json"])
    with pytest.raises(ReportInputError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{")
        load_inputs([tmp_path / "broken.json"])
    with pytest.raises(ReportInputError, match="not a finite number"):
        load_inputs([write_json(tmp_path / "nan.json", {"Pong": ["x"]})])


def test_catch_is_reported_raw_but_left_out_of_aggregates(tmp_path: Path) -> None:
    make_run(tmp_path / "runs" / "catch0", "catch", [1.0, 0.0], 0)
    make_run(tmp_path / "runs" / "catch1", "Catch", [1.0, 1.0], 1)
    make_run(tmp_path / "runs" / "pong0", "Pong", [14.6], 0)  # hns exactly 1
    report = build_report(load_inputs([tmp_path / "runs"]), reps=50)
    catch = next(g for g in report.games if g.game == "catch")
    assert catch.runs == 2 and catch.mean_score == pytest.approx(0.75) and catch.mean_hns is None
    assert report.excluded == ["catch"]
    assert report.aggregate is not None and report.aggregate.games == ["Pong"]
    assert report.aggregate.point["mean"] == pytest.approx(1.0)
    text = render_markdown(report)
    assert "| catch | 2 | 0.8 | 0.4 | n/a |" in text
    assert "left out of the human-normalized aggregates" in text
    data = report_to_json(report)
    assert data["excluded_from_aggregates"] == ["catch"] and data["games"]["catch"]["mean_hns"] is None

    only_catch = build_report(load_inputs([tmp_path / "runs" / "catch0"]), reps=50)
    assert only_catch.aggregate is None
    assert "None: no game with human/random reference scores" in render_markdown(only_catch)


# ----------------------------------------------------------------------------- published


def test_published_table_and_method_names() -> None:
    assert [r.method for r in resolve_methods(",".join(DEFAULT_COMPARE))] == [
        "TWM",
        "STORM",
        "IRIS",
        "SPR",
        "SimPLe",
    ]
    assert [r.method for r in resolve_methods("drq-eps, efficientzero,twm")] == [
        "DrQ(eps)",
        "EfficientZero",
        "TWM",
    ]
    assert resolve_methods("none") == [] and resolve_methods("") == []
    with pytest.raises(ValueError, match="unknown method 'MuZero'"):
        resolve_methods("TWM,MuZero")
    twm = PUBLISHED["TWM"]
    assert (twm.mean, twm.median, twm.games_above_human) == (0.956, 0.505, 8)


def test_markdown_and_json_list_ours_beside_published(tmp_path: Path) -> None:
    loaded = load_inputs([write_json(tmp_path / "s.json", FIXTURE)])
    report = build_report(loaded, label="mine", compare=resolve_methods("TWM,SPR"), reps=200, seed=1)
    text = render_markdown(report)
    assert "| **mine** (this report) | 3 | 0.681 | 0.625 | 0.562 | 0.389 | 1 |" in text
    assert "| TWM (Robine et al., ICLR 2023) | 26 | 0.956 | 0.505 |" in text
    assert "cover 3 of the 26 Atari 100k games" in text
    data = json.loads(json.dumps(report_to_json(report)))  # must be plain JSON
    assert data["aggregates"]["median"]["value"] == pytest.approx(0.625)
    lo, hi = data["aggregates"]["mean"]["ci"]
    assert lo <= 49 / 72 <= hi
    assert set(data["published"]) == {"TWM", "SPR"} and data["bootstrap"]["reps"] == 200


def test_published_figures_recomputed_from_released_scores() -> None:
    files = {"TWM": "TWM", "STORM": "STORM", "IRIS": "IRIS", "SPR": "SPR", "SimPLe": "SimPLe"}
    files |= {"DrQ(eps)": "DrQ-eps", "EfficientZero": "EfficientZero"}
    for method, stem in files.items():
        report = build_report(load_inputs([ANCHORS / f"{stem}.json"]), reps=0)
        assert report.aggregate is not None and len(report.aggregate.games) == 26
        point, published = report.aggregate.point, PUBLISHED[method]
        for name in ("mean", "median", "iqm", "iqm_rliable", "optimality_gap"):
            assert round(point[name], 3) == pytest.approx(getattr(published, name)), (method, name)
        assert point["games_above_human"] == published.games_above_human, method
