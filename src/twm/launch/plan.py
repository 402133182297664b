"""What a sweep is asked for and what each run folder needs: parsing, options, specs and results.

``plan_run`` decides from a run folder's contents whether it is skipped, started, resumed or moved
aside and started again; ``validate`` and ``build_specs`` turn ``SweepOptions`` into one ``RunSpec``
per (game, seed). Nothing here starts a process (that is ``twm.launch.attempt``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from twm.config import MAX_SEED
from twm.games import ATARI100K_GAMES, GYM_PREFIX, resolve_game, run_name
from twm.run_dir import RunDir

# Keys the sweep sets itself: a --set of these would contradict the run folder's name.
RESERVED_KEYS = ("env.game", "train.seed")


class SweepError(ValueError):
    """A problem with what the user asked for; the CLI prints it as one line, exit code 2."""


class Action(StrEnum):
    """What to do with a run folder, from what is in it (``plan_run``)."""

    SKIP = "skip"  # eval/final.json exists: the run has finished
    START = "start"  # no folder, or an empty one
    RESUME = "resume"  # a resume checkpoint exists
    RESTART = "restart"  # neither: it died before its first checkpoint; move it aside, start again


class Status(StrEnum):
    """The outcome of one run in this invocation of the sweep."""

    PENDING = "pending"
    FINISHED = "finished"  # trained to the end by this sweep
    SKIPPED = "skipped"  # had finished before this sweep started
    FAILED = "failed"  # out of retries, a usage problem, or still running elsewhere
    INTERRUPTED = "interrupted"  # the sweep was stopped (Ctrl-C, SIGTERM); resumable


# --------------------------------------------------------------------------------------- parsing


def parse_games(text: str) -> list[str]:
    """Canonical game names from ``"Pong,boxing"``; ``all`` is the 26 Atari 100k games.

    Names are case-insensitive (``twm.games.resolve_game``; ``catch`` is the built-in game);
    duplicates are dropped, the order is kept. Raises ``UnknownGameError`` or ``SweepError``.
    """
    games: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        names = list(ATARI100K_GAMES) if item.lower() == "all" else [resolve_game(item)]
        games.extend(name for name in names if name not in games)
    if not games:
        raise SweepError(f"--games needs at least one game (or 'all'); got {text!r}")
    return games


MAX_SWEEP_SEEDS = 10_000  # a documented limit: every run of a sweep is planned up front


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0,1,2"`` or ranges ``"0-4"`` (inclusive); non-negative, duplicates dropped."""
    seeds: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        first, sep, last = item.partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise SweepError(
                f"--seeds takes non-negative integers or ranges like 0-4, comma separated; got {item!r}"
            ) from None
        if lo < 0 or hi < lo or hi > MAX_SEED:
            raise SweepError(f"--seeds: {item!r} is not a seed in [0, {MAX_SEED}] or an increasing range")
        if len(seeds) + hi - lo + 1 > MAX_SWEEP_SEEDS:
            raise SweepError(f"--seeds: at most {MAX_SWEEP_SEEDS} seeds per sweep; got {item!r}")
        seeds.extend(range(lo, hi + 1))
    seeds = list(dict.fromkeys(seeds))  # duplicates dropped, order kept
    if not seeds:
        raise SweepError(f"--seeds needs at least one seed; got {text!r}")
    return seeds


def run_dir_for(root: str | Path, game: str, seed: int) -> Path:
    """The run folder of one (game, seed): ``ROOT/<Game>/seed_<N>`` (a gym id without ':' or '/')."""
    return Path(root) / (run_name(game) if game.startswith(GYM_PREFIX) else game) / f"seed_{seed}"


# --------------------------------------------------------------------------------------- run folders


def plan_run(run_dir: str | Path) -> Action:
    """Skip a finished run, resume one with a checkpoint, start a missing or empty folder, else restart."""
    folder = RunDir(run_dir)
    if folder.is_finished():
        return Action.SKIP
    if folder.is_empty():
        return Action.START
    if folder.resume_checkpoints():
        return Action.RESUME
    return Action.RESTART


def move_aside(run_dir: str | Path) -> Path:
    """Rename ``run_dir`` to ``<name>.failed-<timestamp>`` (never deleting data); returns the new path."""
    run_dir = Path(run_dir)
    base = f"{run_dir.name}.failed-{time.strftime('%Y%m%d-%H%M%S')}"
    target = run_dir.with_name(base)
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{base}-{n}")
        n += 1
    run_dir.rename(target)
    return target


# --------------------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class TrainOptions:
    """What every run of the sweep is started with (``twm train`` options)."""

    preset: str = "atari100k"
    overrides: tuple[str, ...] = ()
    config_file: str | None = None
    device: str | None = None
    threads: int | None = None  # OMP_NUM_THREADS of the runs when the environment sets none


