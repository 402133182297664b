"""Evaluating a policy on the eval protocol (docs/method.md, "The Atari 100k protocol"): full games, sampled actions.

``evaluate_agent`` runs ``num_episodes`` eval episodes with ``twm.envs.vector.evaluate_episodes``
(fixed episode-to-slot assignment, so the scores do not depend on timing) and aggregates them.
The agent's action sampling uses its own ``torch.Generator`` seeded with ``seed``, so an evaluation
neither consumes nor depends on the training run's random streams, and the same checkpoint, seed
and episode count give the same scores on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch

from twm.acting import ActingMemory
from twm.config import EVAL_POLICIES, EvalPolicy
from twm.envs import make_env
from twm.envs.crafter import crafter_score, success_rates
from twm.envs.vector import Policy, RecurrentPolicy, evaluate_episodes
from twm.games import CRAFTER_GAME, human_normalized_score, random_normalized_score, resolve_game
from twm.seeding import torch_generator

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import EnvConfig
    from twm.replay import ReplayBuffer
    from twm.training.logger import MetricsLogger

MAX_EPISODE_STEPS = 27_000  # the Atari time limit: a played episode that never ends stops here


def check_eval_policy(policy: str) -> EvalPolicy:
    """``policy`` if it is one of EVAL_POLICIES, else ValueError."""
    if policy not in EVAL_POLICIES:
        raise ValueError(f"the evaluation policy must be one of {', '.join(EVAL_POLICIES)}; got {policy!r}")
    return cast(EvalPolicy, policy)


# Ten slots: a periodic evaluation (10 episodes in the paper) is one lockstep round, and 100 final
# episodes split evenly over the slots, so no slot plays a longer tail alone.
DEFAULT_EVAL_ENVS = 10


class Acting(Protocol):
    """What evaluation needs of an agent (``twm.agent.Agent`` or a scripted stand-in)."""

    def act(
        self,
        obs: np.ndarray,
        generator: torch.Generator | None = None,
        memory: ActingMemory | None = None,
        greedy: bool = False,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class EvalResult:
    """Raw game scores of an evaluation and their aggregates (std is the population std, ddof=0).

    ``hns`` is the human-normalized score of the mean (equal to the mean of per-episode hns, the map
    being affine); None for games without human scores. ``random_ratio`` is the mean over our measured
    random-policy score (twm.games.random_normalized_score; MinAtar, Crafter), else None.
    Crafter only: ``achievements`` (per episode, what it unlocked), ``success_rates`` (% of episodes,
    per achievement) and ``crafter_score`` (their geometric-mean score, %); None elsewhere.
    """

    scores: list[float]
    mean: float
    std: float
    min: float
    max: float
    hns: float | None
    random_ratio: float | None = None
    achievements: list[list[str]] | None = None
    success_rates: dict[str, float] | None = None
    crafter_score: float | None = None

    @classmethod
    def from_scores(
        cls, game: str, scores: list[float], achievements: list[list[str]] | None = None
    ) -> EvalResult:
        if not scores:
            raise ValueError("an evaluation needs at least one episode")
        arr = np.asarray(scores, dtype=np.float64)
        mean = float(arr.mean())
        game = resolve_game(game)
        unlocked: list[list[str]] | None = None
        rates: dict[str, float] | None = None
        score: float | None = None
        if achievements is not None:
            unlocked = [sorted(a) for a in achievements]
            rates = success_rates(achievements)
            score = crafter_score(achievements)
        return cls(
            scores=[float(s) for s in scores],
            mean=mean,
            std=float(arr.std()),
            min=float(arr.min()),
            max=float(arr.max()),
            hns=human_normalized_score(game, mean),
            random_ratio=random_normalized_score(game, mean),
            achievements=unlocked,
            success_rates=rates,
            crafter_score=score,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalEvent:
    """What a hook called after each periodic evaluation of a training run gets (``Trainer(on_eval=)``)."""

    agent: Agent
    replay: ReplayBuffer
    run_dir: Path
    interactions: int
    logger: MetricsLogger
    action_meanings: list[str]


class _RecurrentAgent:
    """An agent whose policy reads h, as a ``RecurrentPolicy``: one acting-memory row per active slot."""

    def __init__(self, agent: Acting, generator: torch.Generator, memory: ActingMemory, greedy: bool) -> None:
        self.agent, self.generator, self.memory, self.greedy = agent, generator, memory, greedy
        self.rows = np.arange(memory.rows)  # the slot of each memory row

    def __call__(self, obs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        if not np.array_equal(slots, self.rows):  # slots that finished their share leave
            self.memory.keep(np.searchsorted(self.rows, slots))
            self.rows = slots.copy()
        return np.asarray(self.agent.act(obs, self.generator, self.memory, self.greedy))

    def observe(self, slots: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        self.memory.record(rewards, dones)


def evaluate_agent(
    agent: Acting,
    env_cfg: EnvConfig,
    num_episodes: int,
    seed: int,
    num_envs: int = DEFAULT_EVAL_ENVS,
    policy: EvalPolicy = "sample",
) -> EvalResult:
    """Scores of ``num_episodes`` eval-mode games played by ``agent.act``: sampled actions, or with
    ``policy`` 'mode' the policy's most likely ones (``train.eval_policy``)."""
    greedy = check_eval_policy(policy) == "mode"
    device = getattr(agent, "device", torch.device("cpu"))
    generator = torch_generator(seed, device)  # acting samples on the agent's device
    num_envs = max(1, min(num_envs, num_episodes))
    memory_of = getattr(agent, "acting_memory", None)
    memory = memory_of(num_envs) if memory_of is not None else None

    def plain_policy(obs: np.ndarray) -> np.ndarray:
        return np.asarray(agent.act(obs, generator, greedy=greedy))

    acting: Policy | RecurrentPolicy = (
        plain_policy if memory is None else _RecurrentAgent(agent, generator, memory, greedy)
    )
    if resolve_game(env_cfg.game) != CRAFTER_GAME:
        return EvalResult.from_scores(env_cfg.game, evaluate_episodes(env_cfg, acting, num_episodes, num_envs, seed))
    unlocked: dict[int, list[str]] = {}
    scores = evaluate_episodes(env_cfg, acting, num_episodes, num_envs, seed, "sync", achievements=unlocked)
    return EvalResult.from_scores(env_cfg.game, scores, [unlocked[k] for k in range(num_episodes)])


