"""The training loop of SPEC.md section 4: prefill, pretraining, then act / update / evaluate.

``Trainer(cfg, run_dir).run()`` performs one run and leaves in ``run_dir``:

- ``config.yaml``: the full resolved config, written before anything else;
- ``metrics.jsonl`` and ``tensorboard/``: one line per logged step (``MetricsLogger``);
- ``checkpoints/final.pt``: the agent at the end (``twm.training.checkpoint``);
- ``eval/final.json``: the final evaluation (scores, mean, std, hns, interactions, wall time).

Schedule (all steps count agent interactions, the prefill included)
    1. ``prefill_steps`` uniformly random actions;
    2. pretraining on the prefill (the released code's phases: observation model, dynamics model,
       actor-critic on real sequences), logged at step ``prefill_steps`` under ``pretrain/...``;
    3. an evaluation of ``eval_episodes`` at step ``prefill_steps``;
    4. until ``total_steps``: act with the policy, add the step to the replay buffer, and do one update
       each time a float counter (+1 per interaction) reaches ``cfg.steps_per_update``; this spreads
       ``cfg.num_updates`` updates evenly over the interactions (0.76 interactions per update in the
       paper) without rounding drift; evaluations every ``eval_interval`` interactions;
    5. the final checkpoint, then ``final_eval_episodes`` evaluation episodes at ``total_steps``.

Reproducibility
    Every random stream is derived from ``cfg.train.seed``: python ``random``, numpy's global state,
    ``torch.manual_seed`` (weight init, dropout), the train env, the replay buffer's sampler, the
    prefill actions, the agent's sampling generator and one generator per evaluation (``derive_seed``).
    On the CPU two runs with the same config are identical apart from wall-clock fields
    (``TIME_KEYS``). On a GPU kernels are not bitwise deterministic, so runs only agree statistically.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from twm import __version__
from twm.config import Config
from twm.envs import Env, make_env
from twm.models.world_model import TorchSequenceBatch
from twm.replay import ReplayBuffer
from twm.training.checkpoint import CHECKPOINT_DIR, FINAL_CHECKPOINT, save_checkpoint
from twm.training.evaluation import DEFAULT_EVAL_ENVS, EvalResult, evaluate_agent
from twm.training.logger import MetricsLogger, create_run_dir

# Fields of metrics.jsonl that measure wall-clock time; everything else is a function of the seed.
TIME_KEYS = frozenset({"time", "charts/updates_per_second", "charts/steps_per_second", "eval/seconds"})

# Lines logged per pretraining phase (each the mean over its chunk of steps).
PRETRAIN_LOG_LINES = 10


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine (a one-line message)."""


class Stream(IntEnum):
    """Independent random streams of a run, derived from its seed (``derive_seed``)."""

    TRAIN_ENV = 0
    REPLAY = 1
    PREFILL_ACTIONS = 2
    AGENT = 3
    EVAL = 4
    FINAL_EVAL = 5


def derive_seed(seed: int, stream: Stream, index: int = 0) -> int:
    """A 32-bit seed for ``stream`` (and e.g. the eval ``index``), independent of the others.

    SeedSequence hashes its whole entropy tuple, so nearby seeds and indices never give
    overlapping or correlated streams (unlike ``seed + index``).
    """
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0])


def final_eval_seed(seed: int) -> int:
    """The seed of a run's final evaluation (``twm eval`` uses it by default, to reproduce it)."""
    return derive_seed(seed, Stream.FINAL_EVAL)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without CUDA -> DeviceUnavailableError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def update_generator(device: torch.device, seed: int) -> torch.Generator:
    """The generator handed to ``Agent.update`` and the pretraining steps, on the agent's device."""
    return torch.Generator(device=device).manual_seed(seed)


