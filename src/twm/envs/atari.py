"""Atari 100k environment with the protocol of docs/method.md ("The Atari 100k protocol") as the released TWM code runs it.

The released code (jrobine/twm, ``utils.create_atari_env``, gym 0.26 / ale-py 0.8) stacks, inner to
outer: ``AtariEnv(frameskip=1, repeat_action_probability=0)``; ``AtariPreprocessing(frame_skip=4,
noop_max=0 for FIRE games else noop_max, terminal_on_life_loss=False)``; for FIRE games
``FireAfterLifeLoss`` (its reset: reset, FIRE step, action-2 step; its step: a FIRE step appended when
lives dropped) and then ``NoopStart`` (random no-op *agent* steps after that reset, i.e. after the
FIRE); ``EpisodicLives``; ``FrameStack``; ``TimeLimit(27000)`` outside everything; its training loop
calls ``reset()`` after every terminated or truncated step. We follow that behaviour (the differences
that remain are listed at the end) but call the ALE ourselves: it is faster (screens are grabbed into preallocated
buffers, only the frames that are used are read), and the whole state (emulator incl. its RNG, frame
stack, counters, no-op generator) can be captured with :meth:`AtariEnv.get_state` for an exact resume.

Emulator
    ``ale_py.ALEInterface`` with frame skip 1 at the ALE level, ``repeat_action_probability`` 0 (no
    sticky actions) and the minimal action set.

Agent step
    ``frame_skip`` emulator frames with the same action, rewards summed; the grayscale screens of the
    last two frames are max-pooled (Atari sprites flicker between frames), resized to 64x64 with
    ``cv2.INTER_AREA`` and pushed onto a stack of ``frame_stack`` frames, newest frame last, so an
    observation is a (frame_stack, 64, 64) uint8 array. A step stops early only on game over (the
    reported frame is then the last emulated one, max-pooled with its predecessor if that was grabbed).
    FIRE after a life loss: for games whose action 1 is FIRE, an agent step (of the agent, or a no-op or
    NOOP step inside ``reset()``) in which a life was lost (lives decreased, still > 0, game not over) is
    followed within the same call by one agent step of FIRE: its reward is added and the returned frame
    is the one after the FIRE. This holds in train and eval mode.

Episode start and frame-stack padding (the replay buffer must reproduce this exactly)
    At every episode start -- every ``reset()``: a real game reset, and in train mode with episodic
    lives also the continuation after a life loss or a time-limit truncation -- the stack is filled by
    repeating the first frame: all ``frame_stack`` slots equal that frame. Each later step shifts the
    stack by one (slot i <- slot i+1) and writes the new frame into the last slot. Hence an observation
    t steps into an episode is ``[f_max(0, t-S+1), ..., f_t]`` with S = frame_stack and f_0 the first
    frame; i.e. frames before the episode start are replaced by f_0. In eval mode a life loss does not
    start an episode, so there is no padding there.

Real game reset (``reset()`` at the very start, after game over, and after a time-limit truncation in
eval mode or without episodic lives)
    ``ale.reset_game()``, then n ~ Uniform{1..noop_max} no-ops in train mode (n = 0 in eval mode), drawn
    from the env's own seeded numpy Generator:
    - FIRE games (action 1 is FIRE): one agent step of FIRE, one of action 2 (FireReset; some games do
      not start without it), then the n no-ops as *agent steps* of NOOP (``frame_skip`` frames each,
      max-pooled, each followed by a FIRE step if it lost a life). The no-ops come after the FIRE, as
      in docs/method.md and in the released code (its NoopStart wraps FireAfterLifeLoss). The first frame is the
      pooled frame of the last of these agent steps.
    - Other games: the n no-ops are single *emulator frames*; the first frame is the current screen
      alone, not max-pooled with the frame before it (as AtariPreprocessing's reset, which zeroes the
      second pooling buffer). With n = 0 that is the screen right after ``reset_game()``.
    If the game ends during this (practically impossible), the whole reset is done again.

Life loss
    Detected as ``lives`` decreasing while still > 0 (when lives reach 0 the game is over or about to be:
    Q*bert stays at 0 lives for a few frames, so the end is left to ``game_over()``).
    - Train mode with ``episodic_lives``: the step (which for FIRE games already includes the FIRE step,
      see above) returns ``terminated=True`` but the game is not reset; the next ``reset()`` continues
      the same game with one agent step of NOOP (for every game, as EpisodicLives; FIRE games get a FIRE
      step appended if that NOOP step lost a life), no no-ops, and restarts the padded frame stack from
      the resulting frame.
    - Eval mode (and train mode without episodic lives): the episode goes on.

Time limit
    ``truncated=True`` when ``time_limit`` agent steps have been taken since the last ``reset()`` and
    the step did not terminate. Steps spent inside ``reset()`` (FIRE, no-ops, the NOOP continuation)
    do not count. In train mode with episodic lives the count therefore restarts at every life loss
    (the limit is per life, as the released TimeLimit outside EpisodicLives), and a truncation does
    not end the game: the next ``reset()`` continues it exactly like the reset after a life loss (one
    NOOP agent step, padded stack restarted from its frame). In eval mode (and without episodic lives)
    a ``reset()`` is always real, so the limit counts steps since the real reset and a truncation ends
    the game (the released eval env is only force-reset between episodes, so its limit is per game too).

Episode end
    ``terminated=True`` on game over (and on a life loss with episodic lives). ``info["game_over"]`` is
    true when the whole game ended: on game over, and on a truncation in eval mode or without episodic
    lives (not on a train truncation with episodic lives, where the game goes on). The next ``reset()``
    is then a real reset and ``info["game_score"]`` holds the raw score of the whole game (all lives,
    all truncation continuations, reset steps included); it is only reported when ``game_over`` is true.

Rewards
    ``step`` returns the learning reward, ``tanh(raw)`` when ``reward_transform == "tanh"`` else the raw
    step reward, and ``info["raw_reward"]``.

Differences from the released TWM code that remain, kept on purpose
    - Its TimeLimit sets ``truncated=True`` also on a step that terminated; here ``truncated`` implies
      not ``terminated``.
    - Its AtariPreprocessing stops a step at game over before grabbing the screen (the frame is then
      stale); here the last emulated frame is grabbed.
    - Its FireAfterLifeLoss presses FIRE whenever lives drop, also to 0 (Q*bert: lives reach 0 a few
      frames before game over); here only while lives stay > 0 and the game is not over.
    - Its eval env keeps EpisodicLives (terminated at each life loss, no reset in between, the episode
      ends at lives == 0 or truncation); here eval steps report ``terminated`` only at game over.
    - It re-seeds the emulator (with a derived seed) at each real training reset, and after a game over
      during the no-ops it resets and plays the remaining ones; here the emulator keeps its seed and
      the whole real reset is redone.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np

from twm.games import resolve_game

if TYPE_CHECKING:  # twm.config imports twm.games; the config is only needed for type hints
    from twm.config import EnvConfig

FRAME_SIZE = 64
NOOP = 0
FIRE = 1

_logger_silenced = False


def rom_name(game: str) -> str:
    """ale-py's snake_case ROM id of a game name: 'MsPacman' -> 'ms_pacman', 'UpNDown' -> 'up_n_down'."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", resolve_game(game)).lower()
    return _IRREGULAR_ROMS.get(name, name)


