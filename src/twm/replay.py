"""Replay buffer: every real step of a run, single frames stored once, stacks built on read.

Layout
------
Step ``i`` holds ``(frame_i, action_i, reward_i, terminated_i, truncated_i)``, where ``frame_i`` is the
newest frame (``obs[-1]``) of the observation in which ``action_i`` was taken, ``reward_i`` the
(already squashed) learning reward after it and the flags say whether the episode ended after it.
The step added after a step with ``terminated or truncated`` starts a new episode. So the observation
stored "after" a done step ``i`` (the stack of step ``i + 1``) is the *first observation of the next
episode*, not the final observation of the finished one; the world model masks targets across
``d_i`` and never needs that final observation.

Only single frames are stored (uint8 ``(capacity, 64, 64)``: 0.41 GB at 100k steps instead of 1.64 GB
for 4-frame stacks; RGB frames are ``(capacity, 3, 64, 64)`` and their stacks ``(stack * 3, 64, 64)``). ``stacked_obs`` rebuilds the stack of step ``i`` from frames ``i-3 .. i`` and
replaces frames before the episode's first step by that first frame, which is exactly how the
environments pad their stacks at a reset. ``episode_start[i]`` (the index of the first step of step
``i``'s episode) makes that a single vectorised gather.

Sampling
--------
World-model batches (docs/method.md, "World model" and "Training loop") are sequences of ``seq_len`` steps ``i .. i+seq_len-1``
plus one context step ``i - 1`` before them and the observation of step ``i + seq_len`` after them (a
target only). The start ``i`` therefore ranges over ``1 .. size - seq_len - 1``: the newest stored step
has no stored successor yet. Sequences may cross episode boundaries; the model masks them using the
done flags.

Start indices are drawn without replacement with probability ``softmax(-visits / T)`` over the valid
starts, where ``visits[i]`` counts how often ``i`` was already drawn as a start (then incremented).
Sampling without replacement proportionally to weights (successive draws, i.e. Plackett-Luce, which is
what ``numpy.random.Generator.choice(..., replace=False, p=...)`` does too) equals taking the top k of
``log weight + Gumbel noise`` (Gumbel-top-k), which costs one pass over the valid starts.

The paper draws 100 sequences per update, 1.3 updates per interaction: by the end of a run an old
start has been drawn about a hundred times and a new one not at all, so with T = 20 most draws
(about 60 % late in a run) come from the newest 5 % of the buffer. The CPU presets draw 8 sequences
per 10.6 interactions, 175 times fewer: visits stay at 0-3, and the same rule samples almost
uniformly. Beyond the paper, ``visit_rate`` > 0 keeps the paper's sampling distribution at any
update rate: instead of the real draws it counts *expected* visits, crediting at each draw
``visit_rate`` draws per interaction since the last one (the paper: 131.6) spread over the valid
starts by their current probabilities, ``softmax(-expected_visits / T)`` (the prefill is credited
at the first draw as if its steps had come one by one). The real visits are still counted
(``visits``), but not used for the draws.

Beyond the paper, ``rewarded`` of a batch's starts (``replay.rewarded_share``) can be drawn first
among the windows that hold a rewarded step (a nonzero reward in steps ``i .. i+seq_len-1``, the
world model's reward targets), by the same keys: on games whose rewards are rare (MinAtar Asterix:
0.6 % of steps, under one per batch) the reward head otherwise seldom sees one.

Persistence
-----------
``save`` writes a directory: ``meta.json`` (sizes, settings, the generator state), ``steps.npz`` (the
small per-step arrays, visits included) and the frames in fixed chunks of ``SAVE_CHUNK`` steps
(``frames_<first step>.npy``). Frames never change once added, so a later incremental save only needs
to rewrite the last (partial) chunk, append new ones and rewrite the small files; chunks are also
what makes ``np.load(..., mmap_mode="r")`` an option for lazy loading.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twm.seeding import numpy_generator

FORMAT_VERSION = 1
# Per-step arrays added to format 1 later (zeros in a buffer saved before them).
ADDED_ARRAYS = frozenset({"expected_visits"})
SAVE_CHUNK = 10_000  # steps per frames file (41 MB of 64x64 frames)
# Steps per frames file of the run's resume checkpoints (twm.training.checkpoint). Only the partial
# last chunk is rewritten by each checkpoint, so small chunks keep that rewrite small (4 MB here);
# 100 files for 100k steps is still few (benchmarks/speed/bench_checkpoint.py compares 1,000 with 10,000).
CHECKPOINT_CHUNK = 1_000


class ReplayFullError(RuntimeError):
    """Raised by ``add`` when every slot of the buffer is used (the buffer does not wrap around)."""


class SequenceBatch(NamedTuple):
    """A batch of ``B`` sequences; step axis 0 is the context step ``start - 1``.

    - ``obs``: (B, seq_len + 2, stack, 64, 64) uint8 (float32 for vectors), the observations of steps ``start-1 .. start+seq_len``
      (the last one is the observation after the last action, a target only);
    - ``actions`` (int64), ``rewards`` (float32), ``terminated``, ``truncated`` (bool):
      (B, seq_len + 1), steps ``start-1 .. start+seq_len-1``;
    - ``starts``: (B,) int64, the buffer index ``i`` of each sequence's first non-context step.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    starts: np.ndarray


