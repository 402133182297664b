"""Any Gymnasium environment: env.wrappers, env.obs_key, env.pixels=render, channel-first images,
finding the package that registers an id, ALE ids and ROMs beyond the 26 games, and the one-line
errors of combinations that do not give an image.

Frames are checked against the wrapped environment's own observations, resized the documented way
(``cv2.INTER_AREA`` when shrinking, ``INTER_NEAREST`` when enlarging). The smoke runs of
docs/environments-recipes.md are in tests/test_recipes.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from twm.config import ConfigError
from twm.config_files import load_config
from twm.envs import EnvError, check_env, make_env
from twm.envs.gym_env import image_layout
from twm.games import game_family, resolve_game, run_name

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MINIGRID = "gym:MiniGrid-Empty-8x8-v0"
RGB_WRAPPERS = "env.wrappers=[minigrid.wrappers.RGBImgObsWrapper, minigrid.wrappers.ImgObsWrapper]"


def run_twm(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> bool:
    return out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("twm: error: ")


def env_of(game: str, *overrides: str, seed: int = 0) -> Any:
    return make_env(load_config("smoke", [f"env.game={game}", *overrides]).env, "train", seed)


def frame_of(picture: np.ndarray, color: bool) -> np.ndarray:
    """The documented 64x64 frame of a raw HxWx3 picture."""
    pic = picture if color else cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2GRAY)
    h, w = pic.shape[:2]
    interpolation = cv2.INTER_AREA if h * w >= 64 * 64 else cv2.INTER_NEAREST
    pic = cv2.resize(np.ascontiguousarray(pic), (64, 64), interpolation=interpolation)
    return pic.transpose(2, 0, 1) if color else pic


class ChannelsFirstGame(gym.Env):
    """Pictures (3, 20, 30): channels first."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 255, (3, 20, 30), np.uint8)
        self.action_space = spaces.Discrete(2)
        self.last = np.zeros((3, 20, 30), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.last = self.np_random.integers(0, 256, (3, 20, 30), dtype=np.uint8)
        return self.last.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.last = np.roll(self.last, 1, axis=2)
        return self.last.copy(), 0.0, False, False, {}


if "TwmTestChannelsFirst-v0" not in gym.registry:
    gym.register(id="TwmTestChannelsFirst-v0", entry_point=ChannelsFirstGame)


def unwrapped_obs(env: Any) -> Any:
    """The observation the adapter read last, recomputed from the wrapped gym env."""
    return env.source._env.observation(env.source._env.unwrapped.gen_obs())


# ============================================================================ wrappers, keys, pixels


def test_minigrid_rgb_wrappers_give_its_pictures() -> None:
    pytest.importorskip("minigrid")
    env = env_of(MINIGRID, "env.wrappers=[{name: minigrid.wrappers.RGBImgObsWrapper, kwargs: {tile_size: 4}}, "
                 "minigrid.wrappers.ImgObsWrapper]", "env.color=true")  # fmt: skip
    inner = env.source._env
    assert type(inner).__name__ == "ImgObsWrapper" and type(inner.env).__name__ == "RGBImgObsWrapper"
    assert inner.observation_space.shape == (32, 32, 3)  # 8x8 cells of 4 px: the kwargs arrived
    obs, _ = env.reset()
    assert obs.shape == (12, 64, 64)
    for action in (2, 1, 2):  # forward, turn right, forward
        picture = inner.env.observation(inner.env.unwrapped.gen_obs())["image"]
        np.testing.assert_array_equal(obs[-3:], frame_of(picture, color=True))
        obs, *_ = env.step(action)


def test_obs_key_picks_the_image_of_a_dict_observation() -> None:
    pytest.importorskip("minigrid")
    env = env_of(MINIGRID, "env.wrappers=minigrid.wrappers.RGBImgObsWrapper", "env.obs_key=image")
    assert isinstance(env.source._env.observation_space, spaces.Dict)
    obs, _ = env.reset()
    picture = unwrapped_obs(env)["image"]
    assert picture.shape == (64, 64, 3)
    np.testing.assert_array_equal(obs[-1], frame_of(picture, color=False))


def test_pixels_render_trains_on_the_rendered_frames() -> None:
    env = env_of("gym:CartPole-v1", "env.pixels=render")
    assert env.source._env.unwrapped.render_mode == "rgb_array" and env.num_actions == 2
    obs, _ = env.reset()
    for _ in range(3):
        np.testing.assert_array_equal(obs[-1], frame_of(env.source._env.unwrapped.render(), color=False))
        obs, *_ = env.step(1)
    # The same with Gymnasium's wrapper named in env.wrappers.
    same = env_of("gym:CartPole-v1", "env.kwargs={render_mode: rgb_array}", "env.wrappers=[AddRenderObservation]")
    np.testing.assert_array_equal(same.reset()[0], env_of("gym:CartPole-v1", "env.pixels=render").reset()[0])


def test_channels_first_pictures_are_transposed() -> None:
    env = env_of("gym:TwmTestChannelsFirst-v0", "env.color=true")
    obs, _ = env.reset()
    raw = env.source._env.unwrapped.last
    np.testing.assert_array_equal(obs[-3:], frame_of(raw.transpose(1, 2, 0), color=True))
    assert image_layout((3, 20, 30), False) == "chw" and image_layout((20, 30, 3), False) == "hwc"
    assert image_layout((4,), False) is None and image_layout((5, 6, 7), False) is None


def test_wrappers_config_forms_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config("smoke", [f"env.game={MINIGRID}", "env.wrappers=minigrid.wrappers.RGBImgObsWrapper"])
    assert cfg.env.wrappers == [{"name": "minigrid.wrappers.RGBImgObsWrapper", "kwargs": {}}]
    cfg = load_config(
        "smoke", [f"env.game={MINIGRID}", "env.wrappers=[A, {name: b.C, kwargs: {x: 1}}]", "env.obs_key=image"]
    )
    assert cfg.env.wrappers == [{"name": "A", "kwargs": {}}, {"name": "b.C", "kwargs": {"x": 1}}]
    path = tmp_path / "config.yaml"
    cfg.to_yaml(path)
    again = load_config("smoke", [], path)
    assert again.env.wrappers == cfg.env.wrappers and again.env.obs_key == "image"
    for bad, words in [
        ("env.wrappers=[{kwargs: {x: 1}}]", "each wrapper is a name"),
        ("env.wrappers=3", "must be a list"),
        ("env.pixels=screen", "obs, render"),
    ]:
        with pytest.raises(ConfigError, match=words):
            load_config("smoke", [f"env.game={MINIGRID}", bad])
    for key in ("env.wrappers=[A]", "env.obs_key=image", "env.pixels=render"):
        with pytest.raises(ConfigError, match="gym:<id> games only"):
            load_config("smoke", ["env.game=catch", key])
    with pytest.raises(ConfigError, match="env.pixels=render does not read them"):
        load_config("smoke", [f"env.game={MINIGRID}", "env.obs_key=image", "env.pixels=render"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["env.wrappers=[NoSuchWrapper]"], ("no wrapper named 'NoSuchWrapper' in gymnasium.wrappers",)),
        (["env.wrappers=[minigrid.wrappers.RGBImgObsWrapr]"], ("did you mean", "RGBImgObsWrapper")),
        (["env.wrappers=[nosuchpackage.Wrapper]"], ("cannot import nosuchpackage",)),
        (["env.wrappers=[{name: ResizeObservation, kwargs: {bogus: 1}}]"], ("ResizeObservation", "failed")),
        (["env.wrappers=minigrid.wrappers.RGBImgObsWrapper", "env.obs_key=picture"], ("no such key", "image")),
        (["env.wrappers=minigrid.wrappers.RGBImgObsWrapper"], ("Dict", "env.obs_key", "image")),
        (["env.wrappers=[minigrid.wrappers.FlatObsWrapper]"], ("after env.wrappers", "needs images")),
        (["env.obs_key=image", "env.wrappers=[minigrid.wrappers.ImgObsWrapper]"], ("not a Dict",)),
    ],
)
def test_bad_combinations_are_one_line_env_errors(overrides: list[str], words: tuple[str, ...]) -> None:
    pytest.importorskip("minigrid")
    with pytest.raises(EnvError) as info:
        check_env(load_config("smoke", [f"env.game={MINIGRID}", *overrides]).env)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_combination_through_the_cli_is_exit_2_and_no_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_twm("train", "--game", MINIGRID, "--preset", "smoke", "--set", "env.wrappers=[NoSuchWrapper]",
                  "--run-dir", str(run_dir))  # fmt: skip
    assert one_line_error(out), out.stderr
    assert "NoSuchWrapper" in out.stderr and not run_dir.exists()
    out = run_twm("train", "--game", "gym:CartPole-v1", "--preset", "smoke", "--run-dir", str(run_dir))
    assert one_line_error(out) and "env.pixels=render" in out.stderr and not run_dir.exists()


