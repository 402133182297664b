"""The run folder: its layout, the checks every command makes on it, and its lock (no torch here).

Layout (names relative to the run folder; ``RunDir`` gives their paths)::

    config.yaml              the full resolved config, written before anything else
    metrics.jsonl            one JSON line per logged step
    tensorboard/             the same metrics for TensorBoard
    checkpoints/             step_<interactions>_<index>.pt resume checkpoints, ``latest`` (the newest's
                             name) and final.pt (the agent at the end of training)
    eval/final.json          the final evaluation; written last and atomically: the run has finished
    images/                  reconstructions and dreams at each evaluation (``train.eval_images``)
    .twm-lock                held by the process that trains the run

A folder is *finished* (``eval/final.json``), *resumable* (a resume checkpoint, not finished),
*in use* (a live lock), or neither: it died before its first checkpoint.

The lock: a process that trains a run holds ``.twm-lock`` for its whole life. The file is created
with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFS v3+, which a Ray cluster's shared
folder is) and holds the holder's host, pid, a random token and when it started. While the run
lives, a background thread touches the file every ``heartbeat`` seconds. A second process is
refused with ``RunLockedError`` naming the holder, unless the lock is stale:

- on the holder's own host: its pid no longer runs, or runs a process that started after the
  lock was written (the pid was recycled, as after every container restart);
- on another host (where pids mean nothing): the file was not touched for ``stale_after``
  seconds (default 120 s, four heartbeats; hosts' clocks must agree to within that).

A stale lock is taken over with a warning, one process at a time: the process that creates the
guard file ``.twm-lock.takeover`` (``O_EXCL``: one winner) reads the lock again, removes it only if
it is still the holder it judged stale, and drops the guard; then every contender creates the lock
with ``O_EXCL``, which again only one wins. So two processes never both hold a run (a rename-based
takeover could move aside the fresh lock of a faster contender). A guard left by a crash is
removed after ``TAKEOVER_GUARD_S`` seconds. ``flock`` is not used: it does not work across hosts
on many shared file systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
FINAL_CHECKPOINT = "final.pt"
LATEST_POINTER = "latest"
FINAL_JSON = "eval/final.json"
EVAL_IMAGES_DIR = "images"
# Resume checkpoints: step_<interactions>_<index>.pt (the index orders checkpoints of one interaction).
RESUME_CHECKPOINT = re.compile(r"^step_(\d+)_(\d+)\.pt$")


class RunDirError(RuntimeError):
    """A run folder cannot serve the command (missing, not a run, unfinished, ...): a one-line message."""


class RunDirExistsError(RunDirError, FileExistsError):
    """The run folder already holds a run; we never overwrite one."""


class ResumeError(RunDirError):
    """``--resume`` cannot continue this folder (no checkpoint, finished run, config mismatch, ...)."""


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder and the checks on it (nothing is created or read on construction)."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def final_checkpoint(self) -> Path:
        return self.checkpoints / FINAL_CHECKPOINT

    @property
    def final_json(self) -> Path:
        return self.path / FINAL_JSON

    @property
    def eval_images(self) -> Path:
        return self.path / EVAL_IMAGES_DIR

    # ---------------------------------------------------------------- what the folder holds

    def is_empty(self) -> bool:
        """Missing, or an empty folder: a place a new run may start."""
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    def is_finished(self) -> bool:
        """Whether the run wrote its final evaluation (written atomically, last of all)."""
        return self.final_json.is_file()

    def resume_checkpoints(self) -> list[Path]:
        """The resume checkpoints in the folder (any order)."""
        if not self.checkpoints.is_dir():
            return []
        return [p for p in self.checkpoints.iterdir() if RESUME_CHECKPOINT.match(p.name)]

    def latest_checkpoint_name(self) -> str | None:
        """The name in ``checkpoints/latest`` (the newest checkpoint written), if any."""
        try:
            return (self.checkpoints / LATEST_POINTER).read_text().strip() or None
        except OSError:
            return None

    def read_final(self) -> dict[str, Any] | None:
        """``eval/final.json``, or None when it is missing or unreadable."""
        try:
            data = json.loads(self.final_json.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock ({host, pid, token, started}; {} while unreadable), or None."""
        return read_lock(self.path)

    # ---------------------------------------------------------------- checks with their messages

    def require_run(self) -> RunDir:
        """The folder exists and has a ``config.yaml``; else ``RunDirError``."""
        if not self.path.is_dir():
            raise RunDirError(f"run folder {self.path} does not exist")
        if not self.config.is_file():
            if {p.name for p in self.path.iterdir()} == {LOCK_NAME}:
                raise RunDirError(
                    f"{self.path} holds no run: a run started there was stopped before it wrote anything; "
                    "start it again (remove the folder or pick another --run-dir)"
                )
            raise RunDirError(f"{self.config} not found: {self.path} is not a twm run folder")
        return self

    def require_final_checkpoint(self, hint: str = "no final checkpoint") -> Path:
        """A run folder with ``checkpoints/final.pt``; returns its path."""
        self.require_run()
        if not self.final_checkpoint.is_file():
            raise RunDirError(f"{self.final_checkpoint} not found: the run has not finished ({hint})")
        return self.final_checkpoint

    def require_resumable(self) -> RunDir:
        """A run folder that is not finished and holds a resume checkpoint; else ``ResumeError``."""
        try:
            self.require_run()
        except RunDirError as exc:
            raise ResumeError(str(exc)) from None
        if self.is_finished():
            raise ResumeError(
                f"the run in {self.path} has already finished ({FINAL_JSON} exists); nothing to resume"
            )
        if not self.resume_checkpoints():
            raise ResumeError(
                f"no checkpoint to resume from in {self.checkpoints} (the run stopped before its first "
                "checkpoint); start it again with a new --run-dir"
            )
        return self