class ReplayBuffer:
    """Append-only storage of one run's steps with stacked reads and visit-balanced sequence sampling."""

    def __init__(
        self,
        capacity: int,
        *,
        frame_stack: int = 4,
        frame_shape: tuple[int, ...] = (64, 64),
        frame_dtype: type[np.generic] = np.uint8,
        visit_temperature: float = 20.0,
        visit_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        if capacity < 1 or frame_stack < 1 or visit_temperature <= 0 or visit_rate < 0:
            raise ValueError("capacity and frame_stack must be >= 1, visit_temperature > 0 and visit_rate >= 0")
        self.capacity = int(capacity)
        self.frame_stack = int(frame_stack)
        if len(frame_shape) not in (2, 3):
            raise ValueError(f"frame_shape must be (H, W) or (C, H, W), got {frame_shape}")
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.visit_temperature = float(visit_temperature)
        self.visit_rate = float(visit_rate)
        self.rng = numpy_generator(seed)
        # np.zeros maps pages lazily, so an unfilled buffer costs little real memory.
        self._frames = np.zeros((self.capacity, *self.frame_shape), dtype=frame_dtype)
        self._actions = np.zeros(self.capacity, dtype=np.int32)
        self._rewards = np.zeros(self.capacity, dtype=np.float32)
        self._terminated = np.zeros(self.capacity, dtype=bool)
        self._truncated = np.zeros(self.capacity, dtype=bool)
        self._episode_start = np.zeros(self.capacity, dtype=np.int64)
        self._visits = np.zeros(self.capacity, dtype=np.int64)
        self._expected_visits = np.zeros(self.capacity, dtype=np.float64)  # used only with visit_rate > 0
        self._credited_size = 0  # the buffer's size when expected visits were last credited
        self._size = 0

    @classmethod
    def from_config(cls, cfg: Any, seed: int) -> ReplayBuffer:
        """A buffer for a run of ``cfg`` (a ``twm.config.Config``): one slot per interaction."""
        size = cfg.frame_size
        return cls(
            cfg.train.total_steps,
            frame_stack=cfg.env.frame_stack,
            frame_shape=(size, size) if cfg.frame_channels == 1 else (cfg.frame_channels, size, size),
            frame_dtype=cfg.env.frame_dtype,
            visit_temperature=cfg.replay.visit_temperature,
            visit_rate=cfg.replay.visit_rate,
            seed=seed,
        )

    # ------------------------------------------------------------------ filling

    def __len__(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        return self._size

    def add(self, frame: np.ndarray, action: int, reward: float, terminated: bool, truncated: bool) -> None:
        """Append one environment step; ``frame`` is ``obs[-1]`` of the observation ``action`` was taken in."""
        i = self._size
        if i >= self.capacity:
            raise ReplayFullError(
                f"replay buffer is full ({self.capacity} steps); it holds one run and does not wrap around"
            )
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape or frame.dtype != self._frames.dtype:
            raise ValueError(
                f"frame must be {self._frames.dtype} of shape {self.frame_shape} (the newest frame of the observation), "
                f"got {frame.dtype} {frame.shape}"
            )
        self._frames[i] = frame
        self._actions[i] = action
        self._rewards[i] = reward
        self._terminated[i] = terminated
        self._truncated[i] = truncated
        new_episode = i == 0 or self._terminated[i - 1] or self._truncated[i - 1]
        self._episode_start[i] = i if new_episode else self._episode_start[i - 1]
        self._size = i + 1

    # ------------------------------------------------------------------ reading

    @property
    def frames(self) -> np.ndarray:
        """Stored frames (size, 64, 64), a read-only view."""
        return _readonly(self._frames[: self._size])

    @property
    def actions(self) -> np.ndarray:
        return _readonly(self._actions[: self._size])

    @property
    def rewards(self) -> np.ndarray:
        return _readonly(self._rewards[: self._size])

    @property
    def terminated(self) -> np.ndarray:
        return _readonly(self._terminated[: self._size])

    @property
    def truncated(self) -> np.ndarray:
        return _readonly(self._truncated[: self._size])

    @property
    def episode_start(self) -> np.ndarray:
        """Index of the first step of each step's episode."""
        return _readonly(self._episode_start[: self._size])

    @property
    def expected_visits(self) -> np.ndarray:
        """Expected draws of each index as a start under ``visit_rate`` (zeros when it is 0)."""
        return _readonly(self._expected_visits[: self._size])

    @property
    def visits(self) -> np.ndarray:
        """How often each index was drawn as a visit-balanced sequence start."""
        return _readonly(self._visits[: self._size])

    def stacked_obs(self, indices: np.ndarray) -> np.ndarray:
        """Observations (len, frame_stack, 64, 64) of the given steps, padded at episode starts."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise IndexError(f"step indices must be in [0, {self._size}), got {idx.min()}..{idx.max()}")
        offsets = np.arange(1 - self.frame_stack, 1, dtype=np.int64)
        frame_idx = np.maximum(idx[..., None] + offsets, self._episode_start[idx][..., None])
        stacks = self._frames[frame_idx]  # (..., stack, *frame_shape)
        if len(self.frame_shape) == 3:  # RGB frames (3, 64, 64): stack x 3 channels, oldest first
            stacks = stacks.reshape(*idx.shape, self.frame_stack * self.frame_shape[0], *self.frame_shape[1:])
        return stacks

    def num_valid_starts(self, seq_len: int) -> int:
        """Number of sequence starts ``i`` with ``i - 1 >= 0`` and ``i + seq_len <= size - 1``."""
        return max(0, self._size - seq_len - 1)

    # ------------------------------------------------------------------ sampling

    def draw_starts(
        self, batch_size: int, seq_len: int, *, rewarded: int = 0, update_visits: bool = True
    ) -> np.ndarray:
        """Visit-balanced starts: without replacement, P proportional to exp(-visits / T) (see module doc).

        With ``rewarded`` > 0, the first ``rewarded`` starts (all there are, if fewer) are the top keys
        among the windows that hold a rewarded step, the others the top keys of the rest.
        """
        count = self._check_batch(batch_size, seq_len)
        visits: np.ndarray = self._visits
        if self.visit_rate > 0:
            self._credit_expected_visits(count)
            visits = self._expected_visits
        logits = visits[1 : 1 + count] * (-1.0 / self.visit_temperature)
        keys = logits + self.rng.gumbel(size=count)
        if rewarded > 0:
            candidates = np.flatnonzero(self.windows_with_reward(seq_len))  # (m,) start - 1
            k = min(rewarded, batch_size, candidates.size)
            if k > 0:
                chosen = candidates[np.argpartition(keys[candidates], candidates.size - k)[candidates.size - k :]]
                keys[chosen] = np.inf  # in the batch whatever the other keys, and drawn first
        top = np.argpartition(keys, count - batch_size)[count - batch_size :]
        # Sorting the k winners by key gives the draw order of successive sampling; cheap for k << count.
        top = top[np.argsort(-keys[top], kind="stable")]
        starts = top.astype(np.int64) + 1
        if update_visits:
            self._visits[starts] += 1  # starts are distinct, so plain fancy-index increment is exact
        return starts

    def _credit_expected_visits(self, count: int) -> None:
        """Credit ``visit_rate`` draws for each step added since the last credit, one step at a time:
        each to the starts valid then (the newest ``count`` valid now, fewer before), spread by their
        probabilities softmax(-expected_visits / T) at that moment. One lump for all of them would
        overshoot: the new starts, at 0, would take most of it at once."""
        added = self._size - self._credited_size
        for j in range(max(0, added - count), added):
            valid = count - (added - 1 - j)  # the valid starts once step credited_size + j was added
            expected = self._expected_visits[1 : 1 + valid]  # a view: credited in place
            logits = expected * (-1.0 / self.visit_temperature)
            p = np.exp(logits - logits.max())
            expected += (self.visit_rate / p.sum()) * p
        self._credited_size = self._size

    def windows_with_reward(self, seq_len: int) -> np.ndarray:
        """(valid starts,) bool: whether steps ``i .. i+seq_len-1`` of start ``i`` = 1, 2, ... hold a
        nonzero reward."""
        count = self.num_valid_starts(seq_len)
        rewarded = np.concatenate([[0], np.cumsum(self._rewards[: self._size] != 0)])  # (size + 1,)
        starts = np.arange(1, count + 1)
        return rewarded[starts + seq_len] > rewarded[starts]

    def sample_sequences(self, batch_size: int, seq_len: int, rewarded: int = 0) -> SequenceBatch:
        """World-model batch with visit-balanced starts (updates the visit counts); ``rewarded`` of
        them among windows that hold a reward (``draw_starts``)."""
        return self.sequences(self.draw_starts(batch_size, seq_len, rewarded=rewarded), seq_len)

    def sample_sequences_uniform(self, batch_size: int, seq_len: int) -> SequenceBatch:
        """World-model batch with uniform starts, without replacement; visit counts are left alone."""
        count = self._check_batch(batch_size, seq_len)
        starts = self.rng.choice(count, size=batch_size, replace=False).astype(np.int64) + 1
        return self.sequences(starts, seq_len)

    def sample_obs(self, batch_size: int) -> np.ndarray:
        """Stacked observations (B, frame_stack, 64, 64) of distinct steps drawn uniformly from the buffer."""
        if not 1 <= batch_size <= self._size:
            raise ValueError(f"cannot draw {batch_size} distinct observations from {self._size} stored steps")
        return self.stacked_obs(self.rng.choice(self._size, size=batch_size, replace=False))

    def sequences(self, starts: np.ndarray, seq_len: int) -> SequenceBatch:
        """The batch of sequences with the given starts (context step ``start - 1`` first)."""
        starts = np.asarray(starts, dtype=np.int64)
        last = self._size - seq_len - 1
        if starts.ndim != 1 or (starts.size and (starts.min() < 1 or starts.max() > last)):
            raise IndexError(
                f"sequence starts must be a 1-d array of indices in [1, {last}] for seq_len {seq_len}"
            )
        steps = starts[:, None] - 1 + np.arange(seq_len + 1, dtype=np.int64)  # context + seq_len steps
        obs_steps = starts[:, None] - 1 + np.arange(seq_len + 2, dtype=np.int64)  # + the next observation
        return SequenceBatch(
            obs=self.stacked_obs(obs_steps),
            actions=self._actions[steps].astype(np.int64),
            rewards=self._rewards[steps],
            terminated=self._terminated[steps],
            truncated=self._truncated[steps],
            starts=starts,
        )

    def _check_batch(self, batch_size: int, seq_len: int) -> int:
        if seq_len < 1 or batch_size < 1:
            raise ValueError("batch_size and seq_len must be >= 1")
        count = self.num_valid_starts(seq_len)
        if batch_size > count:
            raise ValueError(
                f"cannot draw {batch_size} distinct sequences of {seq_len} steps (+ context + next observation) "
                f"from {self._size} stored steps: only {count} valid starts"
            )
        return count

    # ------------------------------------------------------------------ persistence

    def memory_bytes(self) -> int:
        """Bytes held by the buffer's arrays (allocated for the full capacity)."""
        return sum(a.nbytes for a in self._arrays().values()) + self._frames.nbytes

    def save(self, path: str | Path) -> None:
        """Write the buffer to directory ``path`` (replacing it), exact enough to resume sampling."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for first in range(0, self._size, SAVE_CHUNK):
            np.save(
                tmp / f"frames_{first:09d}.npy", self._frames[first : min(first + SAVE_CHUNK, self._size)]
            )
        # Any: numpy's stub lets ** keywords meet savez's ``allow_pickle: bool`` (no array has that name).
        steps: dict[str, Any] = {k: a[: self._size] for k, a in self._arrays().items()}
        np.savez(tmp / "steps.npz", **steps)
        meta = {**self._settings(), "save_chunk": SAVE_CHUNK}
        (tmp / "meta.json").write_text(json.dumps(meta))
        # Swap the finished directory in, so an interrupted save never leaves a half-written buffer at path.
        old = path.with_name(path.name + ".old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)

    @classmethod
    def load(cls, path: str | Path) -> ReplayBuffer:
        """A buffer equal to the one ``save`` wrote to ``path`` (contents, visits and generator state)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        buf = cls._empty_from_settings(meta, f"{path}: ")
        size, chunk = meta["size"], meta["save_chunk"]
        for first in range(0, size, chunk):
            frames = np.load(path / f"frames_{first:09d}.npy")
            expected = min(first + chunk, size) - first
            if len(frames) != expected:
                raise ValueError(
                    f"{path}: frames chunk at {first} holds {len(frames)} steps, expected {expected}"
                )
            buf._frames[first : first + expected] = frames
        with np.load(path / "steps.npz") as steps:
            for name, array in buf._arrays().items():
                if name in ADDED_ARRAYS and name not in steps:
                    continue  # saved before the array existed: zeros, as it was then
                if steps[name].shape != (size,):
                    raise ValueError(f"{path}: {name} has shape {steps[name].shape}, expected ({size},)")
                array[:size] = steps[name]
        buf._size = size
        return buf

    # ------------------------------------------------------------------ incremental checkpoints

    def checkpoint_state(self, frames_from: int) -> dict[str, Any]:
        """Everything but the frames before ``frames_from`` (the caller stores those, e.g. in chunks).

        Plain numpy arrays and Python values: settings, the generator state, the per-step arrays
        (visits included) and ``tail_frames``, the frames of steps ``frames_from .. size - 1``.
        ``from_checkpoint_state`` rebuilds an equal buffer from it plus the earlier frames.
        """
        if not 0 <= frames_from <= self._size:
            raise ValueError(f"frames_from must be in [0, {self._size}], got {frames_from}")
        return {
            **self._settings(),
            "arrays": {k: a[: self._size].copy() for k, a in self._arrays().items()},
            "frames_from": frames_from,
            "tail_frames": self._frames[frames_from : self._size].copy(),
        }

    @classmethod
    def from_checkpoint_state(
        cls, state: dict[str, Any], frame_blocks: Iterable[tuple[int, np.ndarray]]
    ) -> ReplayBuffer:
        """The buffer of ``checkpoint_state``; ``frame_blocks`` yields ``(first step, frames)`` blocks
        that must cover steps ``0 .. frames_from - 1`` exactly, in order."""
        buf = cls._empty_from_settings(state)
        size, frames_from = int(state["size"]), int(state["frames_from"])
        if not 0 <= frames_from <= size <= buf.capacity:
            raise ValueError(
                f"inconsistent sizes: frames_from {frames_from}, size {size}, capacity {buf.capacity}"
            )
        covered = 0
        for first, block in frame_blocks:
            if first != covered or first + len(block) > frames_from:
                raise ValueError(
                    f"frame block at step {first} ({len(block)} steps) does not continue at {covered}"
                )
            buf._frames[first : first + len(block)] = block
            covered += len(block)
        if covered != frames_from:
            raise ValueError(f"frame blocks cover {covered} steps, expected {frames_from}")
        tail = np.asarray(state["tail_frames"])
        if tail.shape != (size - frames_from, *buf.frame_shape):
            raise ValueError(
                f"tail frames have shape {tail.shape}, expected {(size - frames_from, *buf.frame_shape)}"
            )
        buf._frames[frames_from:size] = tail
        for name, array in buf._arrays().items():
            if name in ADDED_ARRAYS and name not in state["arrays"]:
                continue  # saved before the array existed: zeros, as it was then
            saved = np.asarray(state["arrays"][name])
            if saved.shape != (size,):
                raise ValueError(f"{name} has shape {saved.shape}, expected ({size},)")
            array[:size] = saved
        buf._size = size
        return buf

    def _settings(self) -> dict[str, Any]:
        """What ``save`` and ``checkpoint_state`` store besides the data: format, sizes, generator."""
        return {
            "format_version": FORMAT_VERSION,
            "size": self._size,
            "capacity": self.capacity,
            "frame_stack": self.frame_stack,
            "frame_shape": list(self.frame_shape),
            "frame_dtype": self._frames.dtype.name,
            "visit_temperature": self.visit_temperature,
            "visit_rate": self.visit_rate,
            "credited_size": self._credited_size,
            "rng_state": self.rng.bit_generator.state,
        }

    @classmethod
    def _empty_from_settings(cls, settings: Mapping[str, Any], where: str = "") -> ReplayBuffer:
        """An empty buffer built as ``_settings`` describes, its generator restored."""
        if settings.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{where}unsupported replay format version {settings.get('format_version')}")
        buf = cls(
            settings["capacity"],
            frame_stack=settings["frame_stack"],
            frame_shape=tuple(settings["frame_shape"]),
            # Buffers saved before vector observations hold uint8 frames and do not name a dtype.
            frame_dtype=np.dtype(settings.get("frame_dtype", "uint8")).type,
            visit_temperature=settings["visit_temperature"],
            # Buffers saved before expected visits existed counted real draws only.
            visit_rate=settings.get("visit_rate", 0.0),
        )
        buf.rng.bit_generator.state = settings["rng_state"]
        buf._credited_size = int(settings.get("credited_size", 0))
        return buf

    def _arrays(self) -> dict[str, np.ndarray]:
        """The per-step arrays besides the frames, by name (as saved)."""
        return {
            "actions": self._actions,
            "rewards": self._rewards,
            "terminated": self._terminated,
            "truncated": self._truncated,
            "episode_start": self._episode_start,
            "visits": self._visits,
            "expected_visits": self._expected_visits,
        }


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