# ROM ids whose words are not all capitalised in the game name: 'TicTacToe3d' <- 'tic_tac_toe_3d'.
_IRREGULAR_ROMS = {"tic_tac_toe3d": "tic_tac_toe_3d"}


def _make_ale(game: str, ale_seed: int) -> Any:
    """A fresh ALEInterface with the ROM loaded; settings must be made before ``loadROM`` to apply."""
    global _logger_silenced
    import ale_py
    from ale_py import roms

    if not _logger_silenced:
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        _logger_silenced = True
    path = roms.get_rom_path(rom_name(game))
    if path is None:
        raise ValueError(f"ale-py has no ROM for {game!r}")
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", ale_seed)
    ale.setFloat("repeat_action_probability", 0.0)
    # 0 = no emulator-side frame limit: the time limit is ours, counted in agent steps.
    ale.setInt("max_num_frames_per_episode", 0)
    ale.loadROM(path)
    return ale


def _split_seed(seed: int) -> tuple[int, np.random.Generator]:
    """Independent ALE seed (a non-negative int32, as the ALE wants) and no-op Generator from one seed."""
    ss = np.random.SeedSequence(seed)
    ale_word, rng_word = ss.generate_state(2)
    return int(ale_word) & 0x7FFFFFFF, np.random.default_rng(int(rng_word))


