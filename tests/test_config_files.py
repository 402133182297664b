"""Config files and --set overrides: parsing values, unknown presets, a file layered on the preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from twm.config import Config, ConfigError
from twm.config_files import apply_overrides, load_config
from twm.presets import PRESETS


def test_overrides_parse_values() -> None:
    cfg = apply_overrides(Config(), ["dynamics.lr=3e-4", "train.total_steps=2e4", "env.episodic_lives=false"])
    assert cfg.dynamics.lr == 3e-4
    assert cfg.train.total_steps == 20_000 and isinstance(cfg.train.total_steps, int)
    assert cfg.env.episodic_lives is False
    assert apply_overrides(Config(), ["env.game=ms_pacman"]).env.game == "MsPacman"


def test_overrides_do_not_mutate_base() -> None:
    base = Config()
    apply_overrides(base, ["dynamics.layers=2"])
    assert base.dynamics.layers == 10


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'quik' \\(did you mean quick\\?\\)"):
        load_config("quik")


def test_a_partial_config_file_layers_on_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("train:\n  seed: 3\n")
    cfg = load_config("cpu", ["env.game=minatar/breakout"], path)
    # The preset's networks stay (the file alone used to rebuild the config on the paper's defaults).
    assert cfg.obs_model.channels == PRESETS["cpu"]["obs_model"]["channels"] == 8
    assert cfg.train.seed == 3 and cfg.train.total_steps == 100_000
    # --set goes on top of both.
    cfg = load_config("cpu", ["env.game=minatar/breakout", "train.seed=5", "obs_model.channels=4"], path)
    assert (cfg.train.seed, cfg.obs_model.channels, cfg.dynamics.d_model) == (5, 4, 128)


def test_an_env_section_for_a_gym_game_is_validated_after_the_game(tmp_path: Path) -> None:
    # The example of docs/environments.md: --preset cpu --config my_env.yaml with env.kwargs, --game on the command line.
    path = tmp_path / "my_env.yaml"
    path.write_text("env:\n  kwargs: {difficulty: 2}\n  color: true\n")
    cfg = load_config("cpu", ["env.game=gym:Some-v0"], path)
    assert cfg.env.kwargs == {"difficulty": 2} and cfg.env.color and cfg.obs_model.channels == 8


def test_twm_config_with_a_partial_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from twm import cli

    path = tmp_path / "partial.yaml"
    path.write_text("actor_critic:\n  horizon: 7\n")
    assert cli.main(["config", "--preset", "cpu", "--game", "minatar/breakout", "--config", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["actor_critic"]["horizon"] == 7 and printed["obs_model"]["channels"] == 8
    path.write_text("- not a mapping\n")
    assert cli.main(["config", "--config", str(path)]) == 2
    assert "must be a mapping of sections" in capsys.readouterr().err


@pytest.mark.slow
def test_train_and_sweep_layer_a_partial_file_on_the_preset(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import yaml

    path = tmp_path / "partial.yaml"
    path.write_text("actor_critic:\n  horizon: 3\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--preset", "smoke", "--config", str(path), "--set", "train.total_steps=150", "--no-progress"]
    train = [sys.executable, "-m", "twm.cli", "train", "--game", "catch", "--run-dir", str(tmp_path / "run"), *common]
    sweep = [sys.executable, "-m", "twm.cli", "sweep", "--games", "catch", "--root", str(tmp_path / "sweep"), *common]
    for command, config in ((train, tmp_path / "run" / "config.yaml"),
                            (sweep, tmp_path / "sweep" / "catch" / "seed_0" / "config.yaml")):  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        saved = yaml.safe_load(config.read_text())
        # The file's key and the preset's sizes (smoke: 4 channels, not the paper's 48).
        assert saved["actor_critic"]["horizon"] == 3 and saved["obs_model"]["channels"] == 4