def create_run_dir(path: str | Path) -> Path:
    """Create a fresh run folder; refuse one that exists and is not empty."""
    run_dir = Path(path)
    if not RunDir(run_dir).is_empty():
        resumable = RunDir(run_dir).resume_checkpoints() and not RunDir(run_dir).is_finished()
        hint = f"; to continue that run: twm train --resume {run_dir}" if resumable else ""
        raise RunDirExistsError(
            f"run folder {run_dir} already exists and is not empty; choose another --run-dir{hint}"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


# --------------------------------------------------------------------------------------- the lock

LOCK_NAME = ".twm-lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 120.0
TAKEOVER_GUARD_S = 10.0  # a takeover guard older than this was left by a crash


class RunLockedError(RuntimeError):
    """The run folder is in use by another live process."""


def _pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether ``pid`` runs here; with ``since`` (epoch seconds), only if that process started by then.

    A process that started later holds a recycled pid, not the one that wrote the lock. The start
    time comes from /proc (Linux); without it only the pid is checked.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    if since is None:
        return True
    started = _process_start(pid)
    return started is None or started <= since + 1.0  # /proc's clock ticks are 10 ms; 1 s of slack


def _process_start(pid: int) -> float | None:
    """The epoch time ``pid`` started at, from /proc/<pid>/stat and the boot time; None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 is fields[0]
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in clock ticks


def read_lock(run_dir: str | Path) -> dict[str, Any] | None:
    """The lock's holder ({host, pid, token, started}), or None when the folder is not locked."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or garbage: treated as held until it goes stale by age


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"


class RunLock:
    """The lock of one run folder (see the module docstring). Use ``acquire``/``release`` or ``with``."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        heartbeat: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.warn = warn or (lambda message: None)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._thread is not None

    def is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            started = holder.get("started")
            since = float(started) if isinstance(started, int | float) else None
            return not _pid_alive(holder["pid"], since)
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.stale_after

    def acquire(self) -> RunLock:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "started": time.time()}
        for attempt in range(200):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.run_dir)
                if holder is None:
                    continue  # released in between: try again
                if not self.is_stale(holder):
                    raise RunLockedError(
                        f"run folder {self.run_dir} is in use by {_describe(holder)}; wait for it to end or "
                        f"stop it (a lock whose process is gone is taken over at once on its host, after "
                        f"{self.stale_after:.0f} s without a heartbeat from another host)"
                    ) from None
                if self._remove_stale(holder):
                    self.warn(f"took over the stale lock of {self.run_dir} held by {_describe(holder)}")
                else:  # another process is taking it over: see what it leaves
                    time.sleep(0.001 * min(attempt + 1, 20))
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(info, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:  # a full disk: leave no empty lock behind
                self.path.unlink(missing_ok=True)
                raise
            self._thread = threading.Thread(target=self._beat, name="twm-run-lock", daemon=True)
            self._thread.start()
            return self
        raise RunLockedError(f"run folder {self.run_dir}: could not take its lock (contended)")

    def _remove_stale(self, holder: dict[str, Any]) -> bool:
        """Remove the lock if it still is ``holder``'s, under the takeover guard; False if another
        process holds the guard or the lock changed meanwhile."""
        guard = self.path.with_name(f"{LOCK_NAME}.takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(OSError):  # left by a process that died while taking over
                if time.time() - guard.stat().st_mtime > TAKEOVER_GUARD_S:
                    guard.unlink()
            return False
        try:
            if read_lock(self.run_dir) != holder:
                return False
            self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        holder = read_lock(self.run_dir)
        if holder and holder.get("token") == self.token:  # never remove a lock someone took over
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
