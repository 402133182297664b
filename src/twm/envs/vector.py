"""Vectorised evaluation: many full eval-mode games at once, with batched policy calls.

``evaluate_episodes(env_cfg, policy, num_episodes, num_envs, seed)`` returns the raw game scores of
``num_episodes`` evaluation episodes (protocol: twm.envs.atari, mode "eval"; also works for the
built-in catch game via ``twm.envs.make_env``), in episode order.

No bias towards short episodes
    Which episodes each env slot plays is fixed before anything runs: episode k belongs to slot
    ``k % num_envs`` (``assign_episodes``), slot i's env is seeded with ``slot_seeds(seed, num_envs)[i]``
    and plays its episodes one after the other (each a real game reset), and every episode is played
    to its end. Stopping "when num_episodes have finished" would over-sample short games; here the
    result does not depend on timing at all, and ``scores[k]`` is episode k whatever the backend. So the
    scores equal running, for each slot, a fresh env with that slot's seed sequentially. (For Atari in
    eval mode -- no sticky actions, no no-ops -- the emulator does not use its seed at all: an episode
    is a deterministic function of the actions; the randomness comes from the policy.)

Policy
    ``policy(obs)`` receives the observations of the slots that still have an episode running, stacked
    in slot order as an (N, channels, 64, 64) uint8 array (float32 for vectors) (N shrinks as slots finish their share),
    and returns N integer actions. It is called once per lockstep step, so a network is batched.
    A ``RecurrentPolicy`` (one with an ``observe`` method: an agent whose policy reads the
    transformer's state) also gets the slot indices and, after each step, the slots' rewards and
    episode ends; it runs with the "sync" backend.

Backends, and what we measured (benchmarks/speed/bench_env.py, 2-core CPU shared with other jobs, Pong,
uniformly random policy, 8 slots, 16 episodes capped at 600 steps, median of 5, agent steps/s summed
over envs, env creation included)
    ==================================================  ======
    single AtariEnv, train mode (reference)              2326
    "sync": 8 AtariEnv in lockstep in this process       1826
    "async": AsyncVectorEnv, 2 worker processes x 4      2482
    AsyncVectorEnv, 8 worker processes x 1 env           1547
    ale-py AtariVectorEnv, C++ threads (not exact)       4209
    ==================================================  ======
    - "sync" is below the single env because each env loads its ROM (~0.13 s) and that is counted.
    - "async" (the default for Atari when 2+ CPUs are usable) runs groups of slots in
      ``usable_cpus()`` worker processes: gymnasium's AsyncVectorEnv over a gymnasium.Env that wraps
      a lockstep group. One process per env is slower (more processes than cores, more IPC). Starting
      the workers costs ~0.3 s per call, so the built-in catch game (microsecond steps) and single-slot
      runs use "sync". Workers are started with the "forkserver" method (they must not inherit CUDA or
      torch threads), so a script calling this needs the usual ``if __name__ == "__main__":`` guard.
    - ale-py's AtariVectorEnv is the fastest but *cannot* be configured to our eval protocol: it
      presses FIRE for a single emulator frame at reset (not FIRE then action 2 as agent steps) and
      never after a life loss, pads the frame stack with zeros instead of repeating the first frame,
      counts its episode limit in emulator frames, and draws its no-ops from Uniform{0..noop_max-1}
      minus the FIRE frame. It is not used; the benchmark measures it as a reference only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import gymnasium as gym
import numpy as np

from twm.envs import make_env
from twm.games import game_family

if TYPE_CHECKING:
    from twm.config import EnvConfig

Policy = Callable[[np.ndarray], np.ndarray]


class RecurrentPolicy(Protocol):
    """A policy with state per slot: told which slots act and how their steps ended ("sync" only).

    ``__call__(obs, slots)`` gets the active slots' observations and their slot indices (ascending;
    a slot that finished its share never comes back); ``observe(slots, rewards, dones)`` then gets
    each of those slots' learning reward and whether its episode ended with that step.
    """

    def __call__(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray: ...

    def observe(self, slots: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None: ...


Backend = Literal["auto", "sync", "async"]


def slot_seeds(seed: int, num_envs: int) -> list[int]:
    """Seed of each env slot: independent streams of one SeedSequence, fixed by slot position."""
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(num_envs)]


def assign_episodes(num_episodes: int, num_envs: int) -> list[list[int]]:
    """Episode indices of each slot, fixed up front: episode k runs in slot k % num_envs."""
    return [list(range(i, num_episodes, num_envs)) for i in range(num_envs)]


class _Slot:
    """One eval env that plays its assigned episodes one after another (each a real game reset)."""

    def __init__(self, env_cfg: EnvConfig, episodes: Sequence[int], seed: int) -> None:
        self.episodes = list(episodes)
        self.next = 0  # index into self.episodes of the episode to start next
        self.env = make_env(env_cfg, "eval", seed) if self.episodes else None
        self.obs = np.zeros((env_cfg.image_channels, env_cfg.frame_size, env_cfg.frame_size), dtype=env_cfg.frame_dtype)
        self.achievements: dict[int, list[str]] = {}  # Crafter: what each finished episode unlocked
        self.current = -1  # episode index being played, -1 when the slot has finished its share
        self.last_reward = 0.0
        self._start_next()

    def _start_next(self) -> None:
        if self.env is None or self.next >= len(self.episodes):
            self.current = -1
            return
        self.current = self.episodes[self.next]
        # Eval episodes end only with the whole game, so this reset() is always a real game reset.
        self.obs, _ = self.env.reset()
        self.next += 1

    @property
    def active(self) -> bool:
        return self.current >= 0

    def step(self, action: int) -> tuple[int, float]:
        """Advance one agent step. Returns (episode index, raw score) if an episode ended, else (-1, 0)."""
        assert self.env is not None and self.active
        obs, reward, terminated, truncated, info = self.env.step(int(action))
        self.obs = obs
        self.last_reward = float(reward)  # the learning reward (a recurrent policy reads it)
        if not (terminated or truncated):
            return -1, 0.0
        finished, score = self.current, float(info["game_score"])
        if "achievements" in info:
            self.achievements[finished] = list(info["achievements"])
        self._start_next()
        return finished, score

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


class _SlotGroup:
    """Several slots stepped in lockstep (the "sync" backend, and one worker of "async")."""

    def __init__(self, env_cfg: EnvConfig, assignment: Sequence[Sequence[int]], seeds: Sequence[int]):
        self.slots = [_Slot(env_cfg, eps, s) for eps, s in zip(assignment, seeds, strict=True)]

    def observations(self) -> np.ndarray:
        return np.stack([s.obs for s in self.slots])

    def active(self) -> np.ndarray:
        return np.array([s.active for s in self.slots], dtype=bool)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step the active slots (actions of inactive ones are ignored); per slot (finished ep, score)."""
        finished = np.full(len(self.slots), -1, dtype=np.int64)
        scores = np.zeros(len(self.slots), dtype=np.float64)
        for i, slot in enumerate(self.slots):
            if slot.active:
                finished[i], scores[i] = slot.step(int(actions[i]))
        return finished, scores

    def close(self) -> None:
        for s in self.slots:
            s.close()


