"""One run of a sweep brought to its end, one ``twm train`` subprocess per attempt.

``execute_run`` skips, starts, resumes or restarts a run (``twm.launch.plan.plan_run``) and retries a
failed attempt up to the run's ``retries``; ``run_attempt`` runs one attempt, its output appended to
the run's log and its pid in the run's pid file while it runs. ``request_stop`` (Ctrl-C, SIGTERM)
starts no new attempt and signals every running one, which then writes its checkpoint and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from twm.files import atomic_write_text
from twm.launch.plan import (
    Action,
    RunResult,
    RunSpec,
    Status,
    conclude,
    config_differences,
    move_aside,
    plan_run,
)
from twm.run_dir import FINAL_JSON, RunDir

EXIT_USAGE = 2  # twm train's exit code for a usage problem: retrying cannot help
STOP_GRACE_S = 300.0  # how long an interrupted sweep waits for its runs to write their checkpoint

Notify = Callable[[str], None]

# Children of this process, so that a stop request (Ctrl-C, SIGTERM) reaches every running attempt.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()
stop_requested = threading.Event()  # set by request_stop; cleared by run_sweep when a sweep starts


# --------------------------------------------------------------------------------------- pid files


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


def attempts_so_far(spec: RunSpec) -> int:
    """Attempts this sweep already made at the run (read from its attempt file), 0 for a new sweep.

    A Ray task re-run after its node died starts ``execute_run`` afresh; without this its retry
    budget (and the attempt count in sweep.json) would start again at every re-run. The count is
    not kept in the pid file, which goes when an attempt ends: a task whose node died between
    ending one attempt and starting the next left no pid file, and its re-run counted from 1 again.
    """
    if not spec.sweep_id:
        return 0
    try:
        info = json.loads(spec.attempt_path.read_text())
    except (OSError, ValueError):
        return 0
    if not isinstance(info, dict) or info.get("sweep") != spec.sweep_id:
        return 0
    attempt = info.get("attempt")
    return attempt if isinstance(attempt, int) and attempt > 0 else 0


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


# --------------------------------------------------------------------------------------- commands and exits


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


# --------------------------------------------------------------------------------------- one attempt


def request_stop(sig: int = signal.SIGTERM) -> None:
    """Start no new attempt, and send ``sig`` to every running one (the trainer then checkpoints)."""
    stop_requested.set()
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
    # The attempt is counted before its log header is written, and the record stays after it ends.
    atomic_write_text(spec.attempt_path, json.dumps({"sweep": spec.sweep_id, "attempt": attempt}) + "\n")
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
    info = {
        "pid": child.pid,
        "host": socket.gethostname(),
        "attempt": attempt,
        "started": time.time(),
        "sweep": spec.sweep_id,
    }
    with _children_lock:
        _children[child.pid] = child
    try:
        atomic_write_text(spec.pid_path, json.dumps(info) + "\n")
        if stop_requested.is_set():  # a stop request that came while starting
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


# --------------------------------------------------------------------------------------- one run


def execute_run(spec: RunSpec, notify: Notify = print) -> RunResult:
    """Bring one run to its end: skip, start, resume or restart it, retrying failed attempts.

    Never raises for a failed run (that is a ``FAILED`` result); ``notify`` gets one line per event.
    """
    t0 = time.monotonic()
    result = RunResult(spec.game, spec.seed, spec.run_dir)
    result.attempts = attempts_so_far(spec)  # > 0 only when this sweep ran the run before
    folder = RunDir(spec.run_dir)
    busy = running_elsewhere(spec.pid_path)
    if busy is not None and result.attempts > 0:
        # An attempt of this very sweep whose task was lost (a Ray worker that died) outlives it on
        # this host: it holds the run; wait for it to end, then go on from what it left.
        notify(f"{spec.name}: an earlier attempt of this sweep still runs in process {busy}; waiting for it")
        while running_elsewhere(spec.pid_path) is not None and not stop_requested.is_set():
            time.sleep(0.5)
        busy = None
    if busy is not None:
        return conclude(result, Status.FAILED, t0, f"still running in process {busy} (another sweep?)")
    if plan_run(spec.run_dir) in (Action.SKIP, Action.RESUME):
        for diff in config_differences(spec)[:3]:
            notify(f"{spec.name}: warning: the run keeps its own config.yaml; {diff}")
    while True:
        if stop_requested.is_set():
            return conclude(result, Status.INTERRUPTED, t0, result.message or "not started")
        action = plan_run(spec.run_dir)
        if action is Action.SKIP:
            status = Status.SKIPPED if result.attempts == 0 else Status.FINISHED
            return conclude(result, status, t0, "")
        if result.attempts > spec.retries:
            return conclude(result, Status.FAILED, t0, result.message)
        if action is Action.RESTART:
            moved = move_aside(spec.run_dir)
            notify(f"{spec.name}: no checkpoint and no {FINAL_JSON} in it; moved it aside to {moved}")
        result.attempts += 1
        resume = action is Action.RESUME
        what = f"resume from {folder.latest_checkpoint_name() or 'its checkpoint'}" if resume else "start"
        notify(f"{spec.name}: {what} (attempt {result.attempts}/{spec.retries + 1}) in {spec.run_dir}")
        code = run_attempt(spec, train_command(spec, resume), result.attempts)
        if code == 0 and folder.is_finished():
            continue  # the next plan is SKIP: finished
        why = last_log_line(spec.log_path)
        result.message = f"{describe_exit(code)}: {why}" if why else describe_exit(code)
        if stop_requested.is_set():
            continue
        if code == EXIT_USAGE:
            return conclude(result, Status.FAILED, t0, result.message)
        more = "retrying" if result.attempts <= spec.retries else "no retries left"
        notify(f"{spec.name}: attempt {result.attempts} failed ({result.message}); {more}")
