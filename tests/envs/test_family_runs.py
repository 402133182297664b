"""The pixel-game families end to end through the command line: one-line errors for unknown games and
missing extras, and smoke training runs (marked slow, about 1.5 minutes in all on one CPU thread)
that go through the command line as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from builders import assert_tensorboard_matches_metrics
from families import ENV, GYM_ENVS, one_line_error, run_twm
from twm.config_files import load_config
from twm.envs.crafter import crafter_score, success_rates

# ============================================================================ command line errors


def test_cli_unknown_minatar_game(tmp_path: Path) -> None:
    out = run_twm("config", "--game", "minatar/pong")
    assert one_line_error(out), out.stderr
    assert "minatar/breakout" in out.stderr and "minatar/space_invaders" in out.stderr


def test_cli_unknown_gym_id_makes_no_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_twm("train", "--game", "gym:TwmDoesNotExist-v0", "--preset", "smoke", "--run-dir", str(run_dir))
    assert one_line_error(out), out.stderr
    assert "TwmDoesNotExist-v0" in out.stderr and not run_dir.exists()


@pytest.mark.parametrize(("module", "game"), [("minatar", "minatar/breakout"), ("crafter", "crafter")])
def test_cli_missing_extra_is_one_line(tmp_path: Path, module: str, game: str) -> None:
    run_dir = tmp_path / "run"
    code = (
        f"import sys; sys.modules[{module!r}] = None; from twm.cli import main; "
        f"sys.exit(main(['train', '--game', {game!r}, '--preset', 'smoke', '--run-dir', {str(run_dir)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert one_line_error(out), out.stderr
    assert "twm[envs]" in out.stderr and module in out.stderr and not run_dir.exists()


# ============================================================================ smoke training runs


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_runs")
    runs = {
        "minatar/breakout": ("minatar", []),
        "crafter": ("crafter", ["--set", "env.color=true"]),
    }
    result = {}
    for game, (name, extra) in runs.items():
        run_dir = root / name
        out = run_twm(
            "train", "--game", game, "--preset", "smoke", *extra, "--run-dir", str(run_dir), "--no-progress"
        )
        assert out.returncode == 0, out.stderr
        assert "final mean score" in out.stdout
        result[game] = run_dir
    return result


def check_run_folder(run_dir: Path, game: str) -> dict[str, Any]:
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/final.pt", "eval/final.json"):
        assert (run_dir / name).is_file(), name
    assert_tensorboard_matches_metrics(run_dir, ("charts/interactions", "dyn/loss", "eval/mean_score"))
    assert list((run_dir / "images").glob("recon_*.png")) and list((run_dir / "images").glob("dream_*.png"))
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    cfg = load_config("smoke", [f"env.game={game}"])
    assert final["game"] == game and final["interactions"] == cfg.train.total_steps
    assert len(final["scores"]) == final["episodes"] == cfg.train.final_eval_episodes
    assert final["hns"] is None  # no human scores outside Atari
    return final


@pytest.mark.slow
def test_minatar_smoke_run(smoke_runs: dict[str, Path]) -> None:
    run_dir = smoke_runs["minatar/breakout"]
    final = check_run_folder(run_dir, "minatar/breakout")
    assert "crafter" not in final
    out = run_twm("eval", str(run_dir), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    mean = np.mean(final["scores"])
    assert out.stdout.startswith(f"minatar/breakout: mean {mean:.2f} ") and "(2 episodes" in out.stdout


@pytest.mark.slow
def test_crafter_colour_smoke_run(smoke_runs: dict[str, Path]) -> None:
    run_dir = smoke_runs["crafter"]
    final = check_run_folder(run_dir, "crafter")
    crafter = final["crafter"]
    assert set(crafter) == {"score", "success_rates", "achievements", "train"}
    assert len(crafter["achievements"]) == final["episodes"]
    assert all(isinstance(a, list) for a in crafter["achievements"])
    assert crafter["success_rates"] == success_rates(crafter["achievements"])
    assert crafter["score"] == pytest.approx(crafter_score(crafter["achievements"]))
    cfg = yaml_config(run_dir)
    assert cfg["env"]["color"] is True
    # Training episodes end at env.time_limit (200 in the smoke preset) before crafter's 10,000
    # steps: their achievements are logged all the same.
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("crafter/score" in r for r in lines)
    # The Crafter paper's score: over every training game, i.e. every game logged in crafter/unlocked.
    games = [g for r in lines for g in r.get("crafter/unlocked", [])]
    assert crafter["train"]["games"] == len(games) > 0
    assert crafter["train"]["score"] == pytest.approx(crafter_score(games))
    assert crafter["train"]["success_rates"] == pytest.approx(success_rates(games))
    assert [r["crafter/train_score"] for r in lines if "crafter/train_score" in r][-1] == pytest.approx(
        crafter["train"]["score"]
    )
    assert [r["eval/crafter_score"] for r in lines if "eval/mean_score" in r][-1] == pytest.approx(
        crafter["score"]
    )
    out = run_twm("eval", str(run_dir), "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["scores"] == final["scores"] and result["achievements"] == crafter["achievements"]


def yaml_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("game", ["minatar/breakout", "crafter"])
def test_dream_eval_and_report_on_family_runs(smoke_runs: dict[str, Path], game: str) -> None:
    from PIL import Image

    run_dir = smoke_runs[game]
    gif = run_dir / "d.gif"
    out = run_twm("dream", str(run_dir), "--out", str(gif), "--horizon", "3", "--starts", "2")
    assert out.returncode == 0, out.stderr
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size[0] == 2 * 64 * 3
    out = run_twm("report", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    entry = report["games"][game]
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert entry["runs"] == 1 and entry["mean_score"] == pytest.approx(final["mean"])
    if game == "crafter":
        assert entry["crafter_scores"] == [pytest.approx(final["crafter"]["score"])]
        assert entry["crafter_train_scores"] == [pytest.approx(final["crafter"]["train"]["score"])]
    else:
        assert entry["crafter_scores"] is None


@pytest.mark.slow
def test_gym_smoke_run_in_process(tmp_path: Path) -> None:
    from twm import cli

    assert "TwmTestPixel-v0" in GYM_ENVS  # registered by importing families
    run_dir = tmp_path / "gym"
    code = cli.main(
        [
            "train",
            "--game",
            "gym:TwmTestPixel-v0",
            "--preset",
            "smoke",
            "--set",
            "env.kwargs={size: 16, length: 30}",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    assert code == 0
    final = check_run_folder(run_dir, "gym:TwmTestPixel-v0")
    # Reward = the action (0, 1, 2), 30 steps a game: every score is a whole number in [0, 60].
    assert all(float(s).is_integer() and 0 <= s <= 60 for s in final["scores"])
    assert yaml_config(run_dir)["env"]["kwargs"] == {"size": 16, "length": 30}