class _GroupGymEnv(gym.Env):
    """A _SlotGroup as a gymnasium.Env, so that AsyncVectorEnv can run groups in worker processes.

    Episode bookkeeping lives inside (the group resets its slots itself), so the vector env must never
    autoreset: we never report terminated/truncated, and the results travel in ``info``.
    """

    def __init__(self, env_cfg: EnvConfig, assignment: list[list[int]], seeds: list[int]) -> None:
        self._cfg = env_cfg
        self._assignment = assignment
        self._seeds = seeds
        m = len(assignment)
        shape = (m, env_cfg.image_channels, env_cfg.frame_size, env_cfg.frame_size)
        if env_cfg.float_frames:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        else:
            self.observation_space = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        # Only the shape matters for batching; the real action range is checked by AtariEnv.
        self.action_space = gym.spaces.MultiDiscrete(np.full(m, 1 << 16))
        self._group: _SlotGroup | None = None

    def _info(self, finished: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        assert self._group is not None
        return {"active": self._group.active(), "finished": finished, "score": scores}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if self._group is not None:
            self._group.close()
        self._group = _SlotGroup(self._cfg, self._assignment, self._seeds)
        m = len(self._assignment)
        return self._group.observations(), self._info(np.full(m, -1), np.zeros(m))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self._group is not None
        finished, scores = self._group.step(action)
        return self._group.observations(), 0.0, False, False, self._info(finished, scores)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()


def _make_group_env(env_cfg: EnvConfig, assignment: list[list[int]], seeds: list[int]) -> _GroupGymEnv:
    return _GroupGymEnv(env_cfg, assignment, seeds)


def _check_actions(actions: np.ndarray, n: int) -> np.ndarray:
    actions = np.asarray(actions).reshape(-1)
    if actions.shape[0] != n:
        raise ValueError(f"policy returned {actions.shape[0]} actions for {n} observations")
    return actions.astype(np.int64)


def _run_sync(
    env_cfg: EnvConfig,
    policy: Policy | RecurrentPolicy,
    assignment: list[list[int]],
    seeds: list[int],
    achievements: dict[int, list[str]] | None = None,
) -> dict[int, float]:
    group = _SlotGroup(env_cfg, assignment, seeds)
    results: dict[int, float] = {}
    recurrent = is_recurrent(policy)
    try:
        active = group.active()
        while active.any():
            obs = group.observations()[active]
            slots = np.flatnonzero(active)
            actions = np.zeros(len(group.slots), dtype=np.int64)
            chosen = policy(obs, slots) if recurrent else policy(obs)  # type: ignore[call-arg]
            actions[active] = _check_actions(chosen, int(active.sum()))
            finished, scores = group.step(actions)
            if recurrent:
                rewards = np.array([group.slots[i].last_reward for i in slots])
                policy.observe(slots, rewards, finished[slots] >= 0)  # type: ignore[union-attr]
            for k, s in zip(finished, scores, strict=True):
                if k >= 0:
                    results[int(k)] = float(s)
            active = group.active()
        if achievements is not None:
            for slot in group.slots:
                achievements.update(slot.achievements)
    finally:
        group.close()
    return results


def _run_async(
    env_cfg: EnvConfig,
    policy: Policy,
    assignment: list[list[int]],
    seeds: list[int],
    num_workers: int,
) -> dict[int, float]:
    import functools

    # Slot i goes to worker i % num_workers, so the workers carry (almost) the same number of slots.
    workers = [list(range(w, len(assignment), num_workers)) for w in range(num_workers)]
    workers = [w for w in workers if w]
    # Pad every group to the same number of slots (AsyncVectorEnv needs one observation shape);
    # padding slots have no episodes and stay inactive.
    m = max(len(w) for w in workers)
    fns = [
        functools.partial(
            _make_group_env,
            env_cfg,
            [assignment[i] for i in w] + [[]] * (m - len(w)),
            [seeds[i] for i in w] + [0] * (m - len(w)),
        )
        for w in workers
    ]
    # forkserver: workers do not inherit the parent's threads (torch, CUDA), unlike fork.
    venv = gym.vector.AsyncVectorEnv(
        fns, context="forkserver", autoreset_mode=gym.vector.AutoresetMode.DISABLED
    )
    results: dict[int, float] = {}
    try:
        obs, info = venv.reset()
        active = np.asarray(info["active"], dtype=bool)  # (workers, m)
        while active.any():
            flat_active = active.reshape(-1)
            flat_obs = obs.reshape(-1, *obs.shape[2:])
            actions = np.zeros(flat_active.shape[0], dtype=np.int64)
            actions[flat_active] = _check_actions(policy(flat_obs[flat_active]), int(flat_active.sum()))
            obs, _, _, _, info = venv.step(actions.reshape(active.shape))
            for k, s in zip(np.ravel(info["finished"]), np.ravel(info["score"]), strict=True):
                if k >= 0:
                    results[int(k)] = float(s)
            active = np.asarray(info["active"], dtype=bool)
    finally:
        venv.close()
    return results


def default_backend(env_cfg: EnvConfig, num_envs: int) -> Literal["sync", "async"]:
    """The faster exact backend here (measurements in the module docstring).

    Atari steps cost ~0.4 ms of emulation each, so with 2+ CPUs and 2+ slots worker processes pay off
    (~0.3 s to start them); the other families stay in process (catch and MinAtar step in
    microseconds; Crafter episodes report their achievements, which only the in-process path returns).
    """
    if game_family(env_cfg.game) != "atari" or num_envs < 2:
        return "sync"
    return "async" if usable_cpus() >= 2 else "sync"


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which os.cpu_count ignores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def is_recurrent(policy: Policy | RecurrentPolicy) -> bool:
    return callable(getattr(policy, "observe", None))


def evaluate_episodes(
    env_cfg: EnvConfig,
    policy: Policy | RecurrentPolicy,
    num_episodes: int,
    num_envs: int,
    seed: int,
    backend: Backend = "auto",
    num_workers: int | None = None,
    achievements: dict[int, list[str]] | None = None,
) -> list[float]:
    """Raw game scores of ``num_episodes`` eval episodes, in episode order (see the module docstring).

    ``achievements``, if given, receives episode index -> achievements unlocked (Crafter, "sync" only).
    """
    if num_episodes < 1 or num_envs < 1:
        raise ValueError("num_episodes and num_envs must be positive")
    num_envs = min(num_envs, num_episodes)  # more slots than episodes would only sit idle
    seeds = slot_seeds(seed, num_envs)
    assignment = assign_episodes(num_episodes, num_envs)
    if backend == "auto":
        backend = "sync" if is_recurrent(policy) else default_backend(env_cfg, num_envs)
    if backend == "async" and is_recurrent(policy):
        raise ValueError("a recurrent policy runs with the 'sync' backend only")
    if backend == "sync":
        results = _run_sync(env_cfg, policy, assignment, seeds, achievements)
    elif backend == "async":
        if num_workers is None:
            num_workers = usable_cpus()
        plain: Policy = policy  # type: ignore[assignment]
        results = _run_async(env_cfg, plain, assignment, seeds, max(1, min(num_workers, num_envs)))
    else:
        raise ValueError(f"unknown backend {backend!r}; valid: auto, sync, async")
    return [results[k] for k in range(num_episodes)]