@dataclass(frozen=True)
class RunSpec:
    """One (game, seed) of the sweep and where it lives."""

    game: str
    seed: int
    run_dir: str
    options: TrainOptions = field(default_factory=TrainOptions)
    retries: int = 2
    # Which sweep this run belongs to: attempts recorded in the run's attempt file by the same sweep
    # count against its retries when the run is picked up again (a Ray task re-run after a node died).
    sweep_id: str = ""

    @property
    def name(self) -> str:
        return f"{self.game} seed {self.seed}"

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir).with_name(f"{Path(self.run_dir).name}.log")

    @property
    def pid_path(self) -> Path:
        return Path(self.run_dir).with_name(f"{Path(self.run_dir).name}.pid")

    @property
    def attempt_path(self) -> Path:
        return Path(self.run_dir).with_name(f"{Path(self.run_dir).name}.attempt")


@dataclass
class RunResult:
    """The outcome of one run (a row of the summary and of ``sweep.json``)."""

    game: str
    seed: int
    run_dir: str
    status: Status = Status.PENDING
    attempts: int = 0
    score: float | None = None
    hns: float | None = None
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


def conclude(result: RunResult, status: Status, t0: float | None, message: str) -> RunResult:
    """Set the outcome (and the final score, if the run has one); ``t0``: its monotonic start time."""
    result.status, result.message = status, message
    result.seconds = 0.0 if t0 is None else round(time.monotonic() - t0, 1)
    final = RunDir(result.run_dir).read_final()
    if final is not None:
        result.score = final.get("mean")
        result.hns = final.get("hns")
    return result


def config_differences(spec: RunSpec) -> list[str]:
    """Where the run folder's config.yaml differs from what this sweep asks for (``key: run vs asked``)."""
    from twm.config import Config
    from twm.config_files import load_config

    try:
        saved = Config.from_yaml(RunDir(spec.run_dir).config).to_dict()
        asked = load_config(spec.options.preset, _run_overrides(spec), spec.options.config_file).to_dict()
    except Exception:  # an unreadable config.yaml is the trainer's to report
        return []
    diffs = []
    for section, values in asked.items():
        for key, value in values.items():
            have = saved.get(section, {}).get(key, value)
            if have != value and not (section == "train" and key == "device"):
                diffs.append(f"{section}.{key}: {have!r} in the run, {value!r} asked")
    return diffs


def _run_overrides(spec: RunSpec) -> list[str]:
    """The overrides ``twm train`` applies for a fresh start of ``spec`` (game and seed win)."""
    return [f"env.game={spec.game}", *spec.options.overrides, f"train.seed={spec.seed}"]


# --------------------------------------------------------------------------------------- the sweep


@dataclass
class SweepOptions:
    """Everything ``twm sweep`` was asked for."""

    games: list[str]
    seeds: list[int]
    root: str
    options: TrainOptions = field(default_factory=TrainOptions)
    parallel: int | None = None  # local: runs at a time (default 1); Ray: tasks in flight (default all)
    retries: int = 2
    ray_address: str | None = None
    gpus_per_run: float = 0.0
    cpus_per_run: float = 1.0
    progress: bool = True


def validate(opts: SweepOptions) -> None:
    """Fail before anything starts (one line, ``SweepError`` / ``ConfigError``) on a bad option or config."""
    from twm.config_files import load_config

    if opts.parallel is not None and opts.parallel < 1:
        raise SweepError(f"--parallel must be at least 1; got {opts.parallel}")
    if opts.retries < 0:
        raise SweepError(f"--retries must be 0 or more; got {opts.retries}")
    if opts.gpus_per_run < 0 or opts.cpus_per_run < 0:
        raise SweepError("--gpus-per-run and --cpus-per-run must not be negative")
    if opts.ray_address is None and opts.gpus_per_run > 0:
        raise SweepError(
            "--gpus-per-run needs --ray-address (use --ray-address local to share this machine's GPUs)"
        )
    for override in opts.options.overrides:
        key = override.split("=", 1)[0].strip()
        if key in RESERVED_KEYS:
            raise SweepError(f"--set {key}=... is set by the sweep itself; use --games / --seeds")
    if opts.options.config_file and not Path(opts.options.config_file).is_file():
        raise SweepError(f"config file {opts.options.config_file} not found")
    for game in opts.games:  # every key and value checked once per game (games change the action count)
        load_config(
            opts.options.preset, [f"env.game={game}", *opts.options.overrides], opts.options.config_file
        )


def build_specs(opts: SweepOptions, sweep_id: str = "") -> list[RunSpec]:
    """One ``RunSpec`` per (game, seed), games outer, with absolute paths (Ray workers need them).

    Locally each run gets ``OMP_NUM_THREADS`` = CPUs / parallel runs (unless the environment sets it),
    as Ray gives each task its CPUs' worth.
    """
    root = Path(opts.root).resolve()
    config_file = str(Path(opts.options.config_file).resolve()) if opts.options.config_file else None
    threads = None if opts.ray_address else max(1, (os.cpu_count() or 1) // (opts.parallel or 1))
    options = replace(opts.options, config_file=config_file, threads=threads)
    return [
        RunSpec(game, seed, str(run_dir_for(root, game, seed)), options, opts.retries, sweep_id)
        for game in opts.games
        for seed in opts.seeds
    ]
