"""``gym:<id>``: any installed Gymnasium environment with image observations and discrete actions.

Building: ``gymnasium.make(id, **env.kwargs)`` (``gym:<module>:<id>`` imports ``<module>`` first; ids
of ale-py and of packages that Gymnasium's entry points or ``KNOWN_ID_PREFIXES`` name are found
without it), then each of ``env.wrappers`` in order (a class of ``gymnasium.wrappers`` or a dotted
path, with its kwargs), then with ``env.pixels=render`` Gymnasium's ``AddRenderObservation`` (the
env is made with ``render_mode="rgb_array"``), and with ``env.obs_key`` the image is that key of a
Dict observation.

With ``env.observation=vector`` (beyond the paper) the observation is a vector of numbers instead:
a numeric ``Box`` of any shape, flattened (CartPole's 4 numbers), or a ``Discrete`` as its one-hot
(FrozenLake's 16 cells), float32.

Accepted spaces: observations a ``Box`` of uint8 (H x W, H x W x C with C in 1, 3, 4, or C x H x W,
which is transposed) or of booleans (H x W x C channels, drawn as a picture the way MinAtar states are:
twm.envs.minatar.render_state, which needs H = W = 10 and C <= 10; other boolean shapes are shown
as the max over channels, 0/255); actions a ``Discrete``.
The environment's own ``terminated`` and ``truncated`` are kept apart; ``env.time_limit`` truncates
as well. It is seeded once, at its first reset.

Resume: the environment is pickled into checkpoints when it can be, and rebuilt from its own
package's and gymnasium's classes only (twm.envs.saved_state); when it cannot (an env holding a
native handle, or needing other globals), a resumed run starts a fresh episode there, with a warning.
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from twm.envs.pixel import EnvError
from twm.envs.saved_state import dump_game, load_game

if TYPE_CHECKING:
    from twm.config import EnvConfig


# Ids whose registering package Gymnasium's registry cannot name (no entry point): imported on demand.
KNOWN_ID_PREFIXES: dict[str, str] = {"MiniGrid-": "minigrid", "BabyAI-": "minigrid"}


def register_ale() -> None:
    """ale-py's environments in Gymnasium's registry (``gym:ALE/...``); nothing without ale-py."""
    import gymnasium as gym

    if any(spec.namespace == "ALE" for spec in gym.registry.values()):
        return
    try:
        import ale_py
    except ImportError:
        return
    gym.register_envs(ale_py)


def _import_registering_module(env_id: str) -> bool:
    """Import the package that registers ``env_id`` where that can be told; True if one was imported.

    Tells by the ``gymnasium.envs`` entry points (a plugin names its namespace there) and by a short
    table of id prefixes of packages that register on import (MiniGrid).
    """
    import importlib
    from importlib.metadata import entry_points

    from gymnasium.envs.registration import parse_env_id

    try:
        namespace = parse_env_id(env_id)[0]
    except Exception:
        return False
    for entry in entry_points(group="gymnasium.envs"):
        if namespace is not None and entry.name == namespace:
            try:
                entry.load()()
                return True
            except Exception:
                return False
    for prefix, module in KNOWN_ID_PREFIXES.items():
        if env_id.startswith(prefix):
            try:
                importlib.import_module(module)
                return True
            except ImportError:
                return False
    return False


def make_gym_env(env_id: str, kwargs: dict[str, Any]) -> Any:
    """``gymnasium.make(env_id, **kwargs)``, every failure as a one-line EnvError.

    An id that is not registered is tried once more after importing the package that registers it,
    where that can be told (``_import_registering_module``); else the error names the
    ``gym:<module>:<id>`` form, which imports ``<module>`` first.
    """
    import gymnasium as gym

    register_ale()
    for attempt in (0, 1):
        try:
            return gym.make(env_id, **kwargs)
        except (gym.error.NameNotFound, gym.error.NamespaceNotFound) as exc:
            if attempt == 0 and ":" not in env_id and _import_registering_module(env_id):
                continue
            first = str(exc).splitlines()[0].rstrip(".")
            hint = "" if ":" in env_id else (
                f"; if a package registers it, name that package: gym:<module>:{env_id} "
                "(e.g. gym:minigrid:MiniGrid-Empty-8x8-v0)"
            )
            if env_id.startswith("twm_api/"):  # twm.api.USER_NAMESPACE
                hint = "; it was made by twm.train(env_fn=...): pass the same env_fn to twm.load or twm.train"
            raise EnvError(f"gym:{env_id}: {first}{hint}") from None
        except gym.error.Error as exc:
            raise EnvError(f"gym:{env_id}: {str(exc).splitlines()[0]}") from None
        except ModuleNotFoundError as exc:
            module = env_id.split(":", 1)[0] if ":" in env_id else exc.name
            raise EnvError(f"gym:{env_id}: cannot import {module} ({str(exc).splitlines()[0]})") from None
        except (TypeError, ValueError, ImportError) as exc:
            raise EnvError(f"gym:{env_id} cannot be made with env.kwargs={kwargs!r}: {exc}") from None
    raise AssertionError("unreachable")


def wrapper_class(name: str) -> Any:
    """The wrapper named ``name``: a class in ``gymnasium.wrappers`` or a dotted path (EnvError if none)."""
    import importlib

    module_name, _, attr = name.rpartition(".")
    if ":" in name:
        module_name, _, attr = name.partition(":")
    module_name = module_name or "gymnasium.wrappers"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvError(f"env.wrappers: cannot import {module_name} for wrapper {name!r} ({exc})") from None
    found = getattr(module, attr, None)
    if not callable(found):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EnvError(f"env.wrappers: no wrapper named {attr!r} in {module_name}{hint}")
    return found


def apply_wrappers(env_id: str, env: Any, wrappers: list[dict[str, Any]]) -> Any:
    """``env`` inside each wrapper of ``env.wrappers`` in order (the first is innermost)."""
    for spec in wrappers:
        cls = wrapper_class(spec["name"])
        kwargs = dict(spec.get("kwargs") or {})
        try:
            env = cls(env, **kwargs)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise EnvError(f"env.wrappers: {spec['name']}(gym:{env_id}, **{kwargs!r}) failed: {first}") from None
    return env


def render_observations(env_id: str, env: Any) -> Any:
    """``env`` whose observations are its own ``render()`` frames (``env.pixels=render``)."""
    from gymnasium.wrappers import AddRenderObservation

    if getattr(env, "render_mode", None) != "rgb_array":
        raise EnvError(
            f"gym:{env_id}: env.pixels=render needs render_mode='rgb_array'; its render_mode is "
            f"{getattr(env, 'render_mode', None)!r}"
        )
    try:
        return AddRenderObservation(env, render_only=True)
    except Exception as exc:
        raise EnvError(f"gym:{env_id}: env.pixels=render failed: {str(exc).splitlines()[0]}") from None


def image_space(env_id: str, env: Any, obs_key: str) -> Any:
    """The observation space that holds the image: the whole space, or ``obs_key`` of a Dict."""
    import gymnasium as gym

    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        keys = list(space.spaces)
        if not obs_key:
            raise EnvError(
                f"gym:{env_id} observations are a Dict with keys {', '.join(map(str, keys))}; set env.obs_key "
                "to the key that holds the image"
            )
        if obs_key not in space.spaces:
            raise EnvError(
                f"env.obs_key={obs_key!r}: gym:{env_id} observations have no such key; keys: "
                f"{', '.join(map(str, keys))}"
            )
        return space.spaces[obs_key]
    if obs_key:
        raise EnvError(
            f"env.obs_key={obs_key!r}: gym:{env_id} observations are a {type(space).__name__}, not a Dict"
        )
    return space


def image_layout(shape: tuple[int, ...], boolean: bool) -> str | None:
    """'hw', 'hwc' or 'chw' (channels first, transposed to HxWxC) for an image shape, None otherwise."""
    if len(shape) == 2:
        return "hw" if min(shape) >= 2 else None
    if len(shape) != 3:
        return None
    if boolean or shape[-1] in (1, 3, 4):
        return "hwc" if min(shape[:2]) >= 2 else None
    if shape[0] in (1, 3, 4) and min(shape[1:]) >= 2:
        return "chw"
    return None


def check_spaces(env_id: str, env: Any, obs_key: str = "", wrapped: bool = False) -> str:
    """Raise EnvError unless the observations are images and the actions discrete; the image layout."""
    import gymnasium as gym

    act_space = env.action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        raise EnvError(
            f"gym:{env_id} has a {type(act_space).__name__} action space; twm needs Discrete actions"
        )
    obs_space = image_space(env_id, env, obs_key)
    shape = getattr(obs_space, "shape", None)
    layout = None
    if isinstance(obs_space, gym.spaces.Box) and obs_space.dtype in (np.uint8, np.bool_) and shape is not None:
        layout = image_layout(tuple(shape), obs_space.dtype == np.bool_)
    if layout is None:
        hint = "" if obs_key else "; env.pixels=render reads the env's rgb_array frames instead"
        if holds_numbers(obs_space):
            hint = "; --set env.observation=vector reads them as a vector of numbers" + (
                ", or env.pixels=render the env's rgb_array frames" if not obs_key else ""
            )
        raise EnvError(
            f"gym:{env_id} {_where(obs_key, wrapped)} are {obs_space}; twm needs images (a Box of uint8, HxW or HxWxC or CxHxW "
            f"with C in 1, 3, 4, or of booleans){hint}"
        )
    return layout


def _where(obs_key: str, wrapped: bool) -> str:
    """What an error names: the observations, or their key, after the wrappers if there are any."""
    where = f"observations[{obs_key!r}]" if obs_key else "observations"
    return where + (" after env.wrappers" if wrapped else "")


def holds_numbers(space: Any) -> bool:
    """Whether a space can be read as a vector: a Discrete, or a non-empty Box of numbers or booleans."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return True
    return (
        isinstance(space, gym.spaces.Box)
        and (np.issubdtype(space.dtype, np.number) or space.dtype == np.bool_)
        and int(np.prod(space.shape)) >= 1
    )