# ============================================================================ finding the registering package


def test_unregistered_id_names_the_module_form() -> None:
    with pytest.raises(EnvError) as info:
        check_env(load_config("smoke", ["env.game=gym:TwmNowhere-v0"]).env)
    assert "gym:<module>:TwmNowhere-v0" in str(info.value)
    with pytest.raises(EnvError, match="cannot import nosuchmodule"):
        check_env(load_config("smoke", ["env.game=gym:nosuchmodule:TwmNowhere-v0"]).env)


def test_minigrid_and_ale_ids_are_found_without_importing_their_package() -> None:
    pytest.importorskip("minigrid")
    code = (
        "import sys\n"
        "from twm.config_files import load_config\n"
        "from twm.envs import check_env\n"
        "assert 'minigrid' not in sys.modules\n"
        f"cfg = load_config('smoke', ['env.game={MINIGRID}', '{RGB_WRAPPERS}'])\n"
        "print(check_env(cfg.env))\n"
        "print(check_env(load_config('smoke', ['env.game=gym:minigrid:MiniGrid-Empty-5x5-v0', "
        "'env.wrappers=[minigrid.wrappers.RGBImgObsWrapper, minigrid.wrappers.ImgObsWrapper]']).env))\n"
        "from twm.envs.gym_env import make_gym_env\n"
        "print(make_gym_env('ALE/Breakout-v5', {}).action_space.n)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["7", "7", "4"]


# ============================================================================ ALE


def test_ale_v5_ids_map_to_the_atari_protocol_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="frame skip"):
        assert resolve_game("gym:ALE/Pong-v5") == "Pong"
    with pytest.warns(UserWarning, match="sticky actions"):
        cfg = load_config("smoke", ["env.game=gym:ALE/MsPacman-v5"])
    assert cfg.env.game == "MsPacman" and game_family(cfg.env.game) == "atari"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_game("gym:ALE/Pong-v4") == "gym:ALE/Pong-v4"  # not v5: Gymnasium's own id


