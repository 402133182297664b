"""MinAtar (Young & Tian 2019): 10x10 versions of five Atari games, drawn as 64x64 pictures.

``minatar/<game>`` for ``asterix``, ``breakout``, ``freeway``, ``seaquest`` and ``space_invaders``
(the ``minatar`` package, ``pip install 'twm[envs]'``).

Picture
    The state is a 10 x 10 x C boolean array, one channel per kind of object. Each cell becomes a
    6x6 block: cell (row i, column j) covers pixels y in [2 + 6i, 8 + 6i), x in [2 + 6j, 8 + 6j), so
    the 60x60 grid sits centred in the 64x64 picture with a 2-pixel border of background. The
    background is mid-grey (128, the decoder's initial output, as in catch), and channel k is drawn
    in ``GRAY_LEVELS[k]`` (or ``COLORS[k]`` with ``env.color``), channels in their MinAtar order
    (e.g. Breakout: paddle, ball, trail, brick), a later channel overwriting an earlier one where
    both are set. The gray levels alternate bright and dark, 48-127 away from the background; the
    colours are the corners of the RGB cube (each component 0 or 255), as far from it as a colour
    can be, which is why ``env.color=true`` is the better picture for games with small objects.

Grid (``env.observation=grid``, beyond the paper)
    The state itself instead of its picture: a (C, 10, 10) uint8 frame, channel k 255 where the
    state's channel k is set, else 0 (``grid_frame``), so the agent sees every cell of every object
    exactly and the observation model reconstructs cells rather than pixels.

Actions and dynamics
    The game's minimal action set (Breakout: NOOP, LEFT, RIGHT). Sticky actions: with probability
    ``env.sticky_actions`` (default 0.1, the MinAtar paper's setting, in training and in
    evaluation) the previous action is repeated instead of the chosen one; difficulty ramping on (the
    package's default). An episode ends with ``terminated`` when the game says so; ``env.time_limit``
    truncates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from twm.envs.pixel import EnvError, PickledGameState
from twm.games import MINATAR_CHANNELS, MINATAR_GRID

if TYPE_CHECKING:
    from twm.config import EnvConfig

CELL = 6
BORDER = 2
GRID = MINATAR_GRID
BACKGROUND_GRAY = 128
BACKGROUND_RGB = (128, 128, 128)
# Channel k's gray level / colour (MinAtar games have at most 10 channels: Seaquest).
GRAY_LEVELS = (255, 0, 224, 32, 192, 64, 240, 16, 176, 80)
# The colours: first the eight corners of the RGB cube, every component 0 or 255, so each is as far
# from the mid-grey background as a colour can be in every component (in grayscale a level is at most
# 127 away, and the levels of small objects such as bullets are only 64 away: too faint for the
# pixel loss to make the latent keep them); then two more for Seaquest's ninth and tenth channels.
COLORS = (
    (255, 0, 0),  # red
    (0, 255, 0),  # green
    (0, 0, 255),  # blue
    (255, 255, 0),  # yellow
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (255, 255, 255),  # white
    (0, 0, 0),  # black
    (255, 128, 0),  # orange
    (128, 0, 255),  # violet
)
# Background first, then channel k at index k + 1 (render_state looks cells up by index).
_GRAY_PALETTE = np.array([BACKGROUND_GRAY, *GRAY_LEVELS], dtype=np.uint8)  # (11,)
_RGB_PALETTE = np.array([BACKGROUND_RGB, *COLORS], dtype=np.uint8)  # (11, 3)
# MinAtar's action indices (all games share them; each uses a subset).
ACTION_NAMES = ("NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE")


def render_state(state: np.ndarray, color: bool = False) -> np.ndarray:
    """The (10, 10, C) boolean state as a (64, 64) gray or (64, 64, 3) RGB uint8 picture."""
    state = np.asarray(state, dtype=bool)
    if state.shape[:2] != (GRID, GRID) or state.ndim != 3 or state.shape[2] > len(GRAY_LEVELS):
        raise ValueError(f"a MinAtar state is (10, 10, C<=10), got {state.shape}")
    size = BORDER * 2 + GRID * CELL
    # One value per cell: the colour index of the last channel set there, -1 for background.
    index = np.full((GRID, GRID), -1, dtype=np.int64)
    for k in range(state.shape[2]):
        index[state[..., k]] = k
    palette = _RGB_PALETTE if color else _GRAY_PALETTE
    cells = palette[index + 1]  # (10, 10) or (10, 10, 3)
    blocks = cells.repeat(CELL, axis=0).repeat(CELL, axis=1)  # (60, 60[, 3])
    picture = np.empty((size, size, 3) if color else (size, size), dtype=np.uint8)
    picture[...] = palette[0]
    picture[BORDER : BORDER + GRID * CELL, BORDER : BORDER + GRID * CELL] = blocks
    return picture


def import_minatar() -> Any:
    try:
        import minatar
    except ImportError:
        raise EnvError(
            "MinAtar games need the minatar package: pip install 'twm[envs]' (or pip install minatar)"
        ) from None
    return minatar


def grid_frame(state: np.ndarray) -> np.ndarray:
    """The (10, 10, C) boolean state as a (C, 10, 10) uint8 frame of 0 and 255."""
    state = np.asarray(state, dtype=bool)
    if state.ndim != 3 or state.shape[:2] != (GRID, GRID):
        raise ValueError(f"a MinAtar state is (10, 10, C), got {state.shape}")
    return np.ascontiguousarray(state.transpose(2, 0, 1)).astype(np.uint8) * 255


class MinAtarSource(PickledGameState):
    """A MinAtar game as a PixelSource (see the module docstring)."""

    game_packages = ("minatar",)  # the classes a saved game may rebuild (twm.envs.saved_state)

    def __init__(self, game: str, env_cfg: EnvConfig, seed: int) -> None:
        minatar = import_minatar()
        self.game = game
        self.color = bool(env_cfg.color)
        self.grid = env_cfg.observation == "grid"
        self._env = minatar.Environment(game, sticky_action_prob=float(env_cfg.sticky_actions))
        channels = int(self._env.state_shape()[2])
        if self.grid and channels != MINATAR_CHANNELS[game]:
            raise EnvError(
                f"minatar/{game}: this minatar package's state has {channels} channels, twm expects "
                f"{MINATAR_CHANNELS[game]} (twm.games.MINATAR_CHANNELS)"
            )
        # RandomState wants a 32-bit seed; the SeedSequence spreads nearby run seeds apart.
        self._env.seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        self._actions = list(self._env.minimal_action_set())
        self.num_actions = len(self._actions)
        self.action_meanings = [ACTION_NAMES[a] for a in self._actions]

    def _picture(self) -> np.ndarray:
        state = self._env.state()
        return grid_frame(state) if self.grid else render_state(state, self.color)

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        self._env.reset()
        return self._picture(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, terminal = self._env.act(self._actions[action])
        return self._picture(), float(reward), bool(terminal), False, {}
