"""The run folder's lock: one training process per run folder (no torch import here).

A process that trains a run holds ``RUN_DIR/.twm-lock`` for its whole life. The file is created
with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFS v3+, which a Ray cluster's shared
folder is) and holds the holder's host, pid, a random token and when it started. While the run
lives, a background thread touches the file every ``heartbeat`` seconds. A second process is
refused with ``RunLockedError`` naming the holder, unless the lock is stale:

- on the holder's own host: its pid no longer runs;
- on another host (where pids mean nothing): the file was not touched for ``stale_after``
  seconds (default 120 s, four heartbeats; hosts' clocks must agree to within that).

A stale lock is taken over with a warning: it is renamed away (a rename succeeds for one process
only) and the lock is created again with ``O_EXCL``. ``flock`` is not used: it does not work
across hosts on many shared file systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCK_NAME = ".twm-lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 120.0


class RunLockedError(RuntimeError):
    """The run folder is in use by another live process."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


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
            return not _pid_alive(holder["pid"])
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > self.stale_after

    def acquire(self) -> RunLock:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.run_dir)
                if holder is None:
                    continue  # released in between: try again
                if not self.is_stale(holder):
                    raise RunLockedError(
                        f"run folder {self.run_dir} is in use by {_describe(holder)}; wait for it to end or "
                        f"stop it (if that process is gone, its lock goes stale after {self.stale_after:.0f} s)"
                    ) from None
                aside = self.path.with_name(f"{LOCK_NAME}.stale-{self.token}")
                try:
                    os.replace(self.path, aside)
                except FileNotFoundError:
                    continue  # another process took it over first
                aside.unlink(missing_ok=True)
                self.warn(f"took over the stale lock of {self.run_dir} held by {_describe(holder)}")
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            self._thread = threading.Thread(target=self._beat, name="twm-run-lock", daemon=True)
            self._thread.start()
            return self
        raise RunLockedError(f"run folder {self.run_dir}: could not take its lock (contended)")

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
