"""``twm sweep``: one training run per (game, seed), locally or as Ray tasks, surviving crashes.

Layout under the sweep root ``ROOT``::

    ROOT/sweep.json                   every run's status, attempts and final score (rewritten as runs end)
    ROOT/<Game>/seed_<N>/             the run folder of ``twm train`` (config.yaml, checkpoints/, eval/...)
    ROOT/<Game>/seed_<N>.log          stdout and stderr of every attempt, appended, one header per attempt
    ROOT/<Game>/seed_<N>.pid          while an attempt runs: its process id and host (JSON)
    ROOT/<Game>/seed_<N>.failed-<T>/  a folder moved aside: that attempt died before its first checkpoint

The log and pid files sit beside the run folder, not in it, because ``twm train`` only starts in a
missing or empty folder.

Each attempt is a subprocess, ``python -m twm.cli train ...`` (a fresh start) or
``python -m twm.cli train --resume RUN_DIR``, so a crash of one run never takes the sweep down, and a
run killed from outside (OOM killer, preemption, SIGKILL) continues from its newest checkpoint. What
happens to a run folder is decided from what is in it (``plan_run``): a finished run (it has
``eval/final.json``) is skipped, a run with a resume checkpoint is resumed, a missing or empty folder
is started, and a folder with neither (the run died before its first checkpoint) is moved aside and
started again. A failed attempt is retried that way up to ``retries`` times; exit code 2 of
``twm train`` (a usage problem, such as a checkpoint that does not match the run's config.yaml) is not
retried. Starting the same sweep again therefore finishes whatever is left.

Without a Ray address the runs execute on this machine, ``parallel`` at a time (threads that each
wait on one subprocess). With one, each run is a Ray task (``num_cpus``/``num_gpus`` per run) that
does the same on whichever node Ray picks; the root must then be a path every node sees (a shared
file system). Ray is imported only then.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from twm.games import ATARI100K_GAMES, resolve_game
from twm.run_dir import FINAL_JSON, RunDir

RAY_HINT = "pip install 'twm[cluster]' (or pip install 'ray>=2.9')"
SWEEP_JSON = "sweep.json"
EXIT_USAGE = 2  # twm train's exit code for a usage problem: retrying cannot help
STOP_GRACE_S = 300.0  # how long an interrupted sweep waits for its runs to write their checkpoint
# Keys the sweep sets itself: a --set of these would contradict the run folder's name.
RESERVED_KEYS = ("env.game", "train.seed")

Notify = Callable[[str], None]


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
        if lo < 0 or hi < lo:
            raise SweepError(f"--seeds: {item!r} is not a non-negative seed or an increasing range")
        seeds.extend(range(lo, hi + 1))
    seeds = list(dict.fromkeys(seeds))  # duplicates dropped, order kept
    if not seeds:
        raise SweepError(f"--seeds needs at least one seed; got {text!r}")
    return seeds


def run_dir_for(root: str | Path, game: str, seed: int) -> Path:
    """The run folder of one (game, seed): ``ROOT/<Game>/seed_<N>``."""
    return Path(root) / game / f"seed_{seed}"


# --------------------------------------------------------------------------------------- run folders


def is_finished(run_dir: str | Path) -> bool:
    return RunDir(run_dir).is_finished()


def has_checkpoint(run_dir: str | Path) -> bool:
    return bool(RunDir(run_dir).resume_checkpoints())


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


def read_final(run_dir: str | Path) -> dict[str, Any] | None:
    return RunDir(run_dir).read_final()


def latest_checkpoint_name(run_dir: str | Path) -> str | None:
    return RunDir(run_dir).latest_checkpoint_name()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # guard against a recycled pid: it must still be a twm process
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes()
            return not args or b"twm" in args  # empty: not exec'd yet, cannot tell
    return True


def running_elsewhere(pid_path: str | Path) -> int | None:
    """The pid of a live attempt recorded in ``pid_path`` on this host (another sweep), else None.

    A pid file of another host cannot be checked and is ignored, as is a stale one.
    """
    try:
        info = json.loads(Path(pid_path).read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname() or pid == os.getpid():
        return None
    return pid if _pid_alive(pid) else None


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

    @property
    def name(self) -> str:
        return f"{self.game} seed {self.seed}"

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir).with_name(f"{Path(self.run_dir).name}.log")

    @property
    def pid_path(self) -> Path:
        return Path(self.run_dir).with_name(f"{Path(self.run_dir).name}.pid")


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


def train_command(spec: RunSpec, resume: bool) -> list[str]:
    """The ``twm train`` command line of one attempt (the current interpreter, so the same venv)."""
    base = [sys.executable, "-m", "twm.cli", "train"]
    device = ["--device", spec.options.device] if spec.options.device else []
    if resume:
        return [*base, "--resume", spec.run_dir, "--no-progress", *device]
    cmd = [*base, "--game", spec.game, "--seed", str(spec.seed), "--preset", spec.options.preset]
    cmd += ["--run-dir", spec.run_dir, "--no-progress", *device]
    if spec.options.config_file:
        cmd += ["--config", spec.options.config_file]
    for override in spec.options.overrides:
        cmd += ["--set", override]
    return cmd


def describe_exit(code: int) -> str:
    """How an attempt ended: ``exit code 1``, ``killed by SIGKILL``, ``stopped by SIGTERM (exit code 143)``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return f"stopped by {signal.Signals(code - 128).name} (exit code {code})"
    return f"exit code {code}"


