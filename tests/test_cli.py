"""The command line as a user meets it: run ``twm`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def run_twm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands() -> None:
    out = run_twm("--help")
    assert out.returncode == 0
    for command in ("games", "config", "info"):
        assert command in out.stdout


def test_games_json_has_the_26_games() -> None:
    out = run_twm("games", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    games = data["games"]
    assert sum(g["family"] == "atari" for g in games.values()) == 26
    assert games["Pong"] == {"family": "atari", "human": 14.6, "random": -20.7}
    assert games["Boxing"] == {"family": "atari", "human": 12.1, "random": 0.1}
    assert {"catch", "crafter", "minatar/breakout", "minatar/space_invaders"} <= set(games)
    assert "twm[envs]" in data["requirements"]["minatar"]


def test_games_table() -> None:
    out = run_twm("games")
    assert out.returncode == 0
    assert "MsPacman" in out.stdout and "catch" in out.stdout


def test_unknown_game_is_one_line_exit_2() -> None:
    out = run_twm("config", "--game", "Pongg")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "unknown game 'Pongg'" in out.stderr and "Pong" in out.stderr and "UpNDown" in out.stderr


def test_bad_override_is_one_line_exit_2() -> None:
    out = run_twm("config", "--set", "dynamics.layrs=3")
    assert out.returncode == 2
    assert out.stderr.startswith(
        "twm: error: unknown config key 'dynamics.layrs'; did you mean dynamics.layers"
    )
    assert out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_config_prints_resolved_yaml() -> None:
    out = run_twm("config", "--preset", "smoke", "--game", "catch", "--set", "dynamics.attention=fused")
    assert out.returncode == 0
    data = yaml.safe_load(out.stdout)
    assert data["env"]["game"] == "catch"
    assert data["dynamics"]["attention"] == "fused"
    assert data["train"]["total_steps"] == 300


def test_unknown_preset_exit_2() -> None:
    out = run_twm("config", "--preset", "paper")
    assert out.returncode == 2 and "valid presets: atari100k, quick, cpu, minatar, plus, smoke" in out.stderr
