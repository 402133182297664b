"""The resumable state of a training run: everything besides the networks and the replay buffer.

A resume checkpoint stores the counters at its top level (``final.pt`` has them too) and the rest
under ``resume``: the position in the schedule (``Phase``, the pretraining phase and step, whether
the evaluation of this interaction is still to run), every random generator (python, numpy, torch
CPU and CUDA, the acting, update and prefill generators), the train env's state and the current
observation, the partial metric means and game scores of the current logging window, and the length
of ``metrics.jsonl``. ``TrainingState.state_dict`` / ``load_state_dict`` are that one pair.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from twm.acting import ActingMemory
from twm.envs.crafter import AchievementTally
from twm.seeding import Stream, derive_seed, numpy_generator, torch_generator
from twm.training.checkpoint import from_storable, to_storable
from twm.training.phases import Phase


class MeanAccumulator:
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


class PhaseTimes:
    """Wall-clock seconds a run spent in each phase, summed over its whole life (resumes included).

    Written into every training metric line as ``time/<phase>`` (cumulative seconds), so a run's
    last line says where its minutes went: prefill, pretrain, act (the agent choosing real actions),
    env (the game and the replay buffer), sample (drawing a replay batch), world_model, imagination,
    actor_critic (the three parts of an update; compile instead for a captured run's compiling
    ones), policy_reset (``actor_critic.reset_every``'s resets and their policy-only updates), eval
    (evaluations and their images), checkpoint and log. ``benchmarks/run_profile.py``
    prints them as a table.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - start)

    def line(self) -> dict[str, float]:
        return {f"time/{phase}": round(seconds, 3) for phase, seconds in self.seconds.items()}

    def state_dict(self) -> dict[str, float]:
        return dict(self.seconds)

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.seconds = {k: float(v) for k, v in state.items()}