def last_log_line(log_path: str | Path) -> str:
    """The last ``twm: ...`` line of the log (else its last line): why an attempt failed."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if not ln.startswith("=== twm sweep")]
    twm_lines = [ln for ln in lines if ln.startswith("twm:")]
    return (twm_lines or lines or [""])[-1][:300]


def config_differences(spec: RunSpec) -> list[str]:
    """Where the run folder's config.yaml differs from what this sweep asks for (``key: run vs asked``)."""
    from twm.config import Config, load_config

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


# Children of this process, so that a stop request (Ctrl-C, SIGTERM) reaches every running attempt.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()
_stop = threading.Event()


def request_stop(sig: int = signal.SIGTERM) -> None:
    """Start no new attempt, and send ``sig`` to every running one (the trainer then checkpoints)."""
    _stop.set()
    with _children_lock:
        children = list(_children.values())
    for child in children:
        with contextlib.suppress(OSError):
            child.send_signal(sig)


def _child_env(spec: RunSpec) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if spec.options.threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(spec.options.threads)
    return env


def run_attempt(spec: RunSpec, command: Sequence[str], attempt: int) -> int:
    """Run one attempt to its end, its output appended to the log; returns its exit code.

    The pid file exists while it runs. The child gets its own session, so a Ctrl-C at the terminal
    reaches it once, through ``request_stop``. A KeyboardInterrupt while waiting (a Ray task being
    cancelled) forwards SIGTERM, gives the run ``STOP_GRACE_S`` to write its checkpoint, and re-raises.
    SIGTERM, not SIGINT: a Ray worker blocks SIGINT and its children inherit the signal mask (the
    trainer handles both alike once it runs; before that, SIGTERM simply ends it).
    """
    Path(spec.run_dir).parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"=== twm sweep: attempt {attempt}/{spec.retries + 1} at {stamp} on {socket.gethostname()}"
        log.write(f"{header}: {' '.join(command)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(spec),
            start_new_session=True,
        )
    info = {"pid": child.pid, "host": socket.gethostname(), "attempt": attempt, "started": time.time()}
    with _children_lock:
        _children[child.pid] = child
    try:
        _atomic_write_text(spec.pid_path, json.dumps(info) + "\n")
        if _stop.is_set():  # a stop request that came while starting
            child.send_signal(signal.SIGTERM)
        return _wait_child(child)
    finally:
        with _children_lock:
            _children.pop(child.pid, None)
        with contextlib.suppress(OSError):
            spec.pid_path.unlink()


