"""The Python API: train, load, act, evaluate and dream from a script or a notebook.

    import twm

    result = twm.train("catch", preset="smoke", dynamics={"layers": 2}, run_dir="runs/catch")
    agent = twm.load(result.run_dir)
    print(agent.evaluate(episodes=5).mean)
    agent.dream("dream.gif", horizon=10)

``twm.train`` runs exactly what ``twm train`` runs (same config layering, run folder, checkpoints,
metrics and evaluation images); it returns a ``RunResult``. Overrides are keyword arguments: a config
section as a mapping (``train={"total_steps": 2000}``) or dotted keys (``**{"train.seed": 3}``), and
``settings`` takes ``--set`` strings. ``env_fn`` is a callable that builds a Gymnasium environment
(any object with ``reset``/``step``, image observations and discrete actions, or one made suitable
with ``env={"wrappers": ...}``); it is registered in Gymnasium's registry for this process under
``twm_api/<name>-v0`` and the run's config names that id. ``callbacks`` are called with a
``RunEvent`` for each metric line and each evaluation; one that returns True stops the run at the
next safe point (a checkpoint is written; ``twm.train(resume=run_dir)`` continues it).

No process-wide side effects unless asked: no allocator switch (``keep_freed_memory=True`` asks for
it), Python warnings stay Python warnings. Progress goes to stderr as on the command line (bars on a
terminal, a plain status line every ``train.status_seconds`` elsewhere, e.g. in a notebook);
``progress=False`` turns it off. SIGINT/SIGTERM
handlers are installed only while a run is in progress, so an interrupt (a notebook's stop button)
stops the run cleanly with a checkpoint, as on the command line.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from twm.config import Config, ConfigError, EvalPolicy
from twm.config_files import load_config
from twm.games import run_name

if TYPE_CHECKING:
    import torch

    from twm.agent import Agent
    from twm.envs import Env
    from twm.training.evaluation import EvalResult

__all__ = ["RunEvent", "RunResult", "TrainedAgent", "load", "register_env_fn", "train"]

USER_NAMESPACE = "twm_api"
_counter = itertools.count()


@dataclass(frozen=True)
class RunEvent:
    """What a callback of ``twm.train`` gets: a metric line (``kind="log"``) or an evaluation
    (``kind="eval"``, its line has ``eval/mean_score`` etc.), at ``step`` interactions."""

    kind: Literal["log", "eval"]
    step: int
    metrics: dict[str, float]
    run_dir: Path


Callback = Callable[[RunEvent], bool | None]


@dataclass
class RunResult:
    """A finished (or stopped) run: its folder and ``eval/final.json`` (None when it was stopped)."""

    run_dir: Path
    summary: dict[str, Any] | None
    stopped: str | None = None  # why it stopped early, if it did
    env_fn: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def mean(self) -> float | None:
        return None if self.summary is None else float(self.summary["mean"])

    @property
    def scores(self) -> list[float]:
        return [] if self.summary is None else list(self.summary["scores"])

    @property
    def hns(self) -> float | None:
        return None if self.summary is None else self.summary.get("hns")

    def load(self, **options: Any) -> TrainedAgent:
        """The trained agent (``twm.load`` of this run folder)."""
        return load(self.run_dir, env_fn=self.env_fn, **options)


def register_env_fn(env_fn: Callable[..., Any], name: str | None = None) -> str:
    """Register ``env_fn`` in Gymnasium's registry (this process); the ``gym:`` game name that makes it."""
    import gymnasium as gym

    if not callable(env_fn):
        raise ConfigError(
            f"env_fn must be a function that returns a new environment on each call (twm makes one for "
            f"training and others for each evaluation); got a {type(env_fn).__name__}"
        )
    base = name or getattr(env_fn, "__name__", "") or type(env_fn).__name__
    base = re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "env"
    for spec in gym.registry.values():  # the same callable again: the same id
        if spec.namespace == USER_NAMESPACE and spec.entry_point is env_fn:
            return f"gym:{spec.id}"
    env_id = f"{USER_NAMESPACE}/{base}-v0"
    while env_id in gym.registry:
        env_id = f"{USER_NAMESPACE}/{base}{next(_counter)}-v0"
    gym.register(id=env_id, entry_point=env_fn)
    return f"gym:{env_id}"