def seed_globals(seed: int) -> None:
    """Python's, numpy's and torch's global generators (weight init and dropout use torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingState:
    """Counters, position, generators and the logging window of one run, seeded from ``seed``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed = seed
        self.device = device
        self.interactions = 0
        self.updates = 0
        self.games = 0  # finished whole games (all lives) in the train env
        self.episodes = 0  # finished training episodes (life losses included) = done flags in the buffer
        self.update_counter = 0.0  # +1 per interaction, -steps_per_update per update
        self.phase = Phase.PREFILL
        self.pretrain_phase = 0  # index into the pretraining phases obs, dyn, ac
        self.pretrain_iter = 0  # steps done in that phase
        self.eval_pending = False  # the evaluation due at the current interaction has not run yet
        self.num_evals = 0
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self.obs: np.ndarray | None = None  # the observation the next action is taken in
        self.act_generator = torch_generator(derive_seed(seed, Stream.AGENT), device)
        self.update_generator = torch_generator(derive_seed(seed, Stream.AGENT, 1), device)
        self.prefill_rng = numpy_generator(derive_seed(seed, Stream.PREFILL_ACTIONS))
        # The logging window: partial means, and the games that ended in it.
        self.train_metrics = MeanAccumulator()
        self.pretrain_metrics = MeanAccumulator()
        self.game_scores: list[float] = []
        self.game_achievements: list[list[str]] = []  # Crafter: per game of the logging window
        # Crafter: success rates over every training game of the run (prefill included), the
        # Crafter paper's score; None until a game reports achievements.
        self.achievement_tally: AchievementTally | None = None
        self.times = PhaseTimes()  # wall-clock seconds per phase (not part of the run's function)
        self.last_log = (time.time(), 0, 0)  # (time, interactions, updates) of the last metric line
        # The train game's acting memory when the policy reads h (actor_critic.inputs 'zh'), else None.
        self.acting: ActingMemory | None = None

    @property
    def current_obs(self) -> np.ndarray:
        """The observation the next action is taken in (set by the first reset)."""
        assert self.obs is not None, "the train env has not been reset yet"
        return self.obs

    def counters(self, device: torch.device) -> dict[str, Any]:
        """The counters saved with the agent (``final.pt`` has these; resume checkpoints add ``resume``)."""
        return {
            "interactions": self.interactions,
            "updates": self.updates,
            "games": self.games,
            "episodes": self.episodes,
            "update_counter": float(self.update_counter),
            "seed": self.seed,
            "device": str(device),
        }

    def count_step(self, info: Mapping[str, Any], episode_ended: bool) -> None:
        """Count one interaction and the game (its score, Crafter's achievements) or episode it ended."""
        self.interactions += 1
        self.episodes += int(episode_ended)
        if info.get("game_over"):
            self.games += 1
            self.game_scores.append(float(info["game_score"]))
            if "achievements" in info:  # Crafter
                self.game_achievements.append(list(info["achievements"]))
                if self.achievement_tally is None:
                    self.achievement_tally = AchievementTally()
                self.achievement_tally.add(info["achievements"])

    def state_dict(self, env_state: Any, elapsed: float, metrics: Path, preset: str | None) -> dict[str, Any]:
        """The ``resume`` entry of a checkpoint (storable: no pickled objects); ``metrics`` is the
        run's ``metrics.jsonl``, whose length a resume truncates it back to."""
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        state = {
            "phase": self.phase.value,
            "pretrain_phase": self.pretrain_phase,
            "pretrain_iter": self.pretrain_iter,
            "eval_pending": self.eval_pending,
            "num_evals": self.num_evals,
            "preset": preset,
            "elapsed": elapsed,
            "obs": self.obs,
            "env": env_state,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "torch_cuda": cuda,
                "act_generator": self.act_generator.get_state(),
                "update_generator": self.update_generator.get_state(),
                "prefill": self.prefill_rng.bit_generator.state,
            },
            "train_metrics": self.train_metrics.state_dict(),
            "pretrain_metrics": self.pretrain_metrics.state_dict(),
            "game_scores": list(self.game_scores),
            "game_achievements": [list(a) for a in self.game_achievements],
            "last_log": [self.last_log[1], self.last_log[2]],
            "metrics_bytes": metrics.stat().st_size,
            "acting": None if self.acting is None else self.acting.state_dict(),
            "times": self.times.state_dict(),
            "achievement_tally": None if self.achievement_tally is None else self.achievement_tally.state_dict(),
        }
        return to_storable(state)

    def load_state_dict(self, checkpoint: Mapping[str, Any], warn: Callable[[str], None]) -> dict[str, Any]:
        """Restore from a resume checkpoint; returns its ``resume`` entry (env state, preset, log size)."""
        r = from_storable(checkpoint["resume"])
        self.interactions = int(checkpoint["interactions"])
        self.updates = int(checkpoint["updates"])
        self.games = int(checkpoint["games"])
        self.episodes = int(checkpoint["episodes"])
        self.update_counter = float(checkpoint["update_counter"])
        self.phase = Phase(r["phase"])
        self.pretrain_phase = int(r["pretrain_phase"])
        self.pretrain_iter = int(r["pretrain_iter"])
        self.eval_pending = bool(r["eval_pending"])
        self.num_evals = int(r["num_evals"])
        self.elapsed_before = float(r["elapsed"])
        self.obs = np.asarray(r["obs"])  # uint8 frames, or float32 vectors
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
                warn(f"the {name} state was saved on another kind of device; continuing with a fresh one")
        self.prefill_rng.bit_generator.state = rng["prefill"]
        self.train_metrics.load_state_dict(r["train_metrics"], self.device)
        self.pretrain_metrics.load_state_dict(r["pretrain_metrics"], self.device)
        self.game_scores = [float(s) for s in r["game_scores"]]
        self.game_achievements = [list(a) for a in r.get("game_achievements", [])]
        self.last_log = (time.time(), int(r["last_log"][0]), int(r["last_log"][1]))
        if self.acting is not None:
            self.acting.load_state_dict(r["acting"])
        self.times.load_state_dict(r.get("times", {}))
        tally = r.get("achievement_tally")  # absent in checkpoints written before it existed
        if tally is not None:
            self.achievement_tally = AchievementTally()
            self.achievement_tally.load_state_dict(tally)
        return r