def _wait_child(child: subprocess.Popen[bytes]) -> int:
    try:
        while True:  # polling: Ray's cancellation only interrupts running Python code, not a wait()
            with contextlib.suppress(subprocess.TimeoutExpired):
                return child.wait(timeout=0.5)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def execute_run(spec: RunSpec, notify: Notify = print) -> RunResult:
    """Bring one run to its end: skip, start, resume or restart it, retrying failed attempts.

    Never raises for a failed run (that is a ``FAILED`` result); ``notify`` gets one line per event.
    """
    t0 = time.monotonic()
    result = RunResult(spec.game, spec.seed, spec.run_dir)
    busy = running_elsewhere(spec.pid_path)
    if busy is not None:
        return _done(result, Status.FAILED, t0, f"still running in process {busy} (another sweep?)")
    if plan_run(spec.run_dir) in (Action.SKIP, Action.RESUME):
        for diff in config_differences(spec)[:3]:
            notify(f"{spec.name}: warning: the run keeps its own config.yaml; {diff}")
    while True:
        if _stop.is_set():
            return _done(result, Status.INTERRUPTED, t0, result.message or "not started")
        action = plan_run(spec.run_dir)
        if action is Action.SKIP:
            status = Status.SKIPPED if result.attempts == 0 else Status.FINISHED
            return _done(result, status, t0, "")
        if result.attempts > spec.retries:
            return _done(result, Status.FAILED, t0, result.message)
        if action is Action.RESTART:
            moved = move_aside(spec.run_dir)
            notify(f"{spec.name}: no checkpoint and no {FINAL_JSON} in it; moved it aside to {moved}")
        result.attempts += 1
        resume = action is Action.RESUME
        what = (
            f"resume from {latest_checkpoint_name(spec.run_dir) or 'its checkpoint'}" if resume else "start"
        )
        notify(f"{spec.name}: {what} (attempt {result.attempts}/{spec.retries + 1}) in {spec.run_dir}")
        code = run_attempt(spec, train_command(spec, resume), result.attempts)
        if code == 0 and is_finished(spec.run_dir):
            continue  # the next plan is SKIP: finished
        why = last_log_line(spec.log_path)
        result.message = f"{describe_exit(code)}: {why}" if why else describe_exit(code)
        if _stop.is_set():
            continue
        if code == EXIT_USAGE:
            return _done(result, Status.FAILED, t0, result.message)
        more = "retrying" if result.attempts <= spec.retries else "no retries left"
        notify(f"{spec.name}: attempt {result.attempts} failed ({result.message}); {more}")


def _done(result: RunResult, status: Status, t0: float | None, message: str) -> RunResult:
    """Set the outcome (and the final score, if the run has one); ``t0``: its monotonic start time."""
    result.status, result.message = status, message
    result.seconds = 0.0 if t0 is None else round(time.monotonic() - t0, 1)
    final = read_final(result.run_dir)
    if final is not None:
        result.score = final.get("mean")
        result.hns = final.get("hns")
    return result


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
    from twm.config import load_config

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


def build_specs(opts: SweepOptions) -> list[RunSpec]:
    """One ``RunSpec`` per (game, seed), games outer, with absolute paths (Ray workers need them).

    Locally each run gets ``OMP_NUM_THREADS`` = CPUs / parallel runs (unless the environment sets it),
    as Ray gives each task its CPUs' worth.
    """
    root = Path(opts.root).resolve()
    config_file = str(Path(opts.options.config_file).resolve()) if opts.options.config_file else None
    threads = None if opts.ray_address else max(1, (os.cpu_count() or 1) // (opts.parallel or 1))
    options = replace(opts.options, config_file=config_file, threads=threads)
    return [
        RunSpec(game, seed, str(run_dir_for(root, game, seed)), options, opts.retries)
        for game in opts.games
        for seed in opts.seeds
    ]


class _Progress:
    """Event lines, an overall count and a tqdm bar of runs done (stderr, when it is a terminal)."""

    def __init__(self, total: int, enabled: bool, out: IO[str]) -> None:
        from tqdm import tqdm

        self.total, self.done, self.out = total, 0, out
        self.on_result: Callable[[RunResult], None] | None = None  # e.g. rewrite sweep.json
        self._lock = threading.Lock()
        self.bar = tqdm(
            total=total,
            unit="run",
            desc="sweep",
            file=sys.stderr,
            disable=not enabled or not sys.stderr.isatty(),
        )

    def line(self, text: str) -> None:
        with self._lock:
            self.bar.write(f"twm sweep: {text}", file=self.out)
            self.out.flush()

    def finished(self, result: RunResult) -> None:
        with self._lock:
            self.done += 1
            self.bar.update(1)
        if self.on_result is not None:
            self.on_result(result)
        self.line(f"[{self.done}/{self.total}] {result.game} seed {result.seed}: {_outcome(result)}")

    def close(self) -> None:
        self.bar.close()


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _outcome(result: RunResult) -> str:
    score = "" if result.score is None else f", score {result.score:.2f}"
    tries = _plural(result.attempts, "attempt")
    if result.status is Status.SKIPPED:
        return f"skipped, already finished{score}"
    if result.status is Status.FINISHED:
        return f"finished{score} ({tries}, {result.seconds:.0f} s)"
    if result.attempts == 0:
        return f"{result.status.value}: {result.message}"
    return f"{result.status.value} after {tries}: {result.message}"


def run_local(specs: Sequence[RunSpec], parallel: int, progress: _Progress) -> list[RunResult]:
    """Run the specs on this machine, ``parallel`` at a time; Ctrl-C/SIGTERM stops them resumably."""
    results: list[RunResult] = []
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="twm-sweep") as pool:
        futures = {pool.submit(execute_run, s, progress.line): s for s in specs}
        pending: set[Future[RunResult]] = set(futures)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if not _stop.is_set():
                    progress.line(
                        "stopping: the running runs write a checkpoint and exit (Ctrl-C again: now)"
                    )
                request_stop()
                continue
            for future in done:
                results.append(_local_result(future, futures[future]))
                progress.finished(results[-1])
    return results