class AtariEnv:
    """One Atari 100k game in ``"train"`` or ``"eval"`` mode (protocol: see the module docstring)."""

    def __init__(self, env_cfg: EnvConfig, mode: Literal["train", "eval"], seed: int) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.cfg = env_cfg
        self.mode = mode
        self.game = resolve_game(env_cfg.game)
        self.frame_skip = int(env_cfg.frame_skip)
        self.frame_stack = int(env_cfg.frame_stack)
        self.time_limit = int(env_cfg.time_limit)
        self.noop_max = int(env_cfg.noop_max) if mode == "train" else 0
        self.episodic_lives = bool(env_cfg.episodic_lives) and mode == "train"
        self.tanh_rewards = env_cfg.reward_transform == "tanh"

        ale_seed, self._rng = _split_seed(seed)
        self._ale = _make_ale(self.game, ale_seed)
        self._action_set = self._ale.getMinimalActionSet()
        self.num_actions: int = len(self._action_set)
        self.action_meanings: list[str] = [a.name for a in self._action_set]
        self.has_fire = len(self.action_meanings) >= 3 and self.action_meanings[FIRE] == "FIRE"

        height, width = self._ale.getScreenDims()
        # The two most recent grabbed screens of the current agent step (max-pooled), and the stack.
        self._raw = np.zeros((2, height, width), dtype=np.uint8)
        self._pooled = np.zeros((height, width), dtype=np.uint8)
        self._stack = np.zeros((self.frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)

        self._needs_real_reset = True  # next reset() resets the game (start, game over, a game-ending limit)
        self._episode_over = True  # step() is only allowed between reset() and the episode end
        self._steps = 0  # agent steps since the last reset() (time limit)
        self._lives = 0
        self._score = 0.0  # raw score of the current game, all lives

    # ------------------------------------------------------------------ emulator helpers

    def _emulate(self, action: int, frames: int) -> float:
        """Run ``frames`` emulator frames of minimal-set ``action``; grab and max-pool the last two.

        Leaves the pooled grayscale screen in ``self._pooled`` and returns the summed raw reward.
        """
        ale = self._ale
        ale_action = self._action_set[action]
        raw = self._raw
        reward = 0.0
        grabbed = 0
        for i in range(frames):
            reward += ale.act(ale_action)
            over = ale.game_over(with_truncation=False)
            # Only the last two frames (or the frame the game ended on) are read: screens are costly.
            if i >= frames - 2 or over:
                ale.getScreenGrayscale(raw[grabbed & 1])
                grabbed += 1
            if over:
                break
        if grabbed >= 2:
            np.maximum(raw[0], raw[1], out=self._pooled)
        else:
            self._pooled[...] = raw[(grabbed - 1) & 1]
        return reward

    def _frame(self) -> np.ndarray:
        """The pooled screen resized to 64x64 (INTER_AREA averages pixels, no aliasing of thin sprites)."""
        return cv2.resize(self._pooled, (FRAME_SIZE, FRAME_SIZE), interpolation=cv2.INTER_AREA)

    def _grab_current(self) -> None:
        """Pooled screen = the current screen alone (after reset_game / no-op frames without a step)."""
        self._ale.getScreenGrayscale(self._pooled)

    def _start_stack(self) -> np.ndarray:
        self._stack[...] = self._frame()[None]
        return self._stack.copy()

    def _push_frame(self) -> np.ndarray:
        self._stack[:-1] = self._stack[1:]  # numpy handles the overlapping copy
        self._stack[-1] = self._frame()
        return self._stack.copy()

    def _game_over(self) -> bool:
        return bool(self._ale.game_over(with_truncation=False))

    def _agent_step(self, action: int, lives_before: int) -> float:
        """One agent step of ``action``; in FIRE games a life lost in it is followed by a FIRE step.

        ``lives_before`` is the life count the loss is measured against. Returns the summed raw reward.
        """
        reward = self._emulate(action, self.frame_skip)
        if self.has_fire:
            lives = self._ale.lives()
            if 0 < lives < lives_before and not self._game_over():
                # Serve again within this step; otherwise games like Breakout wait for the FIRE.
                reward += self._emulate(FIRE, self.frame_skip)
        return reward

    def _noop_frames(self, frames: int) -> float:
        """``frames`` single emulator frames of NOOP (no screen grabbed); stops at game over."""
        ale = self._ale
        ale_noop = self._action_set[NOOP]
        reward = 0.0
        for _ in range(frames):
            reward += ale.act(ale_noop)
            if ale.game_over(with_truncation=False):
                break
        return reward

    def _real_reset(self) -> tuple[float, int]:
        """Reset the game, FireReset, train-mode no-ops. Returns (raw reward during reset, no-ops)."""
        ale = self._ale
        noops = int(self._rng.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0
        for _ in range(100):  # a game over within the reset is practically impossible; then redo it
            ale.reset_game()
            self._grab_current()
            reward = 0.0
            if self.has_fire:
                # FireReset, then the no-ops as agent steps (the released NoopStart wraps the FIRE).
                for action in (FIRE, 2):
                    reward += self._emulate(action, self.frame_skip)
                lives = ale.lives()
                for _ in range(noops):
                    if self._game_over():
                        break
                    reward += self._agent_step(NOOP, lives)
                    lives = ale.lives()
            elif noops > 0:
                # No-op emulator frames; the first frame is the current screen alone (no max-pool).
                reward += self._noop_frames(noops)
                self._grab_current()
            if not self._game_over():
                return reward, noops
        raise RuntimeError(f"{self.game}: the game keeps ending during the reset")

    # ------------------------------------------------------------------ API

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (see the module docstring for what a reset does in each case).

        ``seed`` re-seeds the emulator and the no-op generator and forces a real reset; it reloads the
        ROM (~0.1 s), so pass it only when a new seed is really wanted.
        """
        if seed is not None:
            ale_seed, self._rng = _split_seed(seed)
            self._ale = _make_ale(self.game, ale_seed)
            self._action_set = self._ale.getMinimalActionSet()
            self._needs_real_reset = True
        real = self._needs_real_reset
        noops = 0
        if real:
            self._score, noops = self._real_reset()
        else:
            # Episodic lives (after a life loss or a truncation): the game goes on, from a fresh frame.
            self._score += self._agent_step(NOOP, self._lives)
            if self._game_over():
                self._score, noops = self._real_reset()
                real = True
        self._steps = 0  # the time limit counts agent steps since this reset
        self._lives = self._ale.lives()
        self._needs_real_reset = False
        self._episode_over = False
        obs = self._start_stack()
        info = {
            "lives": self._lives,
            "real_reset": real,
            "noops": noops,
            "episode_frame_number": self._ale.getEpisodeFrameNumber(),
        }
        return obs, info

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} out of range [0, {self.num_actions})")
        ale = self._ale
        lives_before = self._lives
        raw_reward = self._agent_step(int(action), lives_before)  # incl. the FIRE after a life loss
        self._steps += 1
        game_over = self._game_over()
        lives = ale.lives()
        life_lost = lives < lives_before and lives > 0 and not game_over
        terminated = game_over or (life_lost and self.episodic_lives)
        self._lives = lives
        self._score += raw_reward
        truncated = self._steps >= self.time_limit and not terminated
        # With episodic lives a truncation does not end the game: the next reset() continues it.
        whole_game_over = game_over or (truncated and not self.episodic_lives)
        self._needs_real_reset = whole_game_over
        self._episode_over = terminated or truncated
        obs = self._push_frame()
        reward = math.tanh(raw_reward) if self.tanh_rewards else raw_reward
        info: dict[str, Any] = {
            "raw_reward": raw_reward,
            "lives": lives,
            "game_over": whole_game_over,
            "episode_frame_number": ale.getEpisodeFrameNumber(),
        }
        if whole_game_over:
            info["game_score"] = self._score
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ exact resume

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: emulator (incl. its RNG), stack, counters, no-op RNG.

        Only plain Python/numpy values (the ALE state is serialised to bytes), so it can be pickled.
        """
        return {
            "ale": self._ale.cloneState(include_rng=True).serialize(),
            "stack": self._stack.copy(),
            "steps": self._steps,
            "lives": self._lives,
            "score": self._score,
            "needs_real_reset": self._needs_real_reset,
            "episode_over": self._episode_over,
            "rng": self._rng.bit_generator.state,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        import ale_py

        self._ale.restoreState(ale_py.ALEState(state["ale"]))
        self._stack[...] = state["stack"]
        self._steps = int(state["steps"])
        self._lives = int(state["lives"])
        self._score = float(state["score"])
        self._needs_real_reset = bool(state["needs_real_reset"])
        self._episode_over = bool(state["episode_over"])
        self._rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        # The ALE frees its memory when garbage-collected; dropping the reference is enough.
        self._ale = None
