"""``twm report`` as a user runs it: in a subprocess for output and exit codes, in-process for plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import assert_drawn, png_pixels
from twm.analysis.report import run_report
from twm.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# hns by hand: Boxing (s - 0.1) / 12 -> 2, 1, 0.5; Pong (s + 20.7) / 35.3 -> 0, 0.5.
SCORES = {"Boxing": [24.1, 12.1, 6.1], "Pong": [-20.7, -3.05]}


def run_twm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=120
    )


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_run(run_dir: Path, game: str, episodes: list[float], curve: list[float]) -> Path:
    write_json(run_dir / "eval" / "final.json", {"game": game, "seed": 0, "scores": episodes})
    lines = [json.dumps({"step": 5000 * (i + 1), "eval/mean_score": v}) for i, v in enumerate(curve)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def assert_one_line_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("twm: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in out.stderr


def test_markdown_report_of_a_score_file(tmp_path: Path) -> None:
    scores = write_json(tmp_path / "mine.json", SCORES)
    out = run_twm("report", str(scores), "--reps", "200", "--out", str(tmp_path / "r.md"))
    assert out.returncode == 0, out.stderr
    # Per-game means 7/6 and 1/4: mean 17/24 = 0.708, median the same; pooled 5 runs
    # 0 .5 .5 1 2 -> int(5/4) = 1 dropped each end -> IQM 2/3; gap (0+0+.5+1+.5)/5 = 0.4.
    assert "| Boxing | 3 | 14.1 | 9.2 | 1.167 |" in out.stdout
    assert "| mean HNS | 0.708 |" in out.stdout and "| median HNS | 0.708 |" in out.stdout
    # 5 runs sorted 0 .5 .5 1 2: ranks in (1.25, 3.75] -> .5 .5; rliable drops int(1.25) = 1 per end.
    assert "| IQM | 0.500 |" in out.stdout and "| IQM (rliable trim_mean) | 0.667 |" in out.stdout
    assert "| optimality gap | 0.400 |" in out.stdout
    assert "| **mine** (this report) | 2 |" in out.stdout
    for method in ("TWM", "STORM", "IRIS", "SPR", "SimPLe"):
        assert f"| {method} (" in out.stdout
    assert (tmp_path / "r.md").read_text() == out.stdout


def test_json_report(tmp_path: Path) -> None:
    scores = write_json(tmp_path / "mine.json", SCORES)
    out = run_twm(
        "report", str(scores), "--json", "--compare", "EfficientZero", "--label", "x", "--reps", "100"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["label"] == "x"
    assert data["games"]["Pong"]["hns"] == pytest.approx([0.0, 0.5])
    assert data["aggregates"]["iqm"]["value"] == pytest.approx(0.5)
    assert data["aggregates"]["iqm_rliable"]["value"] == pytest.approx(2 / 3)
    assert data["aggregates"]["games_above_human"]["value"] == 1
    assert list(data["published"]) == ["EfficientZero"]


def test_seed_makes_the_report_reproducible(tmp_path: Path) -> None:
    scores = str(write_json(tmp_path / "s.json", SCORES))
    first = run_twm("report", scores, "--json", "--seed", "3", "--reps", "300")
    second = run_twm("report", scores, "--json", "--seed", "3", "--reps", "300")
    other = run_twm("report", scores, "--json", "--seed", "4", "--reps", "300")
    assert first.stdout == second.stdout
    assert json.loads(first.stdout)["aggregates"] != json.loads(other.stdout)["aggregates"]


def test_unknown_game_is_one_line_exit_2(tmp_path: Path) -> None:
    scores = write_json(tmp_path / "s.json", {"Pongg": [1.0]})
    assert_one_line_error(run_twm("report", str(scores)), "unknown game 'Pongg'", "Pong")


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_twm("report", str(tmp_path / "nope.json")), "no such file or folder")


def test_bad_options_are_one_line_exit_2(tmp_path: Path) -> None:
    scores = str(write_json(tmp_path / "s.json", SCORES))
    assert_one_line_error(run_twm("report", scores, "--compare", "MuZero"), "unknown method 'MuZero'")
    assert_one_line_error(run_twm("report", scores, "--reps", "-1"), "--reps")


def test_unfinished_run_folder_warns_and_nothing_left_is_an_error(tmp_path: Path) -> None:
    write_json(tmp_path / "sweep" / "a" / "eval" / "final.json", {"game": "Pong", "seed": 0, "scores": [1.0]})
    unfinished = tmp_path / "sweep" / "b"
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text("")
    out = run_twm("report", str(tmp_path / "sweep"), "--reps", "10")
    assert out.returncode == 0, out.stderr
    assert f"twm: warning: skipping run folder {unfinished}" in out.stderr
    assert_one_line_error(run_twm("report", str(unfinished)), "no run scores found")


def test_catch_note(tmp_path: Path) -> None:
    scores = write_json(tmp_path / "s.json", {"catch": [1.0], "Pong": [14.6]})
    out = run_twm("report", str(scores), "--reps", "10")
    assert out.returncode == 0
    assert "catch: no human scores" in out.stderr
    assert "| catch | 1 | 1.0 | – | n/a |" in out.stdout


def test_plot_and_curves_write_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")

    def report(root: Path, pong_best: float, boxing_curve: list[float]) -> tuple[np.ndarray, np.ndarray]:
        make_run(root / "runs" / "p0", "Pong", [pong_best], [-21.0, -10.0, 0.0])
        make_run(root / "runs" / "p1", "Pong", [12.0], [-20.0, -12.0])  # stopped early
        make_run(root / "runs" / "b0", "Boxing", [50.0], boxing_curve)
        plot, curves = root / "agg.png", root / "curves.png"
        with open(root / "stdout.md", "w") as stdout:
            code = run_report(
                [str(root / "runs")], plot=str(plot), curves=str(curves), reps=100, stdout=stdout, stderr=stdout
            )
        assert code == 0
        for path in (plot, curves):
            assert path.read_bytes()[:8] == PNG_MAGIC
        return png_pixels(plot), png_pixels(curves)

    plot, curves = report(tmp_path / "a", 10.0, [0.0, 20.0])
    for pixels in (plot, curves):
        assert_drawn(pixels)
    # The same data draws the same pictures; other data draws other ones.
    same_plot, same_curves = report(tmp_path / "b", 10.0, [0.0, 20.0])
    assert np.array_equal(same_plot, plot) and np.array_equal(same_curves, curves)
    other_plot, other_curves = report(tmp_path / "c", 40.0, [0.0, 60.0])
    assert other_plot.shape != plot.shape or not np.array_equal(other_plot, plot)
    assert other_curves.shape != curves.shape or not np.array_equal(other_curves, curves)


def test_curves_without_metrics_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    scores = write_json(tmp_path / "s.json", SCORES)
    assert main(["report", str(scores), "--curves", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no learning curves" in err


def test_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    scores = write_json(tmp_path / "s.json", SCORES)
    assert main(["report", str(scores), "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'twm[report]'" in err
