"""The training loop of docs/method.md ("Training loop"): prefill, pretraining, then act / update / evaluate.

``Trainer(cfg, run_dir).run()`` performs one run into a fresh run folder (layout: ``twm.run_dir``);
``Trainer.resume(run_dir).run()`` continues one from its newest good checkpoint.

Schedule (all steps count agent interactions, the prefill included)
    1. ``prefill_steps`` uniformly random actions;
    2. pretraining on the prefill (``twm.training.pretrain``), logged at step ``prefill_steps``;
    3. an evaluation of ``eval_episodes`` at step ``prefill_steps``;
    4. until ``total_steps``: act with the policy, add the step to the replay buffer, and do one update
       each time a float counter (+1 per interaction) reaches ``cfg.steps_per_update``; this spreads
       ``cfg.num_updates`` updates evenly over the interactions (0.76 interactions per update in the
       paper) without rounding drift; evaluations every ``eval_interval`` interactions;
    5. the final checkpoint, then ``final_eval_episodes`` evaluation episodes at ``total_steps``.

Checkpoints and resume: ``twm.training.resume``; signals and stops: ``twm.training.stops``; failures:
``twm.training.finite``; what a checkpoint holds: ``twm.training.state``.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from twm.captured import check_compiler
from twm.config import Config
from twm.device import resolve_device
from twm.envs import Env, check_env, make_env, newest_frame
from twm.files import CheckpointWriteError, fsync_path
from twm.models.batch import TorchSequenceBatch
from twm.replay import ReplayBuffer
from twm.run_dir import RunDir, RunLock, create_run_dir
from twm.seeding import Stream, derive_seed, final_eval_seed
from twm.training import output
from twm.training.checkpoint import CheckpointManager, load_agent_state
from twm.training.checkpoint import save_checkpoint as save_agent
from twm.training.evaluation import DEFAULT_EVAL_ENVS, EvalEvent, EvalResult, evaluate_agent
from twm.training.finite import FiniteCheck
from twm.training.logger import MetricsLogger
from twm.training.phases import PHASE_WORDS, Phase
from twm.training.pretrain import pretrain_phases
from twm.training.resume import load_resume_point, resumable_config, truncate_metrics, warn
from twm.training.state import TrainingState, seed_globals
from twm.training.stops import StopControl, TrainingStopped

# Fields of metrics.jsonl that measure wall-clock time; everything else is a function of the seed.
TIME_KEYS = frozenset({"time", "charts/updates_per_second", "charts/steps_per_second", "eval/seconds"})


def is_time_key(key: str) -> bool:
    """A field of metrics.jsonl that measures wall-clock time (``TIME_KEYS`` and ``time/<phase>``)."""
    return key in TIME_KEYS or key.startswith("time/")
PRETRAIN_LOG_LINES = 10  # lines logged per pretraining phase (each the mean over its chunk of steps)
EvalHook = Callable[[EvalEvent], None]
LogHook = Callable[[int, dict[str, float]], None]


class Trainer:
    """One training run of ``cfg`` into a fresh ``run_dir``, or a resumed one (``Trainer.resume``).

    ``device`` (auto, cpu, cuda, cuda:N) defaults to ``cfg.train.device`` and is checked before the run
    folder is created; an existing, non-empty ``run_dir`` raises ``RunDirExistsError``. ``on_eval``
    is called after each periodic evaluation (the CLI passes ``twm.viz.eval_images_hook``, which
    writes the pictures of ``train.eval_images``); it must not draw from the run's random streams.
    ``on_log`` gets each metric line (step, scalars) once it is written; ``request_stop()`` (from a hook)
    stops the run at the next safe point as SIGINT would. Process-wide settings (the allocator of
    ``train.keep_freed_memory``) are the caller's: the command line applies them.
    """

    def __init__(
        self, cfg: Config, run_dir: str | Path, device: str | None = None, progress: bool = True, *,
        preset: str | None = None, eval_envs: int = DEFAULT_EVAL_ENVS, on_eval: EvalHook | None = None,
        warn: Callable[[str], None] = warn, on_log: LogHook | None = None, _resuming: bool = False,
    ) -> None:  # fmt: skip
        self.cfg, self.preset, self.eval_envs, self.on_eval, self.warn = cfg, preset, eval_envs, on_eval, warn
        self.on_log = on_log
        self.device = resolve_device(device if device is not None else cfg.train.device)
        if cfg.train.capture:  # before the run folder exists
            check_compiler(self.device, cfg.train.compile_backend)
        self.progress = progress
        self.last_eval: EvalResult | None = None
        self.state = TrainingState(cfg.train.seed, self.device)
        self._stop = StopControl(lambda: self._checkpoints.last_path)
        self._progress = 0  # steps, updates and evaluations done: is the last checkpoint current?
        self._saved_progress = -1
        self._resume_from: tuple[dict[str, Any], ReplayBuffer, Path] | None = None
        if cfg.env.observation == "vector" and not cfg.env.vector_size:
            check_env(cfg.env)  # the models' input size comes from the environment (before any folder)
        folder = RunDir(run_dir if _resuming else create_run_dir(run_dir))
        self.run_dir = folder.path
        self._lock = RunLock(self.run_dir, warn=warn).acquire()  # before anything in it is touched
        if not _resuming:
            cfg.to_yaml(folder.config)  # first: a run that dies later still says what it was
            self._checkpoints = CheckpointManager(self.run_dir)
            return
        try:
            self._checkpoints, checkpoint, replay, path = load_resume_point(folder, cfg, warn)
            self._resume_from = (checkpoint, replay, path)
        except BaseException:
            self.release_lock()
            raise

    @classmethod
    def resume(cls, run_dir: str | Path, device: str | None = None, progress: bool = True, **options: Any) -> Trainer:
        """A trainer that continues the run in ``run_dir`` (``ResumeError`` says why it cannot).

        The config is the folder's ``config.yaml``; ``device`` may differ from the original run's.
        """
        cfg = resumable_config(RunDir(run_dir))
        return cls(cfg, run_dir, device, progress, _resuming=True, **options)

    # Counters, readable from outside (the CLI reports them on Ctrl-C).
    interactions = property(lambda self: self.state.interactions)
    updates = property(lambda self: self.state.updates)
    phase = property(lambda self: self.state.phase)

    # ------------------------------------------------------------------ the run

    def request_stop(self) -> None:
        """Stop at the next safe point with a checkpoint, as the first SIGINT does (TrainingStopped)."""
        if self._stop.signal is None:
            self._stop.signal = signal.SIGINT

    def release_lock(self) -> None:
        """Give up the run folder (run() does at its end; a trainer that never runs should call it)."""
        self._lock.release()

    def run(self) -> dict[str, Any]:
        """Train, evaluate, checkpoint; returns the contents of ``eval/final.json`` plus ``run_dir``."""
        try:
            self._session_start = time.time()
            self._build()
            return self._run_session()
        finally:
            self.release_lock()

    def _run_session(self) -> dict[str, Any]:
        purge_step = None
        if self._resume_from is not None:
            checkpoint, self.replay, path = self._resume_from
            self._resume_from = None
            load_agent_state(self.agent, checkpoint, self.device, optimizers=self.learner.optimizers)
            resume = self.state.load_state_dict(checkpoint, self.warn)
            self.preset = resume["preset"]
            self.env.set_state(resume["env"])
            truncate_metrics(RunDir(self.run_dir).metrics, int(resume["metrics_bytes"]), self.warn)
            self._saved_progress = self._progress  # this position is saved: a stop right away needs no new one
            purge_step = self.interactions + 1
            where = f"{self.phase.value.replace('_', ' ')}, {self.interactions}/{self.cfg.train.total_steps}"
            print(f"twm: resuming {self.run_dir} from {path.name} ({where} interactions)", file=sys.stderr)
        else:
            self.state.obs, _ = self.env.reset()
        self.logger = MetricsLogger(
            self.run_dir, elapsed=self.state.elapsed_before, purge_step=purge_step, config=self.cfg.to_dict(),
            loggers=self.cfg.train.loggers, on_log=self.on_log,
        )  # fmt: skip
        self._bar = output.Progress(
            self.cfg.train.total_steps, self.interactions, self.progress, self.cfg.train.status_seconds
        )
        try:
            with self._stop.installed():
                return self._run_phases()
        finally:
            self._bar.close()
            self.logger.close()
            self.env.close()

    def _run_phases(self) -> dict[str, Any]:
        t, s = self.cfg.train, self.state
        if s.phase == Phase.PREFILL:
            self._prefill()
            s.phase = Phase.PRETRAIN
        if s.phase == Phase.PRETRAIN:
            self._pretrain()
            s.phase, s.eval_pending = Phase.TRAIN, True  # then the evaluation after pretraining
            self._safe_point("pretrained", periodic=True)  # a run stopped from here never redoes it
        if s.phase == Phase.TRAIN:
            self._train()
            try:
                final = RunDir(self.run_dir).final_checkpoint
                save_agent(final, self.agent, s.counters(self.device), optimizers=self.learner.optimizers)
            except CheckpointWriteError as exc:
                raise exc.keeping(self._checkpoints.last_path) from None
            s.phase = Phase.FINAL_EVAL
            self._progress += 1
            self._safe_point("trained", periodic=True)  # a stop during the final evaluation resumes here
        self._bar.describe("final eval")
        with s.times.measure("final_eval"):
            result = self._run_eval(t.final_eval_episodes, final_eval_seed(t.seed), "final_eval")
        if result is None:
            raise self._stopped("during the final evaluation")
        summary = output.write_final(
            RunDir(self.run_dir).final_json, result, game=self.cfg.env.game, seed=t.seed, preset=self.preset,
            eval_seed=final_eval_seed(t.seed), eval_policy=t.eval_policy, state=s, wall_time=self._elapsed(), device=str(self.device),
        )  # fmt: skip
        s.phase = Phase.DONE
        return {**summary, "run_dir": str(self.run_dir)}

    def _build(self) -> None:  # everything a run needs, seeded from the config (a resume overwrites the states)
        cfg, seed = self.cfg, self.cfg.train.seed
        seed_globals(seed)
        self.env: Env = make_env(cfg.env, "train", derive_seed(seed, Stream.TRAIN_ENV))
        from twm.agent import Agent  # imported here: the agent pulls in every model module
        from twm.update import Learner

        self.agent = Agent(cfg, self.env.num_actions).to(self.device)
        self.learner = Learner(self.agent)  # the optimisers and the update
        # Acting with a policy that reads h carries the transformer's memory from step to step.
        self.state.acting = self.agent.acting_memory(1)
        self.replay = ReplayBuffer.from_config(cfg, derive_seed(seed, Stream.REPLAY))
        self._finite = FiniteCheck(self._checkpoints)

    def _elapsed(self) -> float:
        return self.state.elapsed_before + time.time() - self._session_start

    # ------------------------------------------------------------------ phases

    def _prefill(self) -> None:
        self._bar.describe("prefill")
        while self.interactions < self.cfg.train.prefill_steps:
            with self.state.times.measure("prefill"):
                self._env_step(int(self.state.prefill_rng.integers(self.env.num_actions)))
            self._after_step()
            self._safe_point(f"prefill:{self.interactions}", periodic=self._checkpoint_due())

    def _pretrain(self) -> None:
        s = self.state
        phases = pretrain_phases(self.cfg, self.learner, self.replay, self.device, s.update_generator)
        # The position (phase, iteration) lives in the state, so a resume continues mid-phase.
        while s.pretrain_phase < len(phases):
            name, n, step_fn = phases[s.pretrain_phase]
            if s.pretrain_iter >= n:
                s.pretrain_phase, s.pretrain_iter = s.pretrain_phase + 1, 0
                continue
            if not self._bar.phase_started:
                self._bar.describe(f"pretrain {s.pretrain_phase + 1}/{len(phases)}")
                self._bar.start_phase(name, n, s.pretrain_iter)
            with s.times.measure("pretrain"):
                metrics = step_fn()
            s.pretrain_iter = i = s.pretrain_iter + 1
            self._finite.add(f"at pretraining step {i}/{n} of the {name} phase", metrics)
            s.pretrain_metrics.add(metrics)
            self._progress += 1
            self._bar.phase_step(done=i == n)
            logged = i % max(1, math.ceil(n / PRETRAIN_LOG_LINES)) == 0 or i == n
            if logged:
                self._finite.check()  # before the line: a NaN must stop the run, not be logged as "nan"
                # All pretraining happens at one interaction count; the iteration tells lines apart.
                line = s.pretrain_metrics.pop(prefix="pretrain/")
                line[f"pretrain/{name}/iteration"] = i
                self.logger.log(self.interactions, line)
            self._safe_point(f"pretrain:{name}:{i}", periodic=logged)  # a checkpoint with each line

    def _train(self) -> None:
        t, s = self.cfg.train, self.state
        self._bar.describe("train")
        while True:
            if s.eval_pending:
                self._periodic_eval()
                self._safe_point(f"after_eval:{self.interactions}", periodic=self._checkpoint_due())
            if self.interactions >= t.total_steps:
                break
            self._train_step()
            # The evaluation at the end of training is the final one.
            s.eval_pending = self.interactions % t.eval_interval == 0 and self.interactions < t.total_steps
            # A checkpoint due together with an evaluation waits for it (see after_eval above).
            self._safe_point(f"train:{self.interactions}", periodic=self._checkpoint_due() and not s.eval_pending)
        if s.last_log[1] != self.interactions:  # the last, partial logging window
            self._finite.check()
            self._log_train()

    def _checkpoint_due(self) -> bool:
        # The end of training has its own checkpoints (final.pt and the one before the final evaluation).
        n, t = self.interactions, self.cfg.train
        return n % t.checkpoint_interval == 0 and n < t.total_steps

    # ------------------------------------------------------------------ one interaction, one update

    def _train_step(self) -> None:
        s, clock = self.state, self._bar.clock
        start = time.perf_counter()
        action = int(self.agent.act(s.current_obs[None], s.act_generator, s.acting)[0])
        acted = time.perf_counter()
        self._env_step(action)
        stepped = time.perf_counter()
        s.times.add("act", acted - start)
        s.times.add("env", stepped - acted)
        clock.add_steps(stepped - start)
        s.update_counter += 1.0
        while s.update_counter >= self.cfg.steps_per_update:
            s.update_counter -= self.cfg.steps_per_update
            start = time.perf_counter()
            self._update()
            clock.add_updates(time.perf_counter() - start)
        every = self.cfg.actor_critic.reset_every
        if every > 0 and self.interactions % every == 0 and self.interactions < self.cfg.train.total_steps:
            self._reset_policy()
        self._finite.check()
        self._after_step()

    def _env_step(self, action: int) -> None:
        s = self.state
        obs, reward, terminated, truncated, info = self.env.step(action)
        # The buffer stores the newest frame of the observation the action was taken in.
        self.replay.add(newest_frame(s.current_obs, self.cfg.frame_channels), action, reward, terminated, truncated)
        s.count_step(info, episode_ended=terminated or truncated)
        if s.acting is not None:
            s.acting.record([float(reward)], [bool(terminated or truncated)])
        if terminated or truncated:
            # Atari training: after a life loss or a truncation this continues the same game
            # (episodic lives, the time limit counts per life); else a new game.
            obs, _ = self.env.reset()
        s.obs = obs
        self._progress += 1

    def _after_step(self) -> None:
        self._bar.step(self.cfg, self.state)
        if self.interactions % self.cfg.train.log_interval == 0:
            self._log_train()

    def _sample_batch(self) -> TorchSequenceBatch:
        """A replay batch of sequences for an update, on the device."""
        r = self.cfg.replay
        batch = self.replay.sample_sequences(r.batch_size, r.sequence_length, r.rewarded_sequences)
        return TorchSequenceBatch.from_numpy(batch, self.device)

    def _sample_start_obs(self, n: int) -> torch.Tensor:
        """n replay observations for fresh imagination starts, on the device."""
        return torch.from_numpy(self.replay.sample_obs(n)).to(self.device)

    def _update_generator(self) -> torch.Generator | None:
        # A captured update draws from torch's global generator (saved in checkpoints too).
        return None if self.cfg.train.capture else self.state.update_generator

    def _update(self) -> None:
        s = self.state
        with s.times.measure("sample"):
            batch = self._sample_batch()
        generator = self._update_generator()
        if self.learner.captured is not None and self.learner.captured.updates == 0:
            print(
                "twm: compiling the captured update (train.capture): its first two updates, minutes on a "
                "CPU the first time, less once torch's compile cache holds them",
                file=sys.stderr,
                flush=True,
            )
        metrics = self.learner.update(batch, self._sample_start_obs, generator, on_part=s.times.add)
        s.updates += 1
        self._finite.add(f"at update {self.updates} (interaction {self.interactions})", metrics)
        s.train_metrics.add(metrics)

    def _reset_policy(self) -> None:
        """``actor_critic.reset_every``: new actor-critic weights, then ``reset_updates`` policy-only updates."""
        s, ac = self.state, self.cfg.actor_critic
        print(
            f"twm: actor and critic start again from new weights at {self.interactions} interactions "
            f"(actor_critic.reset_every), then {ac.reset_updates} policy-only updates",
            file=sys.stderr,
            flush=True,
        )
        with s.times.measure("policy_reset"):
            self.learner.reset_policy(derive_seed(self.cfg.train.seed, Stream.POLICY_RESET, self.interactions))
            generator = self._update_generator()
            for i in range(ac.reset_updates):
                metrics = self.learner.policy_update(self._sample_batch(), self._sample_start_obs, generator)
                self._finite.add(f"at policy update {i + 1} after the reset at {self.interactions}", metrics)

    # ------------------------------------------------------------------ checkpoints and stops

    def _safe_point(self, where: str, periodic: bool) -> None:
        """Between two steps: write a checkpoint when one is due or a stop was asked for, then stop."""
        self._stop.test_point(where)
        if (periodic or self._stop.requested) and self._saved_progress != self._progress:
            self._write_checkpoint()
        if self._stop.requested:
            raise self._stopped(PHASE_WORDS[self.phase])

    def _stopped(self, where: str) -> TrainingStopped:
        assert self._stop.signal is not None
        last, total = self._checkpoints.last_path, self.cfg.train.total_steps
        return TrainingStopped(self._stop.signal, last, self.run_dir, self.interactions, total, where)

    def _write_checkpoint(self) -> None:
        with self.state.times.measure("checkpoint"):
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        self._finite.check()  # never save non-finite weights as a "good" checkpoint
        self.logger.flush()
        fsync_path(self.logger.path)  # the logging position saved below must be on disk too
        resume = self.state.state_dict(self.env.get_state(), self._elapsed(), self.logger.path, self.preset)
        extra = {**self.state.counters(self.device), "resume": resume}
        try:
            self._checkpoints.save(self.agent, self.replay, self.interactions, extra, optimizers=self.learner.optimizers)
        except CheckpointWriteError as exc:
            raise exc.keeping(self._checkpoints.last_path) from None
        self._saved_progress = self._progress

    # ------------------------------------------------------------------ logging and evaluation

    def _log_train(self) -> None:
        with self.state.times.measure("log"):
            line = output.train_line(self.state, len(self.replay))  # empties the logging window
            self.logger.log(self.interactions, line)
        if line["charts/updates_per_second"] > 0:  # no rate to show during the prefill
            self._bar.note("upd/s", f"{line['charts/updates_per_second']:.1f}")

    def _periodic_eval(self) -> None:
        with self.state.times.measure("eval"):
            self._periodic_eval_and_hook()

    def _periodic_eval_and_hook(self) -> None:
        seed = derive_seed(self.cfg.train.seed, Stream.EVAL, self.state.num_evals)
        if self._run_eval(self.cfg.train.eval_episodes, seed, f"eval:{self.interactions}") is None:
            return
        self.state.eval_pending = False
        if self.on_eval is not None:
            meanings = self.env.action_meanings
            self.on_eval(EvalEvent(self.agent, self.replay, self.run_dir, self.interactions, self.logger, meanings))

    def _run_eval(self, episodes: int, seed: int, where: str) -> EvalResult | None:
        """Evaluate and log; None if a signal stopped it (the evaluation is then redone after a resume)."""
        start = time.time()
        policy = self.cfg.train.eval_policy
        evaluate = lambda: evaluate_agent(self.agent, self.cfg.env, episodes, seed, self.eval_envs, policy)  # noqa: E731
        result = self._stop.abortable(where, evaluate)
        if result is None:
            self.agent.train()  # acting switches to eval mode and may not have switched back
            return None
        seconds = time.time() - start
        self.logger.log(self.interactions, output.eval_line(result, episodes, seconds))
        self._bar.clock.add_eval(seconds, episodes)
        self.logger.flush()
        self.last_eval = result
        self.state.num_evals += 1
        self._progress += 1
        self._bar.note("eval", f"{result.mean:.1f}", refresh=True)
        return result

