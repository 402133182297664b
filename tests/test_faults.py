"""Fault injection: full disks, unusable run folders, recycled pids and racing lock takeovers end in
one line and the right exit code, and never lose work (issue 29)."""

from __future__ import annotations

import contextlib
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
