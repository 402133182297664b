"""Crafter (Hafner 2021): an open-world survival game with 22 achievements, as a PixelSource.

``crafter`` (the ``crafter`` package, ``pip install 'twm[envs]'``): 64x64 RGB pictures (use
``env.color=true``; grayscale works too), 17 actions, episodes of at most 10,000 steps. Dying ends an
episode with ``terminated``; reaching 10,000 steps with ``truncated``. Rewards are Crafter's: +1 the
first time each achievement is unlocked in an episode, and +-0.1 per health point gained or lost.

At every episode end ``info["achievements"]`` lists the achievements unlocked in that episode (it is
set on every step: so far in the episode).
The Crafter score (``crafter_score``) is the paper's: with s_i the percentage of episodes in which
achievement i was unlocked at least once, S = exp(mean_i ln(1 + s_i)) - 1, over all 22 achievements.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from twm.envs.pixel import EnvError, PickledGameState

# crafter.constants.achievements (fixed by the game's data.yaml), so scoring needs no crafter import.
ACHIEVEMENTS = (
    "collect_coal",
    "collect_diamond",
    "collect_drink",
    "collect_iron",
    "collect_sapling",
    "collect_stone",
    "collect_wood",
    "defeat_skeleton",
    "defeat_zombie",
    "eat_cow",
    "eat_plant",
    "make_iron_pickaxe",
    "make_iron_sword",
    "make_stone_pickaxe",
    "make_stone_sword",
    "make_wood_pickaxe",
    "make_wood_sword",
    "place_furnace",
    "place_plant",
    "place_stone",
    "place_table",
    "wake_up",
)
EPISODE_LENGTH = 10_000


def success_rates(episodes: Sequence[Iterable[str]]) -> dict[str, float]:
    """Percentage of episodes in which each achievement was unlocked at least once."""
    if not episodes:
        raise ValueError("success rates need at least one episode")
    sets = [set(e) for e in episodes]
    return {name: 100.0 * sum(name in s for s in sets) / len(sets) for name in ACHIEVEMENTS}


def crafter_score(episodes: Sequence[Iterable[str]]) -> float:
    """The Crafter score in %: exp(mean ln(1 + s_i)) - 1 over the 22 success rates s_i in %."""
    return score_of_rates(success_rates(episodes))


def score_of_rates(rates: dict[str, float]) -> float:
    """The Crafter score in % of the 22 success rates (in %)."""
    return math.exp(sum(math.log1p(rates[name]) for name in ACHIEVEMENTS) / len(ACHIEVEMENTS)) - 1.0


class AchievementTally:
    """Success rates over every game of a run so far, kept as counts (the Crafter paper's score is
    over all training episodes within the budget, not over evaluation episodes)."""

    def __init__(self) -> None:
        self.games = 0
        self.counts = dict.fromkeys(ACHIEVEMENTS, 0)

    def add(self, unlocked: Iterable[str]) -> None:
        """One finished game and what it unlocked (each achievement counts once per game)."""
        self.games += 1
        for name in set(unlocked):
            self.counts[name] = self.counts.get(name, 0) + 1

    def success_rates(self) -> dict[str, float]:
        if self.games == 0:
            raise ValueError("success rates need at least one game")
        return {name: 100.0 * self.counts[name] / self.games for name in ACHIEVEMENTS}

    def score(self) -> float:
        return score_of_rates(self.success_rates())

    def state_dict(self) -> dict[str, Any]:
        return {"games": self.games, "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.games = int(state["games"])
        self.counts = {**dict.fromkeys(ACHIEVEMENTS, 0), **{k: int(v) for k, v in state["counts"].items()}}


def import_crafter() -> Any:
    try:
        import crafter
    except ImportError:
        raise EnvError(
            "crafter needs the crafter package: pip install 'twm[envs]' (or pip install crafter)"
        ) from None
    return crafter


class InsertionOrderedSet:
    """A set iterated in insertion order, for the objects of one Crafter chunk.

    crafter keeps each chunk's objects in a ``set``, which iterates in ``id()`` (memory address)
    order, and its despawning picks ``creatures[random index]`` from that order: two runs with one
    seed diverged once a chunk held two creatures of a kind. With this set the choice depends on
    the seed alone; which creatures can be picked, and with what probability, is unchanged.
    """

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = dict.fromkeys(items)

    def add(self, item: Any) -> None:
        self._items[item] = None

    def remove(self, item: Any) -> None:
        del self._items[item]

    def __contains__(self, item: Any) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)  # like a set, it must not change while iterated (crafter does not)

    def __len__(self) -> int:
        return len(self._items)


def order_chunks(world: Any) -> None:
    """Replace the chunk sets of a freshly reset crafter ``World`` by ``InsertionOrderedSet``s.

    The world generator has already filled them; their objects are put in the order they were
    added to the world (their index in ``world._objects``), which the seed fixes.
    """
    index = world._obj_map
    world._chunks = collections.defaultdict(
        InsertionOrderedSet,
        {
            key: InsertionOrderedSet(sorted(objs, key=lambda obj: int(index[tuple(obj.pos)])))
            for key, objs in world._chunks.items()
        },
    )


class CrafterSource(PickledGameState):
    """Crafter as a PixelSource (see the module docstring)."""

    # The classes a saved game may rebuild (twm.envs.saved_state): crafter's and the chunk set.
    game_packages = ("crafter", "twm.envs.crafter")

    def __init__(self, seed: int) -> None:
        crafter = import_crafter()
        world_seed = int(np.random.SeedSequence(seed).generate_state(1)[0]) & 0x7FFFFFFF
        self._env = crafter.Env(size=(64, 64), length=EPISODE_LENGTH, seed=world_seed)
        self.action_meanings = [a.upper() for a in crafter.constants.actions]
        self.num_actions = len(self.action_meanings)

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        obs = self._env.reset()
        order_chunks(self._env._world)  # a run is a function of its seed (InsertionOrderedSet)
        return obs, {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, done, info = self._env.step(int(action))
        terminated = bool(done and info["discount"] == 0)  # the player died
        truncated = bool(done and not terminated)  # the 10,000 steps are up
        # On every step, not only when crafter says done: env.time_limit (PixelEnv) may end the
        # episode first, and every episode end must report what it unlocked.
        out: dict[str, Any] = {"achievements": sorted(k for k, v in info["achievements"].items() if v > 0)}
        return obs, float(reward), terminated, truncated, out
