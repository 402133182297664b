"""The run-folder lock (twm.run_dir): one training process per run folder, stale locks taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twm.run_dir import LOCK_NAME, RunLock, RunLockedError, read_lock
from twm.training.logger import read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN_ARGS = ["--game", "catch", "--preset", "smoke", "--no-progress", "--set", "train.total_steps=200"]
TRAIN_ARGS += ["--set", "train.budget=5000", "--set", "train.checkpoint_interval=30"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(run_dir: Path, **holder: object) -> Path:
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"token": "theirs", "started": time.time(), **holder}))
    return path


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        assert read_lock(tmp_path)["token"] == lock.token
        with pytest.raises(RunLockedError) as err:
            RunLock(tmp_path).acquire()
        message = str(err.value)
        assert f"process {os.getpid()}" in message and socket.gethostname() in message
    assert not (tmp_path / LOCK_NAME).exists()  # released
    RunLock(tmp_path).acquire().release()  # and free again


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    write_lock(tmp_path, host=socket.gethostname(), pid=dead_pid())
    warnings: list[str] = []
    lock = RunLock(tmp_path, warn=warnings.append).acquire()
    assert read_lock(tmp_path)["token"] == lock.token
    assert len(warnings) == 1 and "stale lock" in warnings[0]
    lock.release()


def test_lock_from_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path: Path) -> None:
    path = write_lock(tmp_path, host="some-other-node", pid=os.getpid())
    with pytest.raises(RunLockedError, match="some-other-node"):
        RunLock(tmp_path, stale_after=60).acquire()
    old = time.time() - 61
    os.utime(path, (old, old))
    lock = RunLock(tmp_path, stale_after=60).acquire()
    assert read_lock(tmp_path)["host"] == socket.gethostname()
    lock.release()


def test_heartbeat_keeps_the_lock_fresh_and_release_spares_a_taken_over_lock(tmp_path: Path) -> None:
    lock = RunLock(tmp_path, heartbeat=0.05).acquire()
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 5  # touched again
    write_lock(tmp_path, host="elsewhere", pid=1)  # someone took it over meanwhile
    lock.release()
    assert read_lock(tmp_path)["host"] == "elsewhere"


@pytest.mark.slow
def test_second_trainer_on_a_live_run_is_refused_and_the_live_run_stays_in_order(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # The first run pauses 20 s while writing its checkpoint at interaction 150: alive, with
    # checkpoints (long enough for the second to start on a loaded machine).
    mark = tmp_path / "sleeping"
    first = subprocess.Popen(
        [sys.executable, "-m", "twm.cli", "train", *TRAIN_ARGS, "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "TWM_TEST_WRITE_DELAY": "20@step_000000150", "TWM_TEST_WRITE_DELAY_MARK": str(mark)},
    )
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-m", "twm.cli", "train", "--resume", str(run_dir), "--no-progress"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert f"in use by process {first.pid} on host {socket.gethostname()}" in second.stderr
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == sorted(steps) and steps[-1] == 200
    assert not (run_dir / LOCK_NAME).exists()