def _local_result(future: Future[RunResult], spec: RunSpec) -> RunResult:
    try:
        return future.result()
    except Exception as exc:  # e.g. the log could not be written (disk full): this run fails, not the sweep
        message = f"{type(exc).__name__}: {exc}"[:300]
        return _done(RunResult(spec.game, spec.seed, spec.run_dir), Status.FAILED, None, message)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SweepError(f"--ray-address needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def _ray_task(spec: RunSpec) -> RunResult:
    """One run inside a Ray worker; its event lines reach the driver through Ray's log forwarding."""
    return execute_run(spec, lambda text: print(f"twm sweep: {text}", flush=True))


def run_ray(specs: Sequence[RunSpec], opts: SweepOptions, progress: _Progress) -> list[RunResult]:
    """Run the specs as Ray tasks on the cluster at ``opts.ray_address`` (``local``: a new local instance)."""
    ray = _import_ray()
    try:
        if opts.ray_address == "local":
            cpus = None if opts.parallel is None else math.ceil(opts.parallel * max(opts.cpus_per_run, 1))
            ray.init(num_cpus=cpus, include_dashboard=False)
        else:
            ray.init(address=opts.ray_address)
    except Exception as exc:  # connection refused, bad address, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot start or reach Ray at {opts.ray_address!r}: {first}") from None
    progress.line(f"Ray: {_ray_resources(ray)}")
    task = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run, max_retries=opts.retries)(
        _ray_task
    )
    try:
        return _drive_ray(ray, task, specs, opts.parallel or len(specs), progress)
    finally:
        ray.shutdown()


def _ray_resources(ray: Any) -> str:
    res = ray.cluster_resources()
    return ", ".join(f"{res.get(k, 0):g} {k}" for k in ("CPU", "GPU")) + f", {len(ray.nodes())} node(s)"


def _drive_ray(
    ray: Any, task: Any, specs: Sequence[RunSpec], in_flight: int, progress: _Progress
) -> list[RunResult]:
    queue, refs, results = list(specs), {}, []
    stopping = False
    while queue or refs:
        while queue and len(refs) < in_flight and not stopping:
            spec = queue.pop(0)
            refs[task.remote(spec)] = spec
        while stopping and queue:
            spec = queue.pop(0)
            results.append(
                _done(RunResult(spec.game, spec.seed, spec.run_dir), Status.INTERRUPTED, None, "not started")
            )
            progress.finished(results[-1])
        if not refs:
            break
        try:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
        except KeyboardInterrupt:
            if stopping:  # the second one: leave now (the runs' last complete checkpoints stay valid)
                raise
            progress.line("stopping: the running runs write a checkpoint and exit (Ctrl-C again: now)")
            stopping = True
            for ref in refs:
                ray.cancel(ref)  # a KeyboardInterrupt in the task, which forwards SIGTERM to its run
            continue
        for ref in done:
            spec = refs.pop(ref)
            results.append(_ray_result(ray, ref, spec, stopping))
            progress.finished(results[-1])
    return results


def _ray_result(ray: Any, ref: Any, spec: RunSpec, stopping: bool) -> RunResult:
    try:
        return ray.get(ref)
    except Exception as exc:  # the task died (node lost, cancelled) beyond Ray's own retries
        result = RunResult(spec.game, spec.seed, spec.run_dir)
        if is_finished(spec.run_dir):  # it ended just as it was cancelled
            return _done(result, Status.FINISHED, None, "")
        if not stopping:
            return _done(result, Status.FAILED, None, _exception_line(exc))
        why = last_log_line(spec.log_path) if spec.log_path.is_file() else ""
        return _done(result, Status.INTERRUPTED, None, f"cancelled; {why}" if why else "cancelled")


