"""The training loop of SPEC.md section 4: prefill, pretraining, then act / update / evaluate.

``Trainer(cfg, run_dir).run()`` performs one run and leaves in ``run_dir``:

- ``config.yaml``: the full resolved config, written before anything else;
- ``metrics.jsonl`` and ``tensorboard/``: one line per logged step (``MetricsLogger``);
- ``checkpoints/``: resume checkpoints (``twm.training.checkpoint``) and ``final.pt``, the agent at the end;
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

Checkpoints and resume (``Trainer.resume(run_dir).run()``, ``twm train --resume RUN_DIR``)
    A resume checkpoint is written at "safe points" between two steps: every ``checkpoint_interval``
    interactions (in the prefill too; after the evaluation when both fall on the same interaction),
    with every pretraining log line (10 per phase), after pretraining (a phase boundary: a resumed run
    never redoes it), before the final evaluation, and when SIGINT or SIGTERM arrives. It holds the
    networks and optimisers, the replay buffer with its visit counts and generator, every random
    generator (python, numpy, torch CPU and CUDA, the acting, update and prefill generators), the train
    env's state (``env.get_state()``: emulator, frame stack, its generator), the current observation,
    the counters (including the float update counter and the number of evaluations done), the
    position in the schedule (``Phase``, the pretraining phase and step, whether the evaluation of
    this interaction is still to run), the partial metric means and game scores of the current
    logging window and the length of ``metrics.jsonl``. A resume truncates ``metrics.jsonl`` to that
    length and continues, so on the CPU an interrupted and resumed run equals the uninterrupted one bit
    for bit (metrics apart from ``TIME_KEYS``, scores, final weights); resuming mid-pretraining is
    exact too. TensorBoard continues with ``purge_step`` (events after the checkpoint's interaction
    from the interrupted session are hidden; a few at that very interaction may appear twice).

Signals
    The first SIGINT or SIGTERM sets a flag; the current step (or update, or pretraining step) finishes,
    a checkpoint is written and ``run`` raises ``TrainingStopped`` (the CLI exits with 128 + signal:
    130, 143). A running evaluation is dropped at once instead (it changes no training state, and the
    checkpoint then says it is still to run). A second signal raises ``Interrupted`` immediately; atomic
    writes keep every file whole, so the last complete checkpoint remains the resume point.

Failures
    A NaN or infinite loss or gradient norm raises ``NonFiniteLossError`` naming the key, the update and
    interaction and the last good checkpoint (checked once per interaction and before every log line and
    checkpoint, so no checkpoint ever holds non-finite weights). A failed checkpoint write (e.g. disk
    full) raises ``CheckpointWriteError``; the previous checkpoint stays intact.

Test hooks (environment variables)
    ``TWM_TEST_SIGNAL_AT=<point>`` makes the trainer send itself ``TWM_TEST_SIGNAL`` (default SIGINT)
    once, at the safe point named ``prefill:N``, ``pretrain:<obs|dyn|ac>:I``, ``train:N`` (after
    interaction N and its updates, before an evaluation due at N), ``eval:N`` (inside the evaluation at
    N), ``after_eval:N`` or ``final_eval`` (inside the final evaluation), where N counts interactions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from twm import __version__
from twm.allocator import keep_freed_memory
from twm.config import Config, ConfigError
from twm.envs import Env, make_env, newest_frame
from twm.envs.crafter import crafter_score
from twm.models.world_model import TorchSequenceBatch
from twm.replay import ReplayBuffer
from twm.run_dir import RunLock
from twm.training.checkpoint import (
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    CheckpointError,
    CheckpointManager,
    CheckpointWriteError,
    atomic_write,
    from_storable,
    fsync_path,
    load_agent_state,
    save_checkpoint,
    to_storable,
)
from twm.training.evaluation import DEFAULT_EVAL_ENVS, EvalResult, evaluate_agent
from twm.training.logger import MetricsLogger, create_run_dir
from twm.viz.eval_images import write_eval_images

# Fields of metrics.jsonl that measure wall-clock time; everything else is a function of the seed.
TIME_KEYS = frozenset({"time", "charts/updates_per_second", "charts/steps_per_second", "eval/seconds"})

# Lines logged per pretraining phase (each the mean over its chunk of steps).
PRETRAIN_LOG_LINES = 10

FINAL_JSON = "eval/final.json"


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

    def state_dict(self) -> dict[str, Any]:
        """The partial sums (on the CPU, exact) and counts, in insertion order (the line's key order)."""
        return {"sums": {k: s.detach().cpu() for k, s in self._sums.items()}, "counts": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self._sums = {k: torch.as_tensor(s).to(device) for k, s in state["sums"].items()}
        self._counts = {k: int(c) for k, c in state["counts"].items()}


def pretrain_steps(cfg: Config) -> dict[str, int]:
    """Steps of each pretraining phase: its share of the pretrain budget / samples per batch."""
    t, r, ac = cfg.train, cfg.replay, cfg.actor_critic
    return {
        "obs": round(t.pretrain_budget * t.pretrain_obs_fraction / r.obs_batch_size),
        "dyn": round(t.pretrain_budget * t.pretrain_dyn_fraction / (r.batch_size * r.sequence_length)),
        "ac": round(t.pretrain_budget * t.pretrain_ac_fraction / (ac.num_starts * ac.horizon)),
    }


class TrainingStopped(Exception):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; exit code ``128 + signum``."""

    def __init__(
        self, signum: int, checkpoint: Path | None, run_dir: Path, interactions: int, total: int, where: str
    ) -> None:
        saved = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(
            f"stopped by {signal.Signals(signum).name} {where} at {interactions}/{total} interactions; "
            f"{saved}; continue with: twm train --resume {run_dir}"
        )
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class Interrupted(BaseException):
    """A second SIGINT/SIGTERM: leave at once without a new checkpoint (the last complete one stays).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class _AbortEval(BaseException):
    """Raised by the signal handler inside an evaluation: an evaluation changes no training state, so it
    can be dropped and redone after the resume instead of making a preempted job wait for it."""


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm became NaN or infinite; the message names it, the step and the last
    good checkpoint (which holds finite weights: the check runs before every checkpoint)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class ResumeError(RuntimeError):
    """``--resume`` cannot continue this folder (no checkpoint, finished run, config mismatch, ...)."""


class Phase(StrEnum):
    """Where a run is; saved in each checkpoint so a resume continues at the same place."""

    PREFILL = "prefill"
    PRETRAIN = "pretrain"
    TRAIN = "train"
    FINAL_EVAL = "final_eval"
    DONE = "done"


_PHASE_WORDS = {
    Phase.PREFILL: "during the prefill",
    Phase.PRETRAIN: "during pretraining",
    Phase.TRAIN: "during training",
    Phase.FINAL_EVAL: "before the final evaluation",
    Phase.DONE: "after the run",
}


class _FiniteCheck:
    """Collects the metrics of each step on their device and checks them all with one sync later.

    Checking every update with ``.item()`` would stall the GPU queue; the trainer checks once per
    interaction (``act`` synchronises there anyway) and before every log line and checkpoint, so no
    checkpoint ever holds non-finite weights, and the error still names the first bad step.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, list[str], Tensor]] = []

    def add(self, where: str, metrics: Mapping[str, Any]) -> None:
        keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
        if keys:
            device = metrics[keys[0]].device
            values = torch.stack([metrics[k].detach().float().mean().to(device) for k in keys])
            self._pending.append((where, keys, values))

    def first_bad(self) -> tuple[str, str, float] | None:
        """(where, key, value) of the first non-finite value since the last call, else None."""
        pending, self._pending = self._pending, []
        if not pending or bool(torch.isfinite(torch.cat([v for _, _, v in pending])).all()):
            return None
        for where, keys, values in pending:
            for key, value in zip(keys, values.tolist(), strict=True):
                if not math.isfinite(value):
                    return where, key, value
        return None  # unreachable: some value was non-finite


def _warn(message: str) -> None:
    print(f"twm: warning: {message}", file=sys.stderr, flush=True)


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``section.key: A in the checkpoint, B in config.yaml`` for every differing value (device excluded)."""
    out = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) == ("train", "device"):
                continue  # where a run continues is not part of what it computes
            if a.get(key) != b.get(key):
                out.append(
                    f"{section}.{key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} in config.yaml"
                )
    return out


class Trainer:
    """One training run of ``cfg`` into a fresh ``run_dir``, or a resumed one (``Trainer.resume``)."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        device: str | None = None,
        progress: bool = True,
        *,
        preset: str | None = None,
        eval_envs: int = DEFAULT_EVAL_ENVS,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        """``device`` (auto, cpu, cuda, cuda:N) defaults to ``cfg.train.device``.

        The device is checked before the run folder is created, so a bad request leaves nothing
        behind; an existing, non-empty ``run_dir`` raises ``RunDirExistsError``.
        """
        self._setup(cfg, device, progress, preset, eval_envs, warn)
        self.run_dir = create_run_dir(run_dir)
        # One process per run folder, from here to the end of run() (twm.run_dir).
        self._lock = RunLock(self.run_dir, warn=self.warn).acquire()
        # The config goes first: a run that dies later still says what it was.
        cfg.to_yaml(self.run_dir / "config.yaml")
        self._checkpoints = CheckpointManager(self.run_dir)
        self._resume_from: tuple[dict[str, Any], ReplayBuffer, Path] | None = None

    def _setup(
        self,
        cfg: Config,
        device: str | None,
        progress: bool,
        preset: str | None,
        eval_envs: int,
        warn: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else cfg.train.device)
        if cfg.train.keep_freed_memory:
            keep_freed_memory()
        self.progress = progress
        self.preset = preset
        self.eval_envs = eval_envs
        self.warn = warn
        # Counters, readable from outside (the CLI reports them on Ctrl-C).
        self.interactions = 0
        self.updates = 0
        self.games = 0  # finished whole games (all lives) in the train env
        self.episodes = 0  # finished training episodes (life losses included) = done flags in the buffer
        self.last_eval: EvalResult | None = None
        self._num_evals = 0
        # Where the run is (see Phase); a resume restores these.
        self.phase = Phase.PREFILL
        self._pretrain_phase = 0  # index into the pretraining phases obs, dyn, ac
        self._pretrain_iter = 0  # steps done in that phase
        self._eval_pending = False  # the evaluation due at the current interaction has not run yet
        self._update_counter = 0.0
        self._elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        # Progress marks (steps, updates, evaluations) tell whether the last checkpoint is current.
        self._progress = 0
        self._saved_progress = -1
        self._stop_signal: int | None = None
        self._abortable = False
        self._test_signal_at = os.environ.get("TWM_TEST_SIGNAL_AT")

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        progress: bool = True,
        *,
        eval_envs: int = DEFAULT_EVAL_ENVS,
        warn: Callable[[str], None] = _warn,
    ) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its newest good checkpoint.

        The config is the folder's ``config.yaml``; a checkpoint written with a different config, or
        by an incompatible twm version, is refused (``ResumeError``); a corrupt one is skipped with a
        warning in favour of the previous one. ``device`` may differ from the original run's.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ResumeError(f"run folder {run_dir} does not exist")
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise ResumeError(f"{config_path} not found: {run_dir} is not a twm run folder")
        cfg = Config.from_yaml(config_path)
        if (run_dir / FINAL_JSON).is_file():
            raise ResumeError(
                f"the run in {run_dir} has already finished ({FINAL_JSON} exists); nothing to resume"
            )
        manager = CheckpointManager(run_dir)
        if not manager.checkpoint_files():
            raise ResumeError(
                f"no checkpoint to resume from in {manager.dir} (the run stopped before its first "
                "checkpoint); start it again with a new --run-dir"
            )
        self = cls.__new__(cls)
        self._setup(cfg, device, progress, None, eval_envs, warn)
        self.run_dir = run_dir
        # Before anything in the folder is touched: a live run's half-written files are its own.
        self._lock = RunLock(run_dir, warn=warn).acquire()
        try:
            self._load_for_resume(manager, cfg, config_path)
        except BaseException:
            self.release_lock()
            raise
        return self

    def _load_for_resume(self, manager: CheckpointManager, cfg: Config, config_path: Path) -> None:
        manager.remove_stale_temporaries()
        try:
            state, replay, path = manager.load_latest("cpu", warn=self.warn)
        except CheckpointError as exc:
            raise ResumeError(str(exc)) from None
        try:
            saved_cfg = Config.from_dict(state["config"]).to_dict()
        except ConfigError as exc:
            raise ResumeError(f"{path}: its config cannot be read by this twm version: {exc}") from None
        diffs = _config_differences(saved_cfg, cfg.to_dict())
        if diffs:
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise ResumeError(f"{path} does not match {config_path}: {diffs[0]}{more}")
        self._checkpoints = manager
        self._resume_from = (state, replay, path)

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        """Train, evaluate, checkpoint; returns the contents of ``eval/final.json`` plus ``run_dir``."""
        try:
            return self._run_locked()
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        """Give up the run folder (run() does at its end; a trainer that never runs should call it)."""
        self._lock.release()

    def _run_locked(self) -> dict[str, Any]:
        self._session_start = time.time()
        self._build()
        purge_step = None
        if self._resume_from is not None:
            state, replay, path = self._resume_from
            self._resume_from = None
            self._restore(state, replay)
            purge_step = int(state["interactions"]) + 1
            print(
                f"twm: resuming {self.run_dir} from {path.name} ({self.phase.value.replace('_', ' ')}, "
                f"{self.interactions}/{self.cfg.train.total_steps} interactions)",
                file=sys.stderr,
                flush=True,
            )
        else:
            self.obs, _ = self.env.reset()
        self.logger = MetricsLogger(self.run_dir, elapsed=self._elapsed_before, purge_step=purge_step)
        self._bar = self._make_bar()
        self._bar_info: dict[str, str] = {}  # postfix of the bar: updates/s, last eval score
        try:
            with self._signal_handlers():
                return self._run_phases()
        finally:
            self._bar.close()
            self.logger.close()
            self.env.close()

    def _run_phases(self) -> dict[str, Any]:
        t = self.cfg.train
        if self.phase == Phase.PREFILL:
            self._prefill()
            self.phase = Phase.PRETRAIN
        if self.phase == Phase.PRETRAIN:
            self._pretrain()
            self.phase = Phase.TRAIN
            self._eval_pending = True  # the evaluation after pretraining
            # Phase boundary: a run stopped from here on never redoes pretraining.
            self._safe_point("pretrained", periodic=True)
        if self.phase == Phase.TRAIN:
            self._train()
            self._save_final_checkpoint()
            self.phase = Phase.FINAL_EVAL
            self._progress += 1
            self._safe_point("trained", periodic=True)  # a stop during the final evaluation resumes here
        self._bar.set_description("final eval")
        result = self._run_eval(t.final_eval_episodes, final_eval_seed(t.seed), "final_eval")
        if result is None:
            assert self._stop_signal is not None
            last = self._checkpoints.last_path
            where = "during the final evaluation"
            raise TrainingStopped(
                self._stop_signal, last, self.run_dir, self.interactions, t.total_steps, where
            )
        wall = self._elapsed()
        summary = self._write_final(result, final_eval_seed(t.seed), wall)
        self.phase = Phase.DONE
        return {**summary, "run_dir": str(self.run_dir)}

    def _build(self) -> None:
        """Everything a run needs, seeded from the config (a resume then overwrites the states)."""
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
        self._prefill_rng = np.random.Generator(np.random.PCG64(derive_seed(t.seed, Stream.PREFILL_ACTIONS)))
        self._train_metrics = _MeanAccumulator()
        self._pretrain_metrics = _MeanAccumulator()
        self._finite = _FiniteCheck()
        self._game_scores: list[float] = []
        self._game_achievements: list[list[str]] = []  # Crafter: per game of the logging window
        self._last_log = (time.time(), 0, 0)  # (time, interactions, updates) of the last metric line

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        # Weight init and dropout use torch's global generator (CPU and, if present, all GPUs).
        torch.manual_seed(seed)

    def _elapsed(self) -> float:
        return self._elapsed_before + time.time() - self._session_start

    # ------------------------------------------------------------------ phases

    def _prefill(self) -> None:
        t = self.cfg.train
        self._bar.set_description("prefill")
        while self.interactions < t.prefill_steps:
            self._env_step(int(self._prefill_rng.integers(self.env.num_actions)))
            self._after_step()
            self._safe_point(f"prefill:{self.interactions}", periodic=self._checkpoint_due())

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
        acc = self._pretrain_metrics
        # The position (phase, iteration) lives on self, so a resume continues mid-phase.
        while self._pretrain_phase < len(phases):
            name, step_fn = phases[self._pretrain_phase]
            n = steps[name]
            if self._pretrain_iter >= n:
                self._pretrain_phase += 1
                self._pretrain_iter = 0
                continue
            chunk = max(1, math.ceil(n / PRETRAIN_LOG_LINES))
            i = self._pretrain_iter + 1
            metrics = step_fn()
            self._finite.add(f"at pretraining step {i}/{n} of the {name} phase", metrics)
            acc.add(metrics)
            self._pretrain_iter = i
            self._progress += 1
            logged = i % chunk == 0 or i == n
            if logged:
                self._check_finite()  # before the line: a NaN must stop the run, not be logged as "nan"
                self._bar.set_description(f"pretrain {name} {i}/{n}")
                # All pretraining happens at one interaction count; the iteration tells lines apart.
                line = acc.pop(prefix="pretrain/")
                line[f"pretrain/{name}/iteration"] = i
                self.logger.log(self.interactions, line)
            # A checkpoint with each log line (10 per phase): pretraining is long on a GPU.
            self._safe_point(f"pretrain:{name}:{i}", periodic=logged)

    def _train(self) -> None:
        t = self.cfg.train
        self._bar.set_description("train")
        while True:
            if self._eval_pending:
                self._periodic_eval()
                self._safe_point(f"after_eval:{self.interactions}", periodic=self._checkpoint_due())
            if self.interactions >= t.total_steps:
                break
            self._train_step()
            # The evaluation at the end of training is the final one.
            self._eval_pending = (
                self.interactions % t.eval_interval == 0 and self.interactions < t.total_steps
            )
            # A checkpoint due together with an evaluation waits for it (see after_eval above).
            periodic = self._checkpoint_due() and not self._eval_pending
            self._safe_point(f"train:{self.interactions}", periodic=periodic)
        if self._last_log[1] != self.interactions:  # the last, partial logging window
            self._check_finite()
            self._log_train()

    def _checkpoint_due(self) -> bool:
        # The end of training has its own checkpoints (final.pt and the one before the final evaluation).
        n = self.interactions
        return n % self.cfg.train.checkpoint_interval == 0 and n < self.cfg.train.total_steps

    # ------------------------------------------------------------------ steps

    def _train_step(self) -> None:
        action = int(self.agent.act(self.obs[None], self.act_generator)[0])
        self._env_step(action)
        self._update_counter += 1.0
        while self._update_counter >= self.cfg.steps_per_update:
            self._update_counter -= self.cfg.steps_per_update
            self._update()
        self._check_finite()
        self._after_step()

    def _env_step(self, action: int) -> None:
        obs, reward, terminated, truncated, info = self.env.step(action)
        # The buffer stores the newest frame of the observation the action was taken in.
        self.replay.add(newest_frame(self.obs, self.cfg.frame_channels), action, reward, terminated, truncated)
        if info.get("game_over"):
            self.games += 1
            self._game_scores.append(float(info["game_score"]))
            if "achievements" in info:  # Crafter
                self._game_achievements.append(list(info["achievements"]))
        if terminated or truncated:
            self.episodes += 1
            # Atari training: after a life loss or a truncation this continues the same game
            # (episodic lives, the time limit counts per life); else a new game.
            obs, _ = self.env.reset()
        self.obs = obs
        self.interactions += 1
        self._progress += 1

    def _after_step(self) -> None:
        self._bar.update(1)
        if self.interactions % self.cfg.train.log_interval == 0:
            self._log_train()

    def _sample_start_obs(self, n: int) -> Tensor:
        return torch.from_numpy(self.replay.sample_obs(n)).to(self.device)

    def _update(self) -> None:
        r = self.cfg.replay
        batch = self.replay.sample_sequences(r.batch_size, r.sequence_length)
        metrics = self.agent.update(
            TorchSequenceBatch.from_numpy(batch, self.device), self._sample_start_obs, self.update_generator
        )
        self.updates += 1
        self._finite.add(f"at update {self.updates} (interaction {self.interactions})", metrics)
        self._train_metrics.add(metrics)

    def _check_finite(self) -> None:
        bad = self._finite.first_bad()
        if bad is None:
            return
        where, key, value = bad
        last = self._checkpoints.last_path
        kind = "loss" if "loss" in key else "value"
        good = (
            f"last good checkpoint: {last} (interaction {self._checkpoints.last_interactions})"
            if last is not None
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(f"non-finite {kind} {key}={value} {where}; {good}", last)

    # ------------------------------------------------------------------ checkpoints and signals

    def _safe_point(self, where: str, periodic: bool) -> None:
        """Between two steps: write a checkpoint when one is due or a stop was asked for, then stop."""
        if self._test_signal_at == where:
            self._send_test_signal()
        if (periodic or self._stop_signal is not None) and self._saved_progress != self._progress:
            self._write_checkpoint()
        if self._stop_signal is not None:
            raise TrainingStopped(
                self._stop_signal,
                self._checkpoints.last_path,
                self.run_dir,
                self.interactions,
                self.cfg.train.total_steps,
                _PHASE_WORDS[self.phase],
            )

    def _write_checkpoint(self) -> Path:
        self._check_finite()  # never save non-finite weights as a "good" checkpoint
        self.logger.flush()
        fsync_path(self.logger.path)  # the logging position saved below must be on disk too
        extra = {**self.checkpoint_extra(), "resume": to_storable(self._resume_state())}
        previous = self._checkpoints.last_path
        try:
            path = self._checkpoints.save(self.agent, self.replay, self.interactions, extra)
        except CheckpointWriteError as exc:
            intact = (
                f"the last checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            )
            raise CheckpointWriteError(f"{exc}; {intact}", exc.errno) from None
        self._saved_progress = self._progress
        return path

    def _resume_state(self) -> dict[str, Any]:
        """Everything besides the agent and the replay buffer that the rest of the run depends on."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {
            "phase": self.phase.value,
            "pretrain_phase": self._pretrain_phase,
            "pretrain_iter": self._pretrain_iter,
            "eval_pending": self._eval_pending,
            "num_evals": self._num_evals,
            "preset": self.preset,
            "elapsed": self._elapsed(),
            "obs": self.obs,
            "env": self.env.get_state(),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "torch_cuda": cuda,
                "act_generator": self.act_generator.get_state(),
                "update_generator": self.update_generator.get_state(),
                "prefill": self._prefill_rng.bit_generator.state,
            },
            "train_metrics": self._train_metrics.state_dict(),
            "pretrain_metrics": self._pretrain_metrics.state_dict(),
            "game_scores": list(self._game_scores),
            "game_achievements": [list(a) for a in self._game_achievements],
            "last_log": [self._last_log[1], self._last_log[2]],
            "metrics_bytes": self.logger.path.stat().st_size,
        }

    def _restore(self, state: Mapping[str, Any], replay: ReplayBuffer) -> None:
        r = from_storable(state["resume"])
        load_agent_state(self.agent, state, self.device)
        self.replay = replay
        self.interactions = int(state["interactions"])
        self.updates = int(state["updates"])
        self.games = int(state["games"])
        self.episodes = int(state["episodes"])
        self._update_counter = float(state["update_counter"])
        self.phase = Phase(r["phase"])
        self._pretrain_phase = int(r["pretrain_phase"])
        self._pretrain_iter = int(r["pretrain_iter"])
        self._eval_pending = bool(r["eval_pending"])
        self._num_evals = int(r["num_evals"])
        self.preset = r["preset"]
        self._elapsed_before = float(r["elapsed"])
        self.obs = np.asarray(r["obs"], dtype=np.uint8)
        self.env.set_state(r["env"])
        rng = r["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(torch.as_tensor(rng["torch"]))
        if (
            rng["torch_cuda"]
            and torch.cuda.is_available()
            and len(rng["torch_cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all([torch.as_tensor(s) for s in rng["torch_cuda"]])
        for name, gen in (("act_generator", self.act_generator), ("update_generator", self.update_generator)):
            try:
                gen.set_state(torch.as_tensor(rng[name]).cpu())
            except RuntimeError:
                # CPU and CUDA generators keep different states: a run moved between them goes on with
                # its freshly seeded streams (GPU runs are not bitwise reproducible anyway).
                self.warn(
                    f"the {name} state was saved on another kind of device; continuing with a fresh one"
                )
        self._prefill_rng.bit_generator.state = rng["prefill"]
        self._train_metrics.load_state_dict(r["train_metrics"], self.device)
        self._pretrain_metrics.load_state_dict(r["pretrain_metrics"], self.device)
        self._game_scores = [float(s) for s in r["game_scores"]]
        self._game_achievements = [list(a) for a in r.get("game_achievements", [])]
        self._last_log = (time.time(), int(r["last_log"][0]), int(r["last_log"][1]))
        self._truncate_metrics(int(r["metrics_bytes"]))
        # This position is already saved: a stop right away needs no new checkpoint.
        self._saved_progress = self._progress

    def _truncate_metrics(self, size: int) -> None:
        """Cut ``metrics.jsonl`` back to the checkpoint's position: the lines after it are logged again."""
        path = self.run_dir / "metrics.jsonl"
        current = path.stat().st_size if path.exists() else 0
        if current < size:
            self.warn(
                f"{path} is shorter than at the checkpoint ({current} < {size} bytes); some lines are missing"
            )
            return
        with path.open("r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        # Python only lets the main thread install handlers; elsewhere signals keep their defaults.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            # The second signal: leave now. Every file is written atomically, so whatever was being
            # written is either complete or not there; the last complete checkpoint is the resume point.
            raise Interrupted(signum, self._checkpoints.last_path)
        self._stop_signal = signum
        if self._abortable:
            raise _AbortEval()

    def _send_test_signal(self) -> None:
        name = os.environ.get("TWM_TEST_SIGNAL", "SIGINT")
        self._test_signal_at = None  # once per process
        os.kill(os.getpid(), signal.Signals[name if name.startswith("SIG") else "SIG" + name])

    # ------------------------------------------------------------------ logging, evaluation, output

    def _log_train(self) -> None:
        now = time.time()
        last_time, last_steps, last_updates = self._last_log
        elapsed = max(now - last_time, 1e-9)
        line: dict[str, Any] = self._train_metrics.pop()
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
        if self._game_achievements:
            line["crafter/unlocked"] = self._game_achievements.copy()  # one list per game
            line["crafter/achievements_per_game"] = float(np.mean([len(a) for a in self._game_achievements]))
            line["crafter/score"] = crafter_score(self._game_achievements)
            self._game_achievements.clear()
        self.logger.log(self.interactions, line)
        self._last_log = (now, self.interactions, self.updates)
        if self.updates > last_updates:  # no rate to show during the prefill
            self._bar_info["upd/s"] = f"{line['charts/updates_per_second']:.1f}"
            self._bar.set_postfix(self._bar_info, refresh=False)

    def _periodic_eval(self) -> None:
        t = self.cfg.train
        seed = derive_seed(t.seed, Stream.EVAL, self._num_evals)
        result = self._run_eval(t.eval_episodes, seed, f"eval:{self.interactions}")
        if result is not None:
            self._eval_pending = False
            if t.eval_images:
                # Draws its samples from a generator of its own: the run's random streams (and so
                # an exact resume) do not depend on whether images are written.
                write_eval_images(
                    self.agent,
                    self.replay,
                    self.run_dir,
                    self.interactions,
                    self.logger,
                    None,
                    action_meanings=self.env.action_meanings,
                )

    def _run_eval(self, episodes: int, seed: int, where: str) -> EvalResult | None:
        """Evaluate and log; None if a signal stopped it (the evaluation is then redone after a resume)."""
        start = time.time()
        result: EvalResult | None = None
        try:
            self._abortable = True
            if self._test_signal_at == where:
                self._send_test_signal()
            if self._stop_signal is None:
                result = evaluate_agent(self.agent, self.cfg.env, episodes, seed, self.eval_envs)
        except _AbortEval:
            pass
        except Exception:
            # Evaluation worker processes may die of the same SIGINT/SIGTERM first; that is a stop too.
            if self._stop_signal is None:
                raise
        finally:
            self._abortable = False
        if result is None:
            self.agent.train()  # acting switches to eval mode and may not have switched back
            return None
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
        if result.random_ratio is not None:
            line["eval/random_ratio"] = result.random_ratio
        if result.crafter_score is not None:
            line["eval/crafter_score"] = result.crafter_score
            line["eval/achievements_per_game"] = float(np.mean([len(a) for a in result.achievements or []]))
        self.logger.log(self.interactions, line)
        self.logger.flush()
        self.last_eval = result
        self._num_evals += 1
        self._progress += 1
        self._bar_info["eval"] = f"{result.mean:.1f}"
        self._bar.set_postfix(self._bar_info, refresh=True)
        return result

    def checkpoint_extra(self) -> dict[str, Any]:
        """Counters saved with the agent (final.pt has these; resume checkpoints add ``resume``)."""
        return {
            "interactions": self.interactions,
            "updates": self.updates,
            "games": self.games,
            "episodes": self.episodes,
            "update_counter": float(self._update_counter),
            "seed": self.cfg.train.seed,
            "device": str(self.device),
        }

    def _save_final_checkpoint(self) -> Path:
        path = self.run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT
        try:
            return save_checkpoint(path, self.agent, self.checkpoint_extra())
        except CheckpointWriteError as exc:
            last = self._checkpoints.last_path
            intact = f"the last checkpoint {last} is intact" if last else "no earlier checkpoint exists"
            raise CheckpointWriteError(f"{exc}; {intact}", exc.errno) from None

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
                "random_ratio": result.random_ratio,
                "episodes": len(result.scores),
                "eval_seed": eval_seed,
                "interactions": self.interactions,
                "updates": self.updates,
                "wall_time_s": round(wall_time, 3),
                "device": str(self.device),
                "twm_version": __version__,
            }
        )
        if result.crafter_score is not None:
            summary["crafter"] = {
                "score": result.crafter_score,
                "success_rates": result.success_rates,
                "achievements": result.achievements,
            }
        path = self.run_dir / FINAL_JSON
        text = json.dumps(summary, indent=1) + "\n"
        # Atomic: a run counts as finished (and refuses --resume) only once this file is complete.
        atomic_write(path, lambda f: f.write(text.encode()))
        return summary

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        disable = not self.progress or not sys.stderr.isatty()
        return tqdm(
            total=self.cfg.train.total_steps,
            initial=self.interactions,
            unit="step",
            file=sys.stderr,
            disable=disable,
            dynamic_ncols=True,
            smoothing=0.05,  # the prefill is much faster than training; smooth the ETA over more steps
        )
