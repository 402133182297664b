"""Collect final run scores (and learning curves) from run folders, sweep roots and score files.

Three kinds of input are accepted, all giving one score per run:

- a run folder: ``eval/final.json`` = ``{"game", "seed", "scores": [final episodes], "mean", "hns"}``
  plus ``metrics.jsonl`` (learning curve from its ``eval/mean_score`` lines),
- a sweep root: any folder below which run folders lie (searched recursively),
- a score file: ``{"Game": [run score, ...], ...}``, the form in which methods release their results
  (a single ``eval/final.json`` file given directly is also understood).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twm.games import UnknownGameError, resolve_game, valid_game_names
from twm.run_dir import CONFIG_FILE, FINAL_JSON, METRICS_FILE

CURVE_KEY = "eval/mean_score"
# Files that only a run folder holds: a folder with one of these but no eval/final.json is a run
# that has not finished (or crashed), which we skip with a warning instead of silently.
_RUN_MARKERS = (METRICS_FILE, CONFIG_FILE)


class ReportInputError(ValueError):
    """An input that cannot be read; reported as one line by the CLI."""


@dataclass(frozen=True)
class RunScore:
    """The final score of one run (mean over its final evaluation episodes)."""

    game: str
    score: float
    source: str
    seed: int | None = None
    crafter_score: float | None = None  # Crafter runs: the final evaluation's Crafter score (%)
    # Crafter runs: the score over all training games of the run (the Crafter paper's definition).
    crafter_train_score: float | None = None


@dataclass(frozen=True)
class Curve:
    """Evaluation score against interactions (agent steps) of one run."""

    game: str
    source: str
    steps: np.ndarray
    values: np.ndarray


@dataclass
class LoadedScores:
    runs: list[RunScore] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def scores_by_game(self) -> dict[str, np.ndarray]:
        """Run scores per game, games in the order of ``valid_game_names()`` (Atari 100k, then catch)."""
        grouped: dict[str, list[float]] = {}
        for run in self.runs:
            grouped.setdefault(run.game, []).append(run.score)
        return {game: np.asarray(grouped[game], dtype=np.float64) for game in sort_games(grouped)}

    def crafter_scores_by_game(self, train: bool = False) -> dict[str, list[float]]:
        """Crafter scores of the runs that have one, per game: of the final evaluation, or with
        ``train`` over all training games (runs written before that was recorded have none)."""
        grouped: dict[str, list[float]] = {}
        for run in self.runs:
            value = run.crafter_train_score if train else run.crafter_score
            if value is not None:
                grouped.setdefault(run.game, []).append(value)
        return grouped


def sort_games(games: Iterable[str]) -> list[str]:
    order = {name: i for i, name in enumerate(valid_game_names())}
    return sorted(set(games), key=lambda g: (order.get(g, len(order)), g))


def _game(name: Any, where: Path) -> str:
    if not isinstance(name, str):
        raise ReportInputError(f"{where}: game name {name!r} is not a string")
    try:
        return resolve_game(name)
    except UnknownGameError as exc:
        # Same exception type (the CLI turns it into one line), but say which file it came from.
        raise UnknownGameError(f"{where}: {exc}") from None


def _finite(value: Any, what: str, where: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ReportInputError(f"{where}: {what} is {value!r}, not a finite number")
    return float(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportInputError(f"no such file or folder: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _is_final_json(data: Any) -> bool:
    return isinstance(data, dict) and "game" in data and ("scores" in data or "mean" in data)


def _run_from_final(data: dict[str, Any], path: Path, source: str) -> RunScore:
    game = _game(data["game"], path)
    episodes = data.get("scores")
    if isinstance(episodes, list) and episodes:
        # The run's score is the mean of its final evaluation episodes (docs/method.md, protocol); computed
        # from the episodes rather than trusting "mean", which is only a convenience copy.
        values = [_finite(v, f"an episode score of {game}", path) for v in episodes]
        score = float(np.mean(values))
    elif "mean" in data:
        score = _finite(data["mean"], f"the mean score of {game}", path)
    else:
        raise ReportInputError(f"{path}: no episode scores ('scores' is empty and there is no 'mean')")
    seed = data.get("seed")
    crafter = data.get("crafter")
    crafter_score = crafter_train_score = None
    if isinstance(crafter, dict) and "score" in crafter:
        crafter_score = _finite(crafter["score"], f"the Crafter score of {game}", path)
        train = crafter.get("train")
        if isinstance(train, dict) and "score" in train:
            crafter_train_score = _finite(train["score"], f"the training Crafter score of {game}", path)
    return RunScore(
        game,
        score,
        source,
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        crafter_score,
        crafter_train_score,
    )


def load_score_file(path: str | Path) -> list[RunScore]:
    """Runs from a score file ``{"Game": [run score, ...]}`` (or a single ``eval/final.json``)."""
    path = Path(path)
    data = _read_json(path)
    if _is_final_json(data):
        return [_run_from_final(data, path, str(path))]
    if not isinstance(data, dict) or not data:
        raise ReportInputError(
            f'{path}: expected a score file {{"Game": [run score, ...]}} or an eval/final.json'
        )
    runs: list[RunScore] = []
    for name, values in data.items():
        game = _game(name, path)
        scores = values if isinstance(values, list) else [values]
        if not scores:
            raise ReportInputError(f"{path}: no run scores for {game}")
        runs.extend(RunScore(game, _finite(v, f"a run score of {game}", path), str(path)) for v in scores)
    return runs


def read_curve(metrics_path: str | Path, game: str) -> Curve | None:
    """The ``eval/mean_score`` curve of one ``metrics.jsonl``; None if it has no such lines."""
    # Imported here: the logger module imports torch (seconds), which score files never need.
    from twm.training.logger import read_metrics

    steps: list[float] = []
    values: list[float] = []
    for record in read_metrics(metrics_path):
        value, step = record.get(CURVE_KEY), record.get("step")
        # The logger writes non-finite values as strings ("nan"); those points are left out.
        if isinstance(value, int | float) and isinstance(step, int | float) and math.isfinite(value):
            steps.append(float(step))
            values.append(float(value))
    if not steps:
        return None
    order = np.argsort(steps, kind="stable")
    return Curve(game, str(metrics_path), np.asarray(steps)[order], np.asarray(values)[order])


def load_run_dir(run_dir: str | Path) -> tuple[RunScore, Curve | None]:
    """The final score of one run folder and its learning curve (if it logged one)."""
    run_dir = Path(run_dir)
    final = run_dir / FINAL_JSON
    data = _read_json(final)
    if not _is_final_json(data):
        raise ReportInputError(f"{final}: expected an object with 'game' and 'scores'")
    run = _run_from_final(data, final, str(run_dir))
    metrics = run_dir / METRICS_FILE
    curve = read_curve(metrics, run.game) if metrics.is_file() else None
    return run, curve


def find_run_dirs(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Run folders at or below ``root``: (finished ones with eval/final.json, unfinished ones)."""
    root = Path(root)
    finished = sorted({p.parent.parent for p in root.rglob("final.json") if p.parent.name == "eval"})
    markers = {marker.parent for name in _RUN_MARKERS for marker in root.rglob(name)}
    # A marker inside a finished run (its own folder or a subfolder of it) belongs to that run.
    unfinished = sorted(d for d in markers if not any(d == run or run in d.parents for run in finished))
    return finished, unfinished