def _exception_line(exc: BaseException) -> str:
    """``TaskCancelledError: <last line>`` without Ray's colour codes and tracebacks."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    name = type(exc).__name__
    return (last if last.startswith(name) else f"{name}: {last}" if last else name)[:300]


# --------------------------------------------------------------------------------------- summary


def format_summary(results: Iterable[RunResult], root: str | Path) -> str:
    """The table printed at the end: game, seed, status, attempts, final score, hns, run folder."""
    rows = [("game", "seed", "status", "attempts", "score", "hns", "run folder")]
    notes = []
    for r in results:
        folder = os.path.relpath(r.run_dir, root) if Path(r.run_dir).is_absolute() else r.run_dir
        score = "" if r.score is None else f"{r.score:.2f}"
        hns = "" if r.hns is None else f"{r.hns:.3f}"
        rows.append((r.game, str(r.seed), r.status.value, str(r.attempts), score, hns, folder))
        if r.status in (Status.FAILED, Status.INTERRUPTED) and r.message:
            notes.append(f"  {r.game} seed {r.seed}: {r.message}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 3, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines + notes) + "\n"


def write_sweep_json(opts: SweepOptions, results: Iterable[RunResult], started: float) -> Path:
    """Write ``ROOT/sweep.json`` (atomically): the sweep's settings and every run's status and score."""
    runs = [r.to_dict() for r in results]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    data = {
        "root": str(Path(opts.root).resolve()),
        "games": opts.games,
        "seeds": opts.seeds,
        "preset": opts.options.preset,
        "overrides": list(opts.options.overrides),
        "config_file": opts.options.config_file,
        "ray_address": opts.ray_address,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "counts": counts,
        "complete": all(r["status"] in (Status.FINISHED.value, Status.SKIPPED.value) for r in runs),
        "runs": runs,
    }
    path = Path(opts.root) / SWEEP_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


@contextlib.contextmanager
def _sigterm_as_interrupt(received: list[int]) -> Any:
    """Within the block, SIGTERM (a scheduler's stop) is handled like Ctrl-C; ``received`` records signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_sweep(opts: SweepOptions, out: IO[str] | None = None) -> int:
    """Everything ``twm sweep`` does; returns its exit code (0 all done, 1 a run failed, 128+signal stopped).

    Raises ``SweepError`` / ``ConfigError`` / ``UnknownGameError`` for a usage problem, before any run starts.
    """
    out = out if out is not None else sys.stdout
    validate(opts)
    if opts.ray_address is not None:
        _import_ray()  # a missing Ray is a usage error before anything is written
    started = time.time()
    specs = build_specs(opts)
    rows = {(s.game, s.seed): RunResult(s.game, s.seed, s.run_dir) for s in specs}
    try:
        write_sweep_json(opts, rows.values(), started)
    except OSError as exc:
        raise SweepError(f"cannot write the sweep folder {opts.root}: {exc.strerror or exc}") from None
    progress = _Progress(len(specs), opts.progress, out)
    where = f"on Ray ({opts.ray_address})" if opts.ray_address else f"locally, {opts.parallel or 1} at a time"
    counts = f"{_plural(len(opts.games), 'game')} x {_plural(len(opts.seeds), 'seed')}"
    progress.line(f"{_plural(len(specs), 'run')} ({counts}) {where} in {Path(opts.root).resolve()}")

    def on_result(result: RunResult) -> None:
        rows[(result.game, result.seed)] = result
        try:
            write_sweep_json(opts, rows.values(), started)
        except OSError as exc:  # e.g. a full disk: the runs go on; the final write tries again
            progress.line(f"warning: cannot update {SWEEP_JSON}: {exc.strerror or exc}")

    progress.on_result = on_result
    _stop.clear()
    received: list[int] = []
    try:
        with _sigterm_as_interrupt(received):
            if opts.ray_address is None:
                run_local(specs, opts.parallel or 1, progress)
            else:
                run_ray(specs, opts, progress)
    finally:
        progress.close()
    results = list(rows.values())
    path = write_sweep_json(opts, results, started)
    print(format_summary(results, opts.root), end="", file=out)
    return _exit_code(results, received, path, opts.root, out)


def _exit_code(
    results: Sequence[RunResult], received: Sequence[int], path: Path, root: str, out: IO[str]
) -> int:
    counts = {s: sum(r.status is s for r in results) for s in Status}
    done = counts[Status.FINISHED] + counts[Status.SKIPPED]
    print(
        f"{done}/{len(results)} runs complete ({counts[Status.FINISHED]} finished now, {counts[Status.SKIPPED]} "
        f"skipped), {counts[Status.FAILED]} failed, {counts[Status.INTERRUPTED] + counts[Status.PENDING]} "
        f"interrupted; statuses in {path}",
        file=out,
    )
    if counts[Status.FAILED] or counts[Status.INTERRUPTED] or counts[Status.PENDING]:
        print("start the same sweep again to resume what is left", file=out)
    if done:
        print(f"report: twm report {root}", file=out)
    if counts[Status.INTERRUPTED] or counts[Status.PENDING]:
        return 128 + (received[0] if received else signal.SIGINT)
    return 1 if counts[Status.FAILED] else 0