class _MeanAccumulator:
    """Running means of metric dicts; sums stay tensors on their device so no step forces a sync."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Tensor]) -> None:
        for key, value in metrics.items():
            v = value.detach().float().mean() if isinstance(value, Tensor) else torch.tensor(float(value))
            self._sums[key] = self._sums[key] + v if key in self._sums else v
            self._counts[key] = self._counts.get(key, 0) + 1

    def __bool__(self) -> bool:
        return bool(self._counts)

    def pop(self, prefix: str = "") -> dict[str, float]:
        out = {prefix + k: float(s.item()) / self._counts[k] for k, s in self._sums.items()}
        self._sums.clear()
        self._counts.clear()
        return out


def pretrain_steps(cfg: Config) -> dict[str, int]:
    """Steps of each pretraining phase: its share of the pretrain budget / samples per batch."""
    t, r, ac = cfg.train, cfg.replay, cfg.actor_critic
    return {
        "obs": round(t.pretrain_budget * t.pretrain_obs_fraction / r.obs_batch_size),
        "dyn": round(t.pretrain_budget * t.pretrain_dyn_fraction / (r.batch_size * r.sequence_length)),
        "ac": round(t.pretrain_budget * t.pretrain_ac_fraction / (ac.num_starts * ac.horizon)),
    }


class Trainer:
    """One training run of ``cfg`` into a fresh ``run_dir`` (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        device: str | None = None,
        progress: bool = True,
        *,
        preset: str | None = None,
        eval_envs: int = DEFAULT_EVAL_ENVS,
    ) -> None:
        """``device`` (auto, cpu, cuda, cuda:N) defaults to ``cfg.train.device``.

        The device is checked before the run folder is created, so a bad request leaves nothing
        behind; an existing, non-empty ``run_dir`` raises ``RunDirExistsError``.
        """
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else cfg.train.device)
        self.progress = progress
        self.preset = preset
        self.eval_envs = eval_envs
        self.run_dir = create_run_dir(run_dir)
        # The config goes first: a run that dies later still says what it was.
        cfg.to_yaml(self.run_dir / "config.yaml")

        # Counters, readable from outside (the CLI reports them on Ctrl-C).
        self.interactions = 0
        self.updates = 0
        self.games = 0  # finished whole games (all lives) in the train env
        self.episodes = 0  # finished training episodes (life losses included) = done flags in the buffer
        self.last_eval: EvalResult | None = None
        self._num_evals = 0

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        """Train, evaluate, checkpoint; returns the contents of ``eval/final.json`` plus ``run_dir``."""
        start = time.time()
        cfg, t = self.cfg, self.cfg.train
        self._seed_everything(t.seed)

        self.env: Env = make_env(cfg.env, "train", derive_seed(t.seed, Stream.TRAIN_ENV))
        from twm.agent import Agent  # imported here: the agent pulls in every model module

        self.agent = Agent(cfg, self.env.num_actions).to(self.device)
        self.replay = ReplayBuffer.from_config(cfg, derive_seed(t.seed, Stream.REPLAY))
        self.act_generator = torch.Generator(device=self.device).manual_seed(
            derive_seed(t.seed, Stream.AGENT)
        )
        self.update_generator = update_generator(self.device, derive_seed(t.seed, Stream.AGENT, 1))
        self.logger = MetricsLogger(self.run_dir)
        self._train_metrics = _MeanAccumulator()
        self._game_scores: list[float] = []
        self._last_log = (time.time(), 0, 0)  # (time, interactions, updates) of the last metric line
        self._bar = self._make_bar()
        self._bar_info: dict[str, str] = {}  # postfix of the bar: updates/s, last eval score
        try:
            self.obs, _ = self.env.reset()
            self._prefill()
            self._pretrain()
            self._evaluate(t.eval_episodes, derive_seed(t.seed, Stream.EVAL, self._num_evals))
            self._train()
            self._save_final_checkpoint()
            self._bar.set_description("final eval")
            result = self._evaluate(t.final_eval_episodes, final_eval_seed(t.seed))
            summary = self._write_final(result, final_eval_seed(t.seed), time.time() - start)
        finally:
            self._bar.close()
            self.logger.close()
            self.env.close()
        return {**summary, "run_dir": str(self.run_dir)}

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        # Weight init and dropout use torch's global generator (CPU and, if present, all GPUs).
        torch.manual_seed(seed)

    # ------------------------------------------------------------------ phases

    def _prefill(self) -> None:
        rng = np.random.Generator(np.random.PCG64(derive_seed(self.cfg.train.seed, Stream.PREFILL_ACTIONS)))
        self._bar.set_description("prefill")
        while self.interactions < self.cfg.train.prefill_steps:
            self._env_step(int(rng.integers(self.env.num_actions)))
            self._after_step(train=False)

    def _pretrain(self) -> None:
        cfg, agent, replay, device = self.cfg, self.agent, self.replay, self.device
        gen = self.update_generator
        steps = pretrain_steps(cfg)
        r, ac = cfg.replay, cfg.actor_critic
        # The actor-critic batch needs num_starts distinct real sequences of horizon steps; a tiny
        # prefill may hold fewer (config validation only checks the world-model batch).
        ac_batch = min(ac.num_starts, replay.num_valid_starts(ac.horizon))

        def obs_step() -> dict[str, Tensor]:
            frames = torch.from_numpy(replay.sample_obs(r.obs_batch_size)).to(device)
            return agent.pretrain_obs_step(frames, gen)

        def dyn_step() -> dict[str, Tensor]:
            batch = replay.sample_sequences_uniform(r.batch_size, r.sequence_length)
            return agent.pretrain_dyn_step(TorchSequenceBatch.from_numpy(batch, device), gen)

        def ac_step() -> dict[str, Tensor]:
            batch = replay.sample_sequences_uniform(ac_batch, ac.horizon)
            return agent.pretrain_ac_step(TorchSequenceBatch.from_numpy(batch, device), gen)

        phases: list[tuple[str, Callable[[], dict[str, Tensor]]]] = [
            ("obs", obs_step),
            ("dyn", dyn_step),
            ("ac", ac_step),
        ]
        for name, step_fn in phases:
            n = steps[name]
            chunk = max(1, math.ceil(n / PRETRAIN_LOG_LINES))
            acc = _MeanAccumulator()
            for i in range(n):
                acc.add(step_fn())
                if (i + 1) % chunk == 0 or i + 1 == n:
                    self._bar.set_description(f"pretrain {name} {i + 1}/{n}")
                    # All pretraining happens at one interaction count; the iteration tells lines apart.
                    line = acc.pop(prefix="pretrain/")
                    line[f"pretrain/{name}/iteration"] = i + 1
                    self.logger.log(self.interactions, line)

    def _train(self) -> None:
        t = self.cfg.train
        steps_per_update = self.cfg.steps_per_update
        counter = 0.0
        self._bar.set_description("train")
        while self.interactions < t.total_steps:
            action = int(self.agent.act(self.obs[None], self.act_generator)[0])
            self._env_step(action)
            counter += 1.0
            while counter >= steps_per_update:
                counter -= steps_per_update
                self._update()
            self._after_step(train=True)
        self._update_counter = counter
        if self._last_log[1] != self.interactions:  # the last, partial logging window
            self._log_train()

    # ------------------------------------------------------------------ steps

    def _env_step(self, action: int) -> None:
        obs, reward, terminated, truncated, info = self.env.step(action)
        # The buffer stores the newest frame of the observation the action was taken in.
        self.replay.add(self.obs[-1], action, reward, terminated, truncated)
        if info.get("game_over"):
            self.games += 1
            self._game_scores.append(float(info["game_score"]))
        if terminated or truncated:
            self.episodes += 1
            # After a life loss this continues the same game (episodic lives); else a new game.
            obs, _ = self.env.reset()
        self.obs = obs
        self.interactions += 1

    def _after_step(self, train: bool) -> None:
        t = self.cfg.train
        self._bar.update(1)
        if self.interactions % t.log_interval == 0:
            self._log_train()
        # The evaluation at the end of training is the final one; during the prefill the policy is
        # untrained (the evaluation after pretraining stands for it).
        if train and self.interactions % t.eval_interval == 0 and self.interactions < t.total_steps:
            seed = derive_seed(t.seed, Stream.EVAL, self._num_evals)
            self._evaluate(t.eval_episodes, seed)

    def _sample_start_obs(self, n: int) -> Tensor:
        return torch.from_numpy(self.replay.sample_obs(n)).to(self.device)

    def _update(self) -> None:
        r = self.cfg.replay
        batch = self.replay.sample_sequences(r.batch_size, r.sequence_length)
        metrics = self.agent.update(
            TorchSequenceBatch.from_numpy(batch, self.device), self._sample_start_obs, self.update_generator
        )
        self._train_metrics.add(metrics)
        self.updates += 1

    # ------------------------------------------------------------------ logging, evaluation, output

    def _log_train(self) -> None:
        now = time.time()
        last_time, last_steps, last_updates = self._last_log
        elapsed = max(now - last_time, 1e-9)
        line: dict[str, float] = self._train_metrics.pop()
        line.update(
            {
                "charts/interactions": self.interactions,
                "charts/updates": self.updates,
                "charts/updates_per_second": (self.updates - last_updates) / elapsed,
                "charts/steps_per_second": (self.interactions - last_steps) / elapsed,
                "charts/games": self.games,
                "buffer/size": len(self.replay),
                "buffer/episodes": self.episodes,
            }
        )
        if self._game_scores:  # only when a game ended in this window; an empty mean is no score
            line["charts/episode_score"] = float(np.mean(self._game_scores))
            self._game_scores.clear()
        self.logger.log(self.interactions, line)
        self._last_log = (now, self.interactions, self.updates)
        if self.updates > last_updates:  # no rate to show during the prefill
            self._bar_info["upd/s"] = f"{line['charts/updates_per_second']:.1f}"
            self._bar.set_postfix(self._bar_info, refresh=False)

    def _evaluate(self, episodes: int, seed: int) -> EvalResult:
        start = time.time()
        result = evaluate_agent(self.agent, self.cfg.env, episodes, seed, self.eval_envs)
        line: dict[str, float] = {
            "eval/mean_score": result.mean,
            "eval/std_score": result.std,
            "eval/min_score": result.min,
            "eval/max_score": result.max,
            "eval/episodes": episodes,
            "eval/seconds": time.time() - start,
        }
        if result.hns is not None:
            line["eval/hns"] = result.hns
        self.logger.log(self.interactions, line)
        self.logger.flush()
        self.last_eval = result
        self._num_evals += 1
        self._bar_info["eval"] = f"{result.mean:.1f}"
        self._bar.set_postfix(self._bar_info, refresh=True)
        return result

    def checkpoint_extra(self) -> dict[str, Any]:
        """Counters saved with the agent (what a resume will need besides the replay buffer)."""
        return {
            "interactions": self.interactions,
            "updates": self.updates,
            "games": self.games,
            "episodes": self.episodes,
            "update_counter": float(getattr(self, "_update_counter", 0.0)),
            "seed": self.cfg.train.seed,
            "device": str(self.device),
        }

    def _save_final_checkpoint(self) -> Path:
        return save_checkpoint(
            self.run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT, self.agent, self.checkpoint_extra()
        )

    def _write_final(self, result: EvalResult, eval_seed: int, wall_time: float) -> dict[str, Any]:
        summary: dict[str, Any] = {"game": self.cfg.env.game, "seed": self.cfg.train.seed}
        if self.preset is not None:
            summary["preset"] = self.preset
        summary.update(
            {
                "scores": result.scores,
                "mean": result.mean,
                "std": result.std,
                "min": result.min,
                "max": result.max,
                "hns": result.hns,
                "episodes": len(result.scores),
                "eval_seed": eval_seed,
                "interactions": self.interactions,
                "updates": self.updates,
                "wall_time_s": round(wall_time, 3),
                "device": str(self.device),
                "twm_version": __version__,
            }
        )
        path = self.run_dir / "eval" / "final.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        disable = not self.progress or not sys.stderr.isatty()
        return tqdm(
            total=self.cfg.train.total_steps,
            unit="step",
            file=sys.stderr,
            disable=disable,
            dynamic_ncols=True,
            smoothing=0.05,  # the prefill is much faster than training; smooth the ETA over more steps
        )