def _config(
    game: str | None,
    preset: str,
    config_file: str | Path | None,
    settings: Iterable[str],
    overrides: Mapping[str, Any],
) -> Config:
    """As ``twm train``: the preset, the config file, ``settings`` (``--set`` strings, the game first),
    then the keyword ``overrides`` (a section as a mapping, or a dotted key), validated once."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if "." in key:
            section, sub = key.split(".", 1)
            sections.setdefault(section, {})[sub] = value
        elif isinstance(value, Mapping):
            sections.setdefault(key, {}).update(value)
        else:
            raise ConfigError(
                f"twm.train: {key}={value!r} is neither a config section given as a mapping "
                "(dynamics={'layers': 4}) nor a dotted key ('train.seed')"
            )
    dotted = [*([f"env.game={game}"] if game is not None else []), *settings]
    return load_config(preset, dotted, config_file, sections)


def train(
    game: str | None = None,
    *,
    preset: str = "atari100k",
    run_dir: str | Path | None = None,
    env_fn: Callable[..., Any] | None = None,
    callbacks: Sequence[Callback] = (),
    config_file: str | Path | None = None,
    settings: Iterable[str] = (),
    device: str | None = None,
    resume: str | Path | None = None,
    eval_images: bool = True,
    progress: bool = True,
    keep_freed_memory: bool = False,
    **overrides: Any,
) -> RunResult:
    """Train one run as ``twm train`` does; see the module docstring.

    ``game`` is any game name of ``twm games`` (or None with ``env_fn`` or a config file that sets
    ``env.game``); ``run_dir`` defaults to ``runs/<game>-<preset>-s<seed>-<time>``; ``resume``
    continues the run in that folder instead (its own config; ``device`` may differ).
    Raises ConfigError, EnvError or UnknownGameError (one-line messages) for bad input.
    """
    from twm.envs import check_env
    from twm.training.logger import check_loggers
    from twm.training.stops import TrainingStopped
    from twm.training.trainer import Trainer
    from twm.viz.eval_images import eval_images_hook

    holder: dict[str, Trainer] = {}

    def on_log(step: int, values: dict[str, float]) -> None:
        kind: Literal["log", "eval"] = "eval" if "eval/mean_score" in values else "log"
        event = RunEvent(kind, step, values, holder["trainer"].run_dir)
        if any(callback(event) for callback in callbacks):
            holder["trainer"].request_stop()

    options: dict[str, Any] = {"on_eval": eval_images_hook if eval_images else None, "on_log": on_log}
    if resume is not None:
        if env_fn is not None:
            register_env_fn(env_fn)
        trainer = Trainer.resume(resume, device=device, progress=progress, **options)
    else:
        if env_fn is not None:
            if game is not None:
                raise ConfigError("twm.train: give a game name or env_fn, not both")
            game = register_env_fn(env_fn)
        cfg = _config(game, preset, config_file, settings, overrides)
        check_env(cfg.env)
        check_loggers(cfg.train.loggers)
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path("runs") / f"{run_name(cfg.env.game)}-{preset}-s{cfg.train.seed}-{stamp}"
        trainer = Trainer(cfg, run_dir, device, progress, preset=preset, **options)
    holder["trainer"] = trainer
    if keep_freed_memory and trainer.cfg.train.keep_freed_memory:
        from twm.allocator import keep_freed_memory as keep

        keep()
    try:
        summary = trainer.run()
    except TrainingStopped as exc:
        return RunResult(trainer.run_dir, None, stopped=str(exc).replace("by SIGINT ", ""), env_fn=env_fn)
    return RunResult(Path(summary["run_dir"]), summary, env_fn=env_fn)


class TrainedAgent:
    """A trained agent of a run folder: ``act``, ``evaluate``, ``dream`` (see ``twm.load``)."""

    def __init__(
        self, agent: Agent, cfg: Config, run_dir: Path | None, checkpoint: Path, seed: int = 0
    ) -> None:
        from twm.seeding import torch_generator

        self.agent, self.cfg, self.run_dir, self.checkpoint = agent, cfg, run_dir, checkpoint
        self.generator = torch_generator(seed, agent.device)
        self.memory = agent.acting_memory(1)

    @property
    def num_actions(self) -> int:
        return int(self.agent.num_actions)

    def make_env(self, mode: Literal["train", "eval"] = "eval", seed: int = 0) -> Env:
        """The run's environment (observations as ``act`` reads them)."""
        from twm.envs import make_env

        return make_env(self.cfg.env, mode, seed)

    def act(self, obs: np.ndarray) -> int | np.ndarray:
        """The action for one observation (frame_stack * c, 64, 64) uint8 (as the run's environment
        gives it: (frame_stack * n, 1, 1) float32 for vectors), or actions for a batch.

        Actions are sampled from the policy with this agent's own generator. A policy that reads
        the transformer's memory (``actor_critic`` with h) needs ``observe(reward, done)`` after
        each step of a single environment.
        """
        obs = np.asarray(obs, dtype=self.cfg.env.frame_dtype)
        single = obs.ndim == 3
        memory = self.memory if single else None
        actions = np.asarray(self.agent.act(obs[None] if single else obs, self.generator, memory))
        return int(actions[0]) if single else actions

    def observe(self, reward: float, done: bool) -> None:
        """The reward and episode end of the step just taken (only policies with memory need it)."""
        if self.memory is not None:
            self.memory.record([float(reward)], [bool(done)])

    def evaluate(
        self,
        episodes: int = 10,
        seed: int | None = None,
        video: str | Path | None = None,
        policy: EvalPolicy | None = None,
    ) -> EvalResult:
        """Scores of ``episodes`` eval-mode games (the run's final-evaluation seed by default);
        ``video`` also writes one more episode as an .mp4 or .gif. ``policy`` 'sample' draws the
        actions from the policy, 'mode' takes its most likely ones (default: the run's
        ``train.eval_policy``)."""
        from twm.seeding import final_eval_seed
        from twm.training.evaluation import check_eval_policy, evaluate_agent

        seed = final_eval_seed(self.cfg.train.seed) if seed is None else seed
        acting = check_eval_policy(policy or self.cfg.train.eval_policy)
        result = evaluate_agent(self.agent, self.cfg.env, episodes, seed, policy=acting)
        if video is not None:
            from twm.viz.video import record_episode

            record_episode(self.agent, self.cfg.env, video, seed, policy=acting)
        return result

    def trace(self, seed: int | None = None, out: str | Path | None = None) -> list[dict[str, Any]]:
        """One eval episode step by step (``twm eval --trace``): per step the action, the policy's
        probability of every action, the critic's value, rewards and the running score; also
        written as CSV to ``out`` if given. The run's final-evaluation seed by default."""
        from twm.analysis.trace import trace_episode, write_trace
        from twm.seeding import final_eval_seed

        seed = final_eval_seed(self.cfg.train.seed) if seed is None else seed
        rows = trace_episode(self.agent, self.cfg.env, seed)
        if out is not None:
            write_trace(rows, out)
        return rows

    def dream(self, out: str | Path, **options: Any) -> dict[str, Any]:
        """``twm dream`` of this run into ``out`` (.gif or .mp4); options as ``twm.viz.run_dream``."""
        from twm.viz import run_dream

        where = self.run_dir if self.run_dir is not None else self.checkpoint
        checkpoint = self.checkpoint if self.run_dir is not None else None
        return run_dream(where, out, checkpoint=checkpoint, device=self.agent.device, **options)


def load(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    env_fn: Callable[..., Any] | None = None,
    seed: int = 0,
) -> TrainedAgent:
    """The agent of a run folder (``checkpoints/final.pt``, or ``checkpoint``: a file, or 'latest' for
    the newest resume checkpoint of an unfinished run). ``env_fn``: the function a run trained with
    ``twm.train(env_fn=...)`` was given, needed in a new process to evaluate it."""
    from twm.run_dir import RunDir
    from twm.viz.commands import load_run

    if env_fn is not None:
        register_env_fn(env_fn)
    if checkpoint == "latest":
        folder = RunDir(run_dir)
        name = folder.latest_checkpoint_name()
        found = sorted(folder.resume_checkpoints(), key=lambda p: p.name)
        checkpoint = folder.checkpoints / name if name else (found[-1] if found else None)
        if checkpoint is None:
            raise FileNotFoundError(f"{run_dir} has no resume checkpoint yet")
    run = load_run(run_dir, checkpoint, device)
    return TrainedAgent(run.agent, run.cfg, run.run_dir, run.checkpoint, seed)