def test_any_ale_rom_by_name_under_the_atari_protocol() -> None:
    from twm.envs.atari import AtariEnv

    assert resolve_game("tennis") == "Tennis" and resolve_game("montezuma_revenge") == "MontezumaRevenge"
    assert game_family("Tennis") == "atari"
    env = env_of("Tennis")
    assert isinstance(env, AtariEnv) and env.num_actions == 18
    obs, _ = env.reset()
    assert obs.shape == (4, 64, 64)
    from twm.games import human_normalized_score

    assert human_normalized_score("Tennis", 1.0) is None
    with pytest.raises(ConfigError, match="any other ALE ROM"):
        load_config("smoke", ["env.game=NoSuchGameAnywhere"])


def test_run_names_have_no_colons_or_slashes() -> None:
    assert run_name("gym:minigrid:MiniGrid-Empty-8x8-v0") == "gym-minigrid-MiniGrid-Empty-8x8-v0"
    assert run_name("gym:ALE/Pong-v4") == "gym-ALE-Pong-v4" and run_name("Pong") == "Pong"


@pytest.mark.slow
def test_default_run_folder_of_a_gym_id_is_one_plain_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from twm.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["train", "--game", "gym:TwmTestChannelsFirst-v0", "--preset", "smoke", "--no-progress",
                 "--set", "env.color=true"])  # fmt: skip
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("gym-TwmTestChannelsFirst-v0-smoke-s0-")
    assert (run_dir / "eval" / "final.json").is_file() and (run_dir / "checkpoints" / "final.pt").is_file()


def test_every_ale_rom_is_a_game_whose_rom_is_found() -> None:
    from ale_py import roms

    from twm.envs.atari import rom_name
    from twm.games import ATARI100K_GAMES, ale_games

    assert set(ATARI100K_GAMES) <= set(ale_games())
    assert {rom_name(g) for g in ale_games()} == set(roms.get_all_rom_ids())
    assert all(resolve_game(g) == g and game_family(g) == "atari" for g in ale_games())


def test_sweep_run_folders_of_gym_ids_are_plain_names(tmp_path: Path) -> None:
    from twm.launch.plan import run_dir_for

    assert run_dir_for(tmp_path, "gym:minigrid:MiniGrid-Empty-8x8-v0", 0) == (
        tmp_path / "gym-minigrid-MiniGrid-Empty-8x8-v0" / "seed_0"
    )
    assert run_dir_for(tmp_path, "Pong", 1) == tmp_path / "Pong" / "seed_1"  # other games as before


def test_ale_v5_id_takes_no_gym_options() -> None:
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="gym:ALE/Pong-v5 runs as Pong and takes none"):
        load_config("smoke", ["env.game=gym:ALE/Pong-v5", "env.kwargs={frameskip: 1}"])
