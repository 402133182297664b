"""What a run shows and writes besides checkpoints: metric lines, ``eval/final.json``, progress bars."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from twm.config import Config
from twm.envs.crafter import crafter_score
from twm.files import atomic_write
from twm.training.evaluation import EvalResult
from twm.training.state import TrainingState
from twm.version import __version__


def train_line(state: TrainingState, buffer_size: int) -> dict[str, Any]:
    """The metric line of a logging window: mean losses, rates, counters, the games that ended in it.

    Empties the window (its metric sums and game lists) and starts the next one.
    """
    now = time.time()
    last_time, last_steps, last_updates = state.last_log
    state.last_log = (now, state.interactions, state.updates)
    elapsed = max(now - last_time, 1e-9)
    line: dict[str, Any] = state.train_metrics.pop()
    line.update(
        {
            "charts/interactions": state.interactions,
            "charts/updates": state.updates,
            "charts/updates_per_second": (state.updates - last_updates) / elapsed,
            "charts/steps_per_second": (state.interactions - last_steps) / elapsed,
            "charts/games": state.games,
            "buffer/size": buffer_size,
            "buffer/episodes": state.episodes,
        }
    )
    line.update(state.times.line())
    if state.game_scores:  # only when a game ended in this window; an empty mean is no score
        line["charts/episode_score"] = float(np.mean(state.game_scores))
        state.game_scores.clear()
    if state.game_achievements:
        achievements = state.game_achievements
        line["crafter/unlocked"] = achievements.copy()  # one list per game
        line["crafter/achievements_per_game"] = float(np.mean([len(a) for a in achievements]))
        line["crafter/score"] = crafter_score(achievements)
        achievements.clear()
    if state.achievement_tally is not None:  # over every training game so far (the paper's score)
        line["crafter/train_score"] = state.achievement_tally.score()
        line["crafter/train_games"] = state.achievement_tally.games
    return line


def eval_line(result: EvalResult, episodes: int, seconds: float) -> dict[str, float]:
    """The metric line of one evaluation."""
    line: dict[str, float] = {
        "eval/mean_score": result.mean,
        "eval/std_score": result.std,
        "eval/min_score": result.min,
        "eval/max_score": result.max,
        "eval/episodes": episodes,
        "eval/seconds": seconds,
    }
    if result.hns is not None:
        line["eval/hns"] = result.hns
    if result.random_ratio is not None:
        line["eval/random_ratio"] = result.random_ratio
    if result.crafter_score is not None:
        line["eval/crafter_score"] = result.crafter_score
        line["eval/achievements_per_game"] = float(np.mean([len(a) for a in result.achievements or []]))
    return line


def write_final(
    path: Path,
    result: EvalResult,
    *,
    game: str,
    seed: int,
    preset: str | None,
    eval_seed: int,
    eval_policy: str,
    state: TrainingState,
    wall_time: float,
    device: str,
) -> dict[str, Any]:
    """Write ``eval/final.json`` (atomically: a run counts as finished only once it is complete)."""
    summary: dict[str, Any] = {"game": game, "seed": seed}
    if preset is not None:
        summary["preset"] = preset
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
            "eval_policy": eval_policy,  # train.eval_policy: sampled or most likely actions
            "interactions": state.interactions,
            "updates": state.updates,
            "wall_time_s": round(wall_time, 3),
            # Where the wall time went (twm.training.state.PhaseTimes; benchmarks/run_profile.py).
            "phase_seconds": {k: round(v, 3) for k, v in state.times.seconds.items()},
            "device": device,
            "twm_version": __version__,
        }
    )
    if result.crafter_score is not None:
        summary["crafter"] = {
            "score": result.crafter_score,
            "success_rates": result.success_rates,
            "achievements": result.achievements,
        }
        tally = state.achievement_tally
        if tally is not None:
            # The Crafter paper's score: success rates over all training games within the budget.
            summary["crafter"]["train"] = {
                "score": tally.score(),
                "success_rates": tally.success_rates(),
                "games": tally.games,
            }
    text = json.dumps(summary, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return summary


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class WorkClock:
    """Measured seconds per environment step, per update and per evaluation episode, and the time
    the work left will take.

    The interactions of a run are not equal work: the prefill is random actions only, then every
    interaction carries ~1/steps_per_update updates, and evaluations come on top. So the ETA is the
    steps left times the measured seconds per step, plus the updates left times the seconds per
    update, plus the evaluation episodes left times the seconds per episode.
    """

    def __init__(self) -> None:
        self.step_seconds = 0.0
        self.steps = 0
        self.update_seconds = 0.0
        self.updates = 0
        self.eval_seconds = 0.0
        self.eval_episodes = 0

    def add_eval(self, seconds: float, episodes: int) -> None:
        self.eval_seconds += seconds
        self.eval_episodes += episodes

    def add_steps(self, seconds: float, n: int = 1) -> None:
        self.step_seconds += seconds
        self.steps += n

    def add_updates(self, seconds: float, n: int = 1) -> None:
        self.update_seconds += seconds
        self.updates += n

    def eta(self, steps_left: int, updates_left: int, episodes_left: int = 0) -> float | None:
        """Seconds for the work left, or None while a needed rate has not been measured yet."""
        if (steps_left and not self.steps) or (updates_left and not self.updates):
            return None
        per_step = self.step_seconds / self.steps if self.steps else 0.0
        per_update = self.update_seconds / self.updates if self.updates else 0.0
        per_episode = self.eval_seconds / self.eval_episodes if self.eval_episodes else 0.0
        return steps_left * per_step + updates_left * per_update + episodes_left * per_episode


class Progress:
    """The run's bars on stderr: interactions with an ETA from the work left, and one per pretraining phase.

    When stderr is not a terminal (a log file, a pipe, a batch job) there are no bars; instead, with
    ``status_seconds`` > 0, a plain line every ``status_seconds`` seconds
    (``twm: train 1200/100000 (1.2%) elapsed 00:05:00 ETA 0:41:10 upd/s 3.1 eval 12.0``), one when a
    phase starts and one at the end.
    """

    FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, initial: int, enabled: bool, status_seconds: float = 0.0) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled and sys.stderr.isatty()
        # Plain status lines: asked for, but no terminal to draw bars on.
        self.status_seconds = status_seconds if enabled and not self.enabled else 0.0
        self._started = time.monotonic()
        self._last_status = self._started
        self._phase_text = ""
        self._n, self._total = initial, total  # a disabled tqdm bar does not count
        self._phase: list[Any] = ["", 0, 0]  # name, done, total of the pretraining phase
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="step",
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
            bar_format=self.FORMAT,
        )
        self.info: dict[str, str] = {}  # ETA, updates/s, last eval score
        self.clock = WorkClock()
        self._phase_bar: Any = None
        self._last_refresh = 0.0

    def describe(self, text: str) -> None:
        self.bar.set_description(text)
        if self.status_seconds and text != self._phase_text:
            self._phase_text = text
            self.status(force=True)

    def status(self, force: bool = False) -> None:
        """A plain status line on stderr (see the class docstring), when one is due or ``force``."""
        if not self.status_seconds:
            return
        now = time.monotonic()
        if not force and now - self._last_status < self.status_seconds:
            return
        self._last_status = now
        n, total = self._n, self._total
        parts = [f"twm: {self._phase_text or 'run'} {n}/{total} ({100 * n / max(total, 1):.1f}%)"]
        parts.append(f"elapsed {_clock(now - self._started)}")
        parts += [f"{key} {value}" for key, value in self.info.items()]
        print(" ".join(parts), file=sys.stderr, flush=True)

    def step(self, cfg: Config, state: TrainingState) -> None:
        """One interaction done; the ETA from the steps, updates and evaluation episodes left."""
        self.bar.update(1)
        self._n += 1
        now = time.monotonic()
        if now - self._last_refresh < 1.0:  # the ETA needs no more than one refresh a second
            return
        self._last_refresh = now
        t, n = cfg.train, state.interactions
        evals_left = max(0, (t.total_steps - 1) // t.eval_interval - n // t.eval_interval)  # periodic ones
        episodes_left = evals_left * t.eval_episodes + t.final_eval_episodes
        eta = self.clock.eta(t.total_steps - n, cfg.num_updates - state.updates, episodes_left)
        self.info["ETA"] = "?" if eta is None else _clock(eta)
        self.bar.set_postfix(self.info, refresh=False)
        self.status()

    def note(self, key: str, value: str, refresh: bool = False) -> None:
        self.info[key] = value
        self.bar.set_postfix(self.info, refresh=refresh)

    def start_phase(self, name: str, total: int, done: int) -> None:
        """A second bar for a pretraining phase: step of steps, rate and its own ETA."""
        self.end_phase()
        self._phase = [name, done, total]
        self._phase_bar = self._tqdm(
            total=total,
            initial=done,
            desc=f"pretrain {name}",
            unit="step",
            file=sys.stderr,
            disable=not self.enabled,
            dynamic_ncols=True,
            leave=False,
            position=1,
        )

    @property
    def phase_started(self) -> bool:
        return self._phase_bar is not None

    def phase_step(self, done: bool) -> None:
        if self._phase_bar is not None and self.status_seconds:
            now = time.monotonic()
            self._phase[1] += 1
            name, i, n = self._phase
            if done or now - self._last_status >= self.status_seconds:
                self._last_status = now
                print(f"twm: pretrain {name} {i}/{n} elapsed {_clock(now - self._started)}", file=sys.stderr, flush=True)
        if self._phase_bar is not None:
            self._phase_bar.update(1)
            if done:
                self.end_phase()

    def end_phase(self) -> None:
        if self._phase_bar is not None:
            self._phase_bar.close()
            self._phase_bar = None

    def close(self) -> None:
        self.end_phase()
        if self.status_seconds:
            self.status(force=True)
        self.bar.close()
