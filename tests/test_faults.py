"""Fault injection: full disks, unusable run folders, recycled pids and racing lock takeovers end in
one line and the right exit code, and never lose work (issue 29)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.synchronize
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMOKE = ["train", "--game", "catch", "--preset", "smoke", "--no-progress"]


def run_twm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


def one_line(text: str) -> str:
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, megabytes: int, options: str = "") -> Iterator[Path]:
    """A tmpfs of ``megabytes`` (a real ENOSPC); skips where this machine may not mount one."""
    mount = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    opts = f"size={megabytes}m" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path, leave_bytes: int) -> None:
    """Fill the filesystem until ``leave_bytes`` are free."""
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    (mount / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


@pytest.mark.parametrize("leave_kb", [4096, 200, 0])
def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path: Path, leave_kb: int) -> None:
    with small_tmpfs(tmp_path, 30) as mount:
        fill(mount, leave_kb * 1024)
        run_dir = mount / "run"
        out = run_twm(*SMOKE, "--run-dir", str(run_dir))
        assert out.returncode == 1, out.stderr
        err = one_line(out.stderr)
        assert err.startswith("twm: error: ") and "No space left on device" in err, err
        assert not (run_dir / ".twm-lock").exists()  # no lock left behind, empty or not
        if "is intact" in err:  # a checkpoint had been written before: it still loads
            from twm.training.checkpoint import load_checkpoint

            intact = Path(err.split("the last checkpoint ")[1].split(" is intact")[0])
            load_checkpoint(intact, require_checksum=True)


def test_run_folders_that_cannot_be_made_are_usage_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for run_dir in (a_file / "run", tmp_path / ("x" * 300)):
        out = run_twm(*SMOKE, "--run-dir", str(run_dir))
        assert out.returncode == 2 and one_line(out.stderr).startswith("twm: error: cannot use run folder")
    with small_tmpfs(tmp_path, 8, "ro") as read_only:
        out = run_twm(*SMOKE, "--run-dir", str(read_only / "run"))
        assert out.returncode == 2 and "Read-only file system" in one_line(out.stderr)


def test_resume_of_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    import shutil

    source = tmp_path / "run"
    out = run_twm(*SMOKE, "--run-dir", str(source), "--set", "train.total_steps=200")
    assert out.returncode == 0, out.stderr
    (source / "eval" / "final.json").unlink()  # as if stopped before its end: resumable
    with small_tmpfs(tmp_path, 30) as mount:
        shutil.copytree(source, mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        out = run_twm("train", "--resume", str(mount / "run"), "--no-progress")
        assert out.returncode == 2, out.stderr
        assert "Read-only file system" in one_line(out.stderr)


# ------------------------------------------------------------------ the run lock


def write_lock(run_dir: Path, pid: int, started: float) -> None:
    import json
    import socket

    info = {"host": socket.gethostname(), "pid": pid, "token": "t", "started": started}
    (run_dir / ".twm-lock").write_text(json.dumps(info))


def test_a_lock_held_by_a_recycled_pid_is_stale(tmp_path: Path) -> None:
    import time

    from twm.run_dir import RunLock, RunLockedError

    # pid 1 runs, but it started long after 1970: the pid was recycled, the writer is gone.
    write_lock(tmp_path, pid=1, started=1.0)
    warnings: list[str] = []
    with RunLock(tmp_path, warn=warnings.append):
        assert warnings and "took over the stale lock" in warnings[0]
    # This very process, started before its lock was written: a live holder.
    write_lock(tmp_path, pid=os.getpid(), started=time.time())
    with pytest.raises(RunLockedError, match="is in use by process"):
        RunLock(tmp_path).acquire()


def _contend(run_dir: str, barrier: mp.synchronize.Barrier, done: mp.synchronize.Barrier, out: mp.Queue) -> None:
    from twm.run_dir import RunLock, RunLockedError

    lock = RunLock(run_dir)
    barrier.wait()
    try:
        lock.acquire()
        got = True
    except RunLockedError:
        got = False
    done.wait()  # every contender has tried before a holder lets go
    out.put(got)
    if got:
        lock.release()


@pytest.mark.parametrize(("processes", "trials"), [(2, 200), (4, 50)])
def test_racing_takeovers_of_a_stale_lock_leave_one_holder(tmp_path: Path, processes: int, trials: int) -> None:
    ctx = mp.get_context("fork")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    double = 0
    for trial in range(trials):
        run_dir = tmp_path / f"t{trial}"
        run_dir.mkdir()
        write_lock(run_dir, pid=dead.pid, started=1.0)
        barrier, done, out = ctx.Barrier(processes), ctx.Barrier(processes), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(run_dir), barrier, done, out)) for _ in range(processes)]
        for p in procs:
            p.start()
        holders = sum(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert holders >= 1, f"trial {trial}: nobody took the stale lock over"
        double += holders > 1
    assert double == 0, f"{double} of {trials} trials ended with two holders"


# ------------------------------------------------------------------ bad input: one line, exit 2, no folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    out = run_twm(*SMOKE, "--run-dir", str(run_dir), "--set", "train.total_steps=150")
    assert out.returncode == 0, out.stderr
    return run_dir


def bad_inputs(tmp: Path, run: Path) -> list[tuple[list[str], str]]:
    """(arguments, a word the one-line error must contain); {new} is a folder that must not appear."""
    (tmp / "key1.yaml").write_text("1: {a: 1}\n")
    (tmp / "keytrue.yaml").write_text("true: {a: 1}\n")
    (tmp / "latin1.yaml").write_bytes(b"train:\n  seed: \xff\xfe\n")
    new = str(tmp / "new")
    return [
        ([*SMOKE, "--seed", "99999999999999999999", "--run-dir", new], "train.seed"),
        ([*SMOKE, "--set", "train.seed=1e30", "--run-dir", new], "train.seed"),
        ([*SMOKE, "--config", str(tmp / "key1.yaml"), "--run-dir", new], "section"),
        ([*SMOKE, "--config", str(tmp / "keytrue.yaml"), "--run-dir", new], "section"),
        ([*SMOKE, "--config", str(tmp / "latin1.yaml"), "--run-dir", new], "UTF-8"),
        (["eval", str(run), "--episodes", "99999999999999999999"], "--episodes"),
        (["dream", str(run), "--out", f"{new}.gif", "--fps", "nan"], "--fps"),
        (["dream", str(run), "--out", f"{new}.gif", "--horizon", "100000"], "--horizon"),
        (["play", str(run), "--record", f"{new}.gif", "--actions", "random:100000000"], "random:N"),
        (["play", str(run), "--scale", "0"], "--scale"),
        (["config", "--keys", "--set", "train.seed=abc"], "--keys"),
        (["sweep", "--games", "catch", "--seeds", "0-10000000000", "--root", new], "--seeds"),
    ]


def test_bad_inputs_are_one_line_exit_2_and_leave_nothing(tmp_path: Path, finished_run: Path) -> None:
    cases = bad_inputs(tmp_path, finished_run)
    for args, word in cases:
        out = run_twm(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert word in one_line(out.stderr) and out.stderr.startswith("twm: error: "), (args, out.stderr)
        assert not any(p.name.startswith("new") for p in tmp_path.iterdir()), args
    print(f"{len(cases)} bad inputs: each one line, exit 2, no folder")


def test_a_run_config_that_is_not_utf8_is_one_line_on_resume(tmp_path: Path, finished_run: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "eval" / "final.json").unlink()
    (run_dir / "config.yaml").write_bytes(b"\xff\xfe" + (run_dir / "config.yaml").read_bytes())
    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 2 and "UTF-8" in one_line(out.stderr)


def test_play_without_a_display_says_so(finished_run: Path) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    out = subprocess.run(
        [sys.executable, "-m", "twm.cli", "play", str(finished_run)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 2 and "--record" in one_line(out.stderr)


def test_sizes_too_large_for_memory_are_one_line() -> None:
    out = run_twm("info", "--game", "catch", "--preset", "smoke", "--set", "obs_model.channels=100000000")
    assert out.returncode == 1 and "out of memory" in one_line(out.stderr)


# ------------------------------------------------------------------ small ones


def test_the_resume_hint_is_shell_quoted(tmp_path: Path) -> None:
    import shlex
    import signal

    from twm.training.stops import TrainingStopped

    run_dir = tmp_path / "my runs" / "pong; rm -rf x"
    stopped = TrainingStopped(signal.SIGINT, None, run_dir, 10, 100, "during training")
    hint = str(stopped).split("continue with: ")[1]
    assert shlex.split(hint) == ["twm", "train", "--resume", str(run_dir)]


def test_a_folder_killed_before_it_wrote_anything_says_so(tmp_path: Path) -> None:
    write_lock(tmp_path, pid=os.getpid(), started=1.0)
    (tmp_path / ".twm-lock").unlink()
    (tmp_path / ".twm-lock").write_text("{}")  # SIGKILLed right after taking its lock
    out = run_twm("train", "--resume", str(tmp_path), "--no-progress")
    assert out.returncode == 2 and "stopped before it wrote anything" in one_line(out.stderr)


def test_a_sweep_whose_reader_goes_away_finishes_its_runs(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    command = (
        f"{sys.executable} -m twm.cli sweep --games catch --seeds 0 --preset smoke --root {root} "
        "--set train.total_steps=150 --no-progress | head -c 1"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=ENV, timeout=300)
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert list(root.glob("*/*/eval/final.json")) and (root / "sweep.json").exists()


def test_a_torn_last_line_of_metrics_is_dropped_on_resume(tmp_path: Path) -> None:
    from twm.training.resume import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n{"st')  # killed mid-line, then shortened by the disk
    warnings: list[str] = []
    truncate_metrics(path, size=100, warn=warnings.append)
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    assert any("torn" in w for w in warnings)
    truncate_metrics(path, size=len(b'{"step": 1}\n'), warn=warnings.append)  # the usual cut back
    assert path.read_bytes() == b'{"step": 1}\n'


def test_a_final_json_left_half_written_is_cleaned_on_resume(tmp_path: Path, finished_run: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "eval" / "final.json").unlink()
    leftover = run_dir / "eval" / ".final.json.tmp-12345"
    leftover.write_text('{"game": "ca')  # killed while writing final.json
    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert not leftover.exists() and (run_dir / "eval" / "final.json").exists()


def test_a_ray_node_killed_mid_run_the_run_finishes_and_keeps_its_attempt_count(tmp_path: Path) -> None:
    # A two-node Ray cluster (a head without CPUs, one worker); once the run has a checkpoint a second
    # worker joins and the first dies. Ray runs the task again on the new node, which resumes the run;
    # sweep.json counts every attempt (it used to restart at 1: the re-run task counted afresh).
    import json
    import time

    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    memory = 80_000_000
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": memory})
    try:
        first = cluster.add_node(num_cpus=1, object_store_memory=memory)
        root = tmp_path / "sweep"
        args = ["sweep", "--games", "catch", "--seeds", "0", "--preset", "smoke", "--root", str(root)]
        args += ["--ray-address", cluster.address, "--retries", "2", "--no-progress"]
        args += ["--set", "train.total_steps=400", "--set", "train.checkpoint_interval=50"]
        sweep = subprocess.Popen(
            [sys.executable, "-m", "twm.cli", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        checkpoints = root / "catch" / "seed_0" / "checkpoints"
        deadline = time.monotonic() + 240
        while not any(checkpoints.glob("step_*.pt")):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()[0][-3000:]
            time.sleep(0.2)
        cluster.add_node(num_cpus=1, object_store_memory=memory)
        cluster.remove_node(first, allow_graceful=False)
        # On a real cluster the node's processes die with it; here the attempt's `twm train` (its own
        # session) would outlive the simulated node, so it is killed as the node's death would.
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.kill(int(json.loads((root / "catch" / "seed_0.pid").read_text())["pid"]), 9)
        out, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, out[-3000:]
        (run,) = json.loads((root / "sweep.json").read_text())["runs"]
        log = (root / "catch" / "seed_0.log").read_text()
        # sweep.json counts every attempt the log shows (a re-run task used to start again at 1).
        assert run["status"] == "finished" and run["attempts"] == log.count("=== twm sweep: attempt"), run
        assert (root / "catch" / "seed_0" / "eval" / "final.json").is_file()
    finally:
        cluster.shutdown()
