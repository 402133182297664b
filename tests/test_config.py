"""Config: paper defaults, presets, YAML round-trip and validation messages
(config files and --set overrides: test_config_files.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from twm.config import Config, ConfigError, all_keys
from twm.config_files import apply_overrides, load_config
from twm.presets import PRESETS


def test_paper_preset_is_the_spec() -> None:
    cfg = load_config("atari100k")
    assert cfg == Config()
    # A sample of the paper's numbers (docs/method.md), one per section.
    assert (cfg.env.frame_skip, cfg.env.frame_stack, cfg.env.noop_max, cfg.env.time_limit) == (
        4,
        4,
        30,
        27_000,
    )
    assert (cfg.obs_model.channels, cfg.obs_model.categoricals, cfg.obs_model.classes) == (48, 32, 32)
    assert (cfg.obs_model.entropy_coef, cfg.obs_model.consistency_coef) == (5.0, 0.01)
    d = cfg.dynamics
    assert (d.d_model, d.layers, d.heads, d.head_dim, d.ff_dim, d.memory_steps) == (256, 10, 4, 64, 1024, 16)
    assert (d.reward_coef, d.discount_coef, d.grad_clip, d.dropout) == (10.0, 50.0, 100.0, 0.1)
    ac = cfg.actor_critic
    assert (ac.num_starts, ac.horizon, ac.lam, ac.actor_lr, ac.critic_lr) == (400, 15, 0.95, 1e-4, 1e-5)
    assert (cfg.replay.batch_size, cfg.replay.sequence_length, cfg.replay.visit_temperature) == (
        100,
        16,
        20.0,
    )
    assert (cfg.train.prefill_steps, cfg.train.eval_interval, cfg.train.final_eval_episodes) == (
        5000,
        5000,
        100,
    )


def test_update_ratio_is_the_papers() -> None:
    cfg = Config()
    assert cfg.samples_per_update == 100 * 16 + 400 * 15
    assert cfg.num_updates == 125_000  # (1e9 - 5e7) / 7600
    assert cfg.steps_per_update == pytest.approx(0.76)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_yaml_round_trip(preset: str, tmp_path: Path) -> None:
    cfg = load_config(preset, ["env.game=Boxing", "dynamics.attention=fused"])
    path = tmp_path / "config.yaml"
    cfg.to_yaml(path)
    assert Config.from_yaml(path) == cfg
    assert load_config(preset, config_file=path) == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dynamics.lrr=1", "unknown config key 'dynamics.lrr'; did you mean dynamics.lr"),
        ("dynamcs.lr=1", "unknown config section 'dynamcs' (did you mean dynamics?)"),
        ("lr=1", "did you mean obs_model.lr, dynamics.lr"),
        ("dynamics.lr=0", "dynamics.lr must be in (0, inf]; got 0.0"),
        ("env.discount=1.5", "env.discount must be in [0, 1]; got 1.5"),
        ("train.total_steps=1.5", "train.total_steps must be an integer; got 1.5"),
        ("train.total_steps=abc", "train.total_steps must be an integer; got 'abc'"),
        ("env.episodic_lives=3", "env.episodic_lives must be true or false; got 3"),
        ("dynamics.attention=flash", "dynamics.attention must be one of plain, fused; got 'flash'"),
        ("env.game=pongg", "unknown game 'pongg' (did you mean Pong?); valid games: Alien"),
        ("train.prefill_steps=200000", "must be smaller than train.total_steps"),
        ("novalue", "must look like section.key=value"),
        ("env.observation=grid", "env.observation=grid is for minatar/<game> only; Pong is seen as pictures"),
        ("env.observation=grids", "env.observation must be one of picture, grid, vector; got 'grids'"),
        ("dynamics.reward_bins=symexp", "dynamics.reward_bins reads a two-hot head; it needs dynamics.reward_head=twohot"),
        ("actor_critic.critic_bins=symexp", "actor_critic.critic_bins reads a two-hot critic; it needs actor_critic.critic=twohot"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_grid_observations_have_the_games_channels_on_a_10x10_grid() -> None:
    cfg = apply_overrides(Config(), ["env.game=minatar/space_invaders", "env.observation=grid"])
    assert (cfg.frame_channels, cfg.frame_size, cfg.image_channels) == (6, 10, 24)
    seaquest = apply_overrides(Config(), ["env.game=minatar/seaquest", "env.observation=grid"])
    assert (seaquest.frame_channels, seaquest.frame_size) == (10, 10)
    pictures = apply_overrides(Config(), ["env.game=minatar/space_invaders"])
    assert (pictures.frame_channels, pictures.frame_size, pictures.image_channels) == (1, 64, 4)
    with pytest.raises(ConfigError, match="env.observation=grid reads the game's state and has no colours"):
        apply_overrides(Config(), ["env.game=minatar/breakout", "env.observation=grid", "env.color=true"])


def test_moved_weight_needs_a_stack_of_pictures_or_grids() -> None:
    with pytest.raises(ConfigError, match="it needs env.frame_stack >= 2"):
        apply_overrides(Config(), ["obs_model.moved_weight=4", "env.frame_stack=1"])
    with pytest.raises(ConfigError, match="env.observation=vector has neither"):
        apply_overrides(Config(), ["env.game=gym:CartPole-v1", "env.observation=vector", "obs_model.moved_weight=4"])
    with pytest.raises(ConfigError, match=r"obs_model.moved_weight must be in \[1, inf\]"):
        apply_overrides(Config(), ["obs_model.moved_weight=0.5"])
    grid = apply_overrides(Config(), ["env.game=minatar/breakout", "env.observation=grid", "obs_model.moved_weight=4"])
    assert grid.obs_model.moved_weight == 4.0


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.from_yaml(path)
    path.write_text("env:\n  gmae: Pong\n")
    with pytest.raises(ConfigError, match="did you mean env.game"):
        Config.from_yaml(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.from_yaml(tmp_path / "missing.yaml")


def test_every_key_has_help() -> None:
    keys = all_keys()
    assert len(keys) == len(set(keys)) > 50
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            assert f.metadata.get("help"), f"{section.name}.{f.name} has no help text"


def test_presets_are_smaller_than_paper() -> None:
    paper, quick, smoke = (load_config(p) for p in ("atari100k", "quick", "smoke"))
    assert smoke.train.total_steps < quick.train.total_steps < paper.train.total_steps
    assert smoke.dynamics.d_model < quick.dynamics.d_model < paper.dynamics.d_model
    for cfg in (quick, smoke):
        assert cfg.num_updates > 0


def _flat(cfg: Config) -> dict[str, object]:
    return {f"{s}.{k}": v for s, section in dataclasses.asdict(cfg).items() for k, v in section.items()}


def test_minatar_preset_is_cpu_with_the_papers_latent_sequences_and_heads() -> None:
    cpu, minatar, paper = (_flat(load_config(p)) for p in ("cpu", "minatar", "atari100k"))
    changed = {key for key in cpu if cpu[key] != minatar[key]}
    assert changed == {
        "obs_model.categoricals",
        "obs_model.classes",
        "replay.sequence_length",
        "replay.batch_size",
        "dynamics.memory_steps",
        "dynamics.reward_head_hidden",
        "dynamics.reward_head_layers",
        "dynamics.discount_head_hidden",
        "dynamics.discount_head_layers",
    }
    # Every change but the batch size restores the paper's number; the batch keeps 128 steps per batch.
    assert all(minatar[key] == paper[key] for key in changed - {"replay.batch_size"})
    assert minatar["replay.batch_size"] * minatar["replay.sequence_length"] == 128
    assert cpu["replay.batch_size"] * cpu["replay.sequence_length"] == 128
    assert load_config("minatar").num_updates == load_config("cpu").num_updates == 9_000