def vector_layout(env_id: str, env: Any, obs_key: str = "", wrapped: bool = False) -> tuple[int, int | None]:
    """How ``env``'s observations read as a vector (env.observation=vector): the numbers in one, and
    for a Discrete (read as its one-hot) its first value, None for a Box (flattened). EnvError if
    they cannot be read so."""
    import gymnasium as gym

    space = image_space(env_id, env, obs_key)
    if not holds_numbers(space):
        raise EnvError(
            f"gym:{env_id} {_where(obs_key, wrapped)} are {space}; env.observation=vector needs a Box of "
            "numbers or a Discrete"
        )
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), int(space.start)
    return int(np.prod(space.shape)), None


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
        self.vector_size = 0  # numbers per observation with env.observation=vector
        self._one_hot_start: int | None = None
        self.color = bool(env_cfg.color)
        kwargs = dict(env_cfg.kwargs or {})
        self.pixels = env_cfg.pixels
        if self.pixels == "render":
            kwargs.setdefault("render_mode", "rgb_array")
        self.obs_key = env_cfg.obs_key
        self.wrappers = [dict(w) for w in env_cfg.wrappers or []]
        env = make_gym_env(env_id, kwargs)
        try:
            env = apply_wrappers(env_id, env, self.wrappers)
            if self.pixels == "render":
                env = render_observations(env_id, env)
            self.vector = env_cfg.observation == "vector"
            if self.vector:
                layout = vector_layout(env_id, env, self.obs_key, wrapped=bool(self.wrappers))
                self.vector_size, self._one_hot_start = layout
            else:
                self._layout = check_spaces(env_id, env, self.obs_key, wrapped=bool(self.wrappers))
        except BaseException:
            env.close()
            raise
        self._env = env
        space = self._env.action_space
        self._start = int(space.start)
        self.num_actions = int(space.n)
        meanings = getattr(self._env.unwrapped, "get_action_meanings", None)
        names = list(meanings()) if callable(meanings) else []
        self.action_meanings = (
            names if len(names) == self.num_actions else [f"ACTION_{i}" for i in range(self.num_actions)]
        )
        self._boolean = image_space(env_id, self._env, self.obs_key).dtype == np.bool_
        self._seed: int | None = int(np.random.SeedSequence(seed).generate_state(1)[0]) & 0x7FFFFFFF
        self._copyable = True

    def _picture(self, obs: Any) -> np.ndarray:
        """The observation as a raw picture, or with env.observation=vector as (vector_size,) float32."""
        if self.obs_key:
            obs = obs[self.obs_key]
        if self.vector:
            if self._one_hot_start is not None:
                one_hot = np.zeros(self.vector_size, dtype=np.float32)
                one_hot[int(obs) - self._one_hot_start] = 1.0
                return one_hot
            vector = np.asarray(obs, dtype=np.float32).reshape(self.vector_size)
            if not np.isfinite(vector).all():  # symlog(inf) would turn every loss into NaN later
                raise EnvError(f"gym:{self.env_id} gave an observation that is not finite: {vector.tolist()}")
            return vector
        if self._layout == "chw":
            obs = np.moveaxis(np.asarray(obs), 0, -1)
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
        wrappers = [wrapper_class(w["name"]).__module__.split(".", 1)[0] for w in self.wrappers]
        return tuple(dict.fromkeys([type(self._env.unwrapped).__module__.split(".", 1)[0], *wrappers, "gymnasium"]))

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