@dataclass(frozen=True)
class PlayedStep:
    """One real step of ``play_episode``."""

    obs: np.ndarray  # the observation the action was chosen on
    action: int
    reward: float  # the reward the agent learns from
    raw_reward: float  # the game's
    score: float  # raw rewards so far, this step's included
    done: bool
    next_obs: np.ndarray
    seen: Any = None  # what ``look`` returned for ``obs``, before the action


def play_episode(
    agent: Agent,
    env_cfg: EnvConfig,
    seed: int,
    max_steps: int = MAX_EPISODE_STEPS,
    look: Callable[[np.ndarray, ActingMemory | None], Any] | None = None,
    policy: EvalPolicy = "sample",
) -> Iterator[PlayedStep]:
    """One eval-mode game, step by step, as ``twm eval --video`` and ``--trace`` show it: the
    environment and the agent's action sampling both seeded with ``seed``, the agent in eval mode.
    ``look(obs[None], memory)`` is called before each action (it must draw nothing and leave the
    memory alone, as ``Agent.policy_view``); its result comes back as ``PlayedStep.seen``. ``policy``
    'mode' takes the policy's most likely actions (as ``evaluate_agent``)."""
    greedy = check_eval_policy(policy) == "mode"
    generator = torch_generator(seed, agent.device)
    memory = agent.acting_memory(1)
    env = make_env(env_cfg, "eval", seed)
    was_training = agent.training
    agent.eval()
    try:
        obs, _ = env.reset()
        score, steps, done = 0.0, 0, False
        while not done and steps < max_steps:
            seen = None if look is None else look(obs[None], memory)
            action = int(np.asarray(agent.act(obs[None], generator, memory, greedy))[0])
            next_obs, reward, terminated, truncated, info = env.step(action)
            raw = float(info.get("raw_reward", reward))
            score += raw
            steps += 1
            done = bool(terminated or truncated)
            if memory is not None:
                memory.record([float(reward)], [done])
            yield PlayedStep(obs, action, float(reward), raw, score, done, next_obs, seen)
            obs = next_obs
    finally:
        env.close()
        agent.train(was_training)