def load_inputs(paths: Sequence[str | Path]) -> LoadedScores:
    """Every run score (and learning curve) from the given run folders, sweep roots and score files.

    Missing paths, unreadable files and unknown games raise; unfinished run folders are skipped
    with a warning; an error is raised when no run is left at all.
    """
    if not paths:
        raise ReportInputError("no inputs: give run folders, sweep roots or score files")
    loaded = LoadedScores()
    seen: set[Path] = set()  # a run reached twice (a root and one of its runs) is counted once
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ReportInputError(f"no such file or folder: {path}")
        if path.is_file():
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            loaded.runs.extend(load_score_file(path))
            continue
        finished, unfinished = find_run_dirs(path)
        for run_dir in unfinished:
            loaded.warnings.append(
                f"skipping run folder {run_dir}: it has no {FINAL_JSON} (unfinished run?)"
            )
        if not finished and not unfinished:
            loaded.warnings.append(f"skipping {path}: no run folder with {FINAL_JSON} found in it")
        for run_dir in finished:
            key = (run_dir / FINAL_JSON).resolve()
            if key in seen:
                continue
            seen.add(key)
            run, curve = load_run_dir(run_dir)
            loaded.runs.append(run)
            if curve is not None:
                loaded.curves.append(curve)
    if not loaded.runs:
        raise ReportInputError(
            "no run scores found in "
            + ", ".join(str(p) for p in paths)
            + f" (run folders need {FINAL_JSON})"
        )
    return loaded
