"""``catch``: a tiny pixel game with the observation format of the Atari environment.

It exists so that the whole agent can be tested end to end in minutes on a CPU: a small world model
learns it in about 20k interactions, and its optimal and random returns are known exactly.

Rules
-----
The screen is a coarse grid of 4 columns of 16 px and 7 rows of 8 px. A ball (12x7 px) appears in
row 0 of a random column and falls one row per step; the paddle (16x6 px) sits at the bottom and
moves one column per step
(actions 0 NOOP, 1 LEFT, 2 RIGHT; moves into a wall do nothing). In each step the paddle moves
first, then the ball; when the ball reaches the paddle row (row 7, after 7 steps) it is resolved:
raw reward +1 if it lands in the paddle's column, -1 otherwise, and the next ball appears at once in
row 0. An episode is ``num_balls`` balls, so it always lasts exactly ``7 * num_balls`` steps and ends
with ``terminated``. With ``drift=True`` every ball also moves -1, 0 or +1 columns per step (drawn
when it appears) and bounces off the walls, which makes the frame stack necessary to predict where
it lands. Dashes along the top edge show how many balls are left (the falling one included), so the
end of an episode is predictable from a single frame, as a life counter would be.

Returns (raw, unsquashed)
-------------------------
- ``optimal_return = num_balls``: from row 0 the ball needs 7 steps to land and the paddle is at most
  3 columns away from any landing column, so a policy that walks towards the landing column always
  catches it (``tests/envs/test_catch.py`` checks this with a scripted policy).
- ``expected_random_return = num_balls * (2 / 4 - 1) = -0.5 * num_balls`` for uniformly random
  actions: the paddle starts in a uniformly random column, and the uniform distribution is stationary
  for its clamped random walk (the transition matrix is symmetric, hence doubly stochastic), so at
  every landing the paddle is uniform over the 4 columns and independent of the ball: P(catch) = 1/4.

Observations are ``(frame_stack, 64, 64)`` uint8 with the newest frame last; at an episode start the
stack holds the first frame in every slot, exactly as the Atari environment pads it. ``mode`` is
accepted for interface compatibility: there are no lives or no-op starts, so train and eval behave
the same.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from twm.seeding import numpy_generator

if TYPE_CHECKING:  # twm.config imports twm.games; the config is only needed for type hints here
    from twm.config import EnvConfig

FRAME_SIZE = 64
COLUMNS = 4
CELL_WIDTH = FRAME_SIZE // COLUMNS  # 16 px per column
ROW_HEIGHT = 8  # the ball falls 8 px per step
FALL_STEPS = 7  # steps from the ball's appearance (row 0) to its landing in the paddle row
MAX_BALLS = 10  # the ball counter along the top edge has room for this many dashes

BALL_VALUE = 255
PADDLE_VALUE = 255
COUNTER_VALUE = 0
BACKGROUND_VALUE = 128
BALL_WIDTH = 12
BALL_HEIGHT = 7
PADDLE_WIDTH = 16
PADDLE_HEIGHT = 6
# Vertical layout: counter dashes in y [0, 2), ball row r in y [3 + 8r, 10 + 8r) for r = 0..6
# (the lowest ends at y = 58), paddle in y [58, 64). The objects are large (84 and 96 px per frame)
# because a small world model trained with a pixel likelihood learns small objects late. The
# background is mid-grey, the decoder's initial output (its last bias starts at 0.5): on a black
# background the first updates move every latent the same way (towards darker frames) and a small
# encoder collapses to one code before it learns the objects.
BALL_TOP = 3
PADDLE_TOP = FRAME_SIZE - PADDLE_HEIGHT

ACTION_MEANINGS = ["NOOP", "LEFT", "RIGHT"]
_ACTION_DELTA = (0, -1, 1)


class CatchEnv:
    """The ``catch`` game; see the module docstring for the rules and the reference returns."""

    def __init__(
        self,
        env_cfg: EnvConfig,
        mode: Literal["train", "eval"],
        seed: int,
        *,
        num_balls: int = 10,
        drift: bool = False,
    ) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        if not 1 <= num_balls <= MAX_BALLS:
            raise ValueError(f"num_balls must be in [1, {MAX_BALLS}], got {num_balls}")
        self.mode = mode
        self.num_balls = num_balls
        self.drift = drift
        self.frame_stack = env_cfg.frame_stack
        self.time_limit = env_cfg.time_limit
        self.squash = env_cfg.reward_transform == "tanh"
        self.num_actions = len(ACTION_MEANINGS)
        self.action_meanings = list(ACTION_MEANINGS)
        self._rng = numpy_generator(seed)
        self._stack = np.zeros((self.frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self._paddle = 0
        self._ball_row = 0
        self._ball_col = 0
        self._ball_dx = 0
        self._balls_left = 0
        self._steps = 0
        self._score = 0.0
        self._needs_reset = True

    # ------------------------------------------------------------------ reference returns

    @property
    def optimal_return(self) -> float:
        """Raw return of a policy that catches every ball (the best possible)."""
        return float(self.num_balls)

    @property
    def expected_random_return(self) -> float:
        """Expected raw return of uniformly random actions (exact; derivation in the module docstring)."""
        return self.num_balls * (2.0 / COLUMNS - 1.0)

    @property
    def episode_length(self) -> int:
        """Steps of every episode that the time limit does not cut short."""
        return FALL_STEPS * self.num_balls

    # ------------------------------------------------------------------ gym-like interface

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (a whole game); ``seed`` re-seeds the generator first."""
        if seed is not None:
            self._rng = numpy_generator(seed)
        self._paddle = int(self._rng.integers(COLUMNS))
        self._balls_left = self.num_balls
        self._spawn_ball()
        self._steps = 0
        self._score = 0.0
        self._needs_reset = False
        self._stack[:] = self._render()  # pad the stack with the first frame, as the Atari env does
        # Same keys as the Atari env's reset info: every catch reset is a real one, without no-ops.
        return self._stack.copy(), {"lives": 1, "real_reset": True, "noops": 0}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        if not 0 <= int(action) < self.num_actions:
            raise ValueError(f"action must be in [0, {self.num_actions}), got {action}")
        self._paddle = min(max(self._paddle + _ACTION_DELTA[int(action)], 0), COLUMNS - 1)
        if self._ball_dx and not 0 <= self._ball_col + self._ball_dx < COLUMNS:
            self._ball_dx = -self._ball_dx  # bounce off the wall instead of leaving the screen
        self._ball_col += self._ball_dx
        self._ball_row += 1

        raw_reward = 0.0
        terminated = False
        if self._ball_row == FALL_STEPS:
            raw_reward = 1.0 if self._ball_col == self._paddle else -1.0
            self._score += raw_reward
            self._balls_left -= 1
            if self._balls_left > 0:
                self._spawn_ball()
            else:
                terminated = True
        self._steps += 1
        truncated = not terminated and self._steps >= self.time_limit
        game_over = terminated or truncated
        self._needs_reset = game_over

        self._stack[:-1] = self._stack[1:]
        self._stack[-1] = self._render()
        info: dict[str, Any] = {"raw_reward": raw_reward, "lives": 1, "game_over": game_over}
        if game_over:  # as in the Atari env: the raw score of the whole game, only when it is over
            info["game_score"] = self._score
        reward = float(np.tanh(raw_reward)) if self.squash else raw_reward
        return self._stack.copy(), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        """Everything that determines the future, for an exact resume (a deep copy)."""
        return {
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "stack": self._stack.copy(),
            "paddle": self._paddle,
            "ball_row": self._ball_row,
            "ball_col": self._ball_col,
            "ball_dx": self._ball_dx,
            "balls_left": self._balls_left,
            "steps": self._steps,
            "score": self._score,
            "needs_reset": self._needs_reset,
            # Not state, but a state only makes sense in an env built the same way: checked on restore.
            "num_balls": self.num_balls,
            "drift": self.drift,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state["num_balls"] != self.num_balls or state["drift"] != self.drift:
            raise ValueError(
                f"state of a catch env with num_balls={state['num_balls']}, drift={state['drift']} cannot be "
                f"restored into one with num_balls={self.num_balls}, drift={self.drift}"
            )
        stack = np.asarray(state["stack"], dtype=np.uint8)
        if stack.shape != self._stack.shape:
            raise ValueError(f"state frame stack has shape {stack.shape}, expected {self._stack.shape}")
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._stack[:] = stack
        self._paddle = int(state["paddle"])
        self._ball_row = int(state["ball_row"])
        self._ball_col = int(state["ball_col"])
        self._ball_dx = int(state["ball_dx"])
        self._balls_left = int(state["balls_left"])
        self._steps = int(state["steps"])
        self._score = float(state["score"])
        self._needs_reset = bool(state["needs_reset"])

    def close(self) -> None:
        """Nothing to release; present for the common environment interface."""

    # ------------------------------------------------------------------ helpers

    def landing_column(self) -> int:
        """Column in which the falling ball will land (what a perfect player aims for)."""
        col, dx = self._ball_col, self._ball_dx
        for _ in range(FALL_STEPS - self._ball_row):
            if dx and not 0 <= col + dx < COLUMNS:
                dx = -dx
            col += dx
        return col

    def _spawn_ball(self) -> None:
        self._ball_row = 0
        self._ball_col = int(self._rng.integers(COLUMNS))
        self._ball_dx = int(self._rng.integers(-1, 2)) if self.drift else 0

    def _render(self) -> np.ndarray:
        frame = np.full((FRAME_SIZE, FRAME_SIZE), BACKGROUND_VALUE, dtype=np.uint8)
        for i in range(self._balls_left):
            frame[0:2, 6 * i + 2 : 6 * i + 6] = COUNTER_VALUE
        if self._balls_left > 0:
            y = BALL_TOP + ROW_HEIGHT * self._ball_row
            x = CELL_WIDTH * self._ball_col + (CELL_WIDTH - BALL_WIDTH) // 2
            frame[y : y + BALL_HEIGHT, x : x + BALL_WIDTH] = BALL_VALUE
        x = CELL_WIDTH * self._paddle + (CELL_WIDTH - PADDLE_WIDTH) // 2
        frame[PADDLE_TOP:, x : x + PADDLE_WIDTH] = PADDLE_VALUE
        return frame
