"""``gym:<id>``: any installed Gymnasium environment with image observations and discrete actions.

Accepted spaces: observations a ``Box`` of uint8 (H x W, or H x W x C with C in 1, 3, 4) or of
booleans (H x W x C channels, drawn as a picture the way MinAtar states are:
twm.envs.minatar.render_state, which needs H = W = 10 and C <= 10; other boolean shapes are shown
as the max over channels, 0/255); actions a ``Discrete``. ``env.kwargs`` go to ``gymnasium.make``.
The environment's own ``terminated`` and ``truncated`` are kept apart; ``env.time_limit`` truncates
as well. It is seeded once, at its first reset.

Resume: the environment is pickled into checkpoints when it can be, and rebuilt from its own
package's and gymnasium's classes only (twm.envs.saved_state); when it cannot (an env holding a
native handle, or needing other globals), a resumed run starts a fresh episode there, with a warning.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from twm.envs.pixel import EnvError
from twm.envs.saved_state import dump_game, load_game

if TYPE_CHECKING:
    from twm.config import EnvConfig


def make_gym_env(env_id: str, kwargs: dict[str, Any]) -> Any:
    """``gymnasium.make(env_id, **kwargs)``, every failure as a one-line EnvError."""
    import gymnasium as gym

    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise EnvError(f"gym:{env_id}: {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError, ImportError, ModuleNotFoundError) as exc:
        raise EnvError(f"gym:{env_id} cannot be made with env.kwargs={kwargs!r}: {exc}") from None


def check_spaces(env_id: str, env: Any) -> None:
    """Raise EnvError unless the observations are images and the actions discrete."""
    import gymnasium as gym

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        raise EnvError(
            f"gym:{env_id} has a {type(act_space).__name__} action space; twm needs Discrete actions"
        )
    shape = getattr(obs_space, "shape", None)
    is_image = (
        isinstance(obs_space, gym.spaces.Box)
        and obs_space.dtype in (np.uint8, np.bool_)
        and shape is not None
        and (len(shape) == 2 or (len(shape) == 3 and (obs_space.dtype == np.bool_ or shape[-1] in (1, 3, 4))))
        and min(shape[:2]) >= 2
    )
    if not is_image:
        raise EnvError(
            f"gym:{env_id} observations are {obs_space}; twm needs images (a Box of uint8, HxW or HxWxC "
            "with C in 1, 3, 4, or of booleans)"
        )


def boolean_picture(obs: np.ndarray, color: bool) -> np.ndarray:
    from twm.envs.minatar import GRID, render_state

    obs = np.asarray(obs, dtype=bool)
    if obs.ndim == 3 and obs.shape[:2] == (GRID, GRID) and obs.shape[2] <= 10:
        return render_state(obs, color)
    return (obs.max(axis=-1) if obs.ndim == 3 else obs).astype(np.uint8) * 255


class GymSource:
    """A Gymnasium environment as a PixelSource (see the module docstring)."""

    def __init__(self, env_id: str, env_cfg: EnvConfig, seed: int) -> None:
        self.env_id = env_id
        self.color = bool(env_cfg.color)
        self._env = make_gym_env(env_id, dict(env_cfg.kwargs or {}))
        check_spaces(env_id, self._env)
        space = self._env.action_space
        self._start = int(space.start)
        self.num_actions = int(space.n)
        meanings = getattr(self._env.unwrapped, "get_action_meanings", None)
        names = list(meanings()) if callable(meanings) else []
        self.action_meanings = (
            names if len(names) == self.num_actions else [f"ACTION_{i}" for i in range(self.num_actions)]
        )
        self._boolean = self._env.observation_space.dtype == np.bool_
        self._seed: int | None = int(np.random.SeedSequence(seed).generate_state(1)[0]) & 0x7FFFFFFF
        self._copyable = True

    def _picture(self, obs: Any) -> np.ndarray:
        return boolean_picture(obs, self.color) if self._boolean else np.asarray(obs)

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None  # seeded once; later resets continue its generator
        return self._picture(obs), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, _ = self._env.step(action + self._start)
        return self._picture(obs), float(reward), bool(terminated), bool(truncated), {}

    def _game_packages(self) -> tuple[str, ...]:
        """The packages whose classes a saved env may rebuild: its own and gymnasium (wrappers)."""
        return (type(self._env.unwrapped).__module__.split(".", 1)[0], "gymnasium")

    def get_state(self) -> Any:
        if self._copyable:
            try:
                game = dump_game(self._env)
                load_game(game, self._game_packages())  # what resume will do, tried now
                return {"env": game, "seed": self._seed}
            except Exception as exc:  # a native handle, a lock, a class from elsewhere, ...
                self._copyable = False
                warnings.warn(
                    f"gym:{self.env_id} cannot be saved in checkpoints ({str(exc).splitlines()[0]}); a "
                    "resumed run will continue from a fresh episode (not bit-exact)",
                    stacklevel=2,
                )
        return {"env": None, "seed": self._seed}

    def set_state(self, state: Any) -> None:
        if state["env"] is None:
            warnings.warn(
                f"gym:{self.env_id} could not be saved in the checkpoint; the resumed run continues from a "
                "fresh episode (not bit-exact)",
                stacklevel=2,
            )
            self._env.reset()  # so the episode the run was in can go on stepping
            self._seed = None  # seeded already: later resets continue its generator
            return
        self._env = load_game(state["env"], self._game_packages())
        self._seed = state["seed"]

    def close(self) -> None:
        self._env.close()
