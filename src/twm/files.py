"""Writing files so that a crash never leaves a torn one: checkpoints, ``eval/final.json``, sweep files.

Test hooks (environment variables, read at each ``atomic_write``)
    ``TWM_TEST_WRITE_DELAY=<seconds>[@<part of a file name>]``: sleep after the payload is in the
    temporary file, before it is completed and renamed (only for files whose name contains the given
    part), so a test can SIGKILL or interrupt a process in the middle of a checkpoint write.
    ``TWM_TEST_WRITE_DELAY_MARK=<path>``: with the delay, create ``path`` when the sleep begins (the
    temporary file grows before that, while ``torch.save`` writes, so its size is no sign).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


class CheckpointWriteError(RuntimeError):
    """Writing failed (e.g. no space left on device); the previous file is intact, the temporary removed."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_

    def keeping(self, previous: Path | None) -> CheckpointWriteError:
        """The same error, saying which earlier checkpoint is still intact."""
        intact = f"the last checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        return CheckpointWriteError(f"{self}; {intact}", self.errno)


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path: a file another handle writes (fsync acts on the file, not
    on the descriptor) or a directory, to persist a rename in it. Best effort: not every platform
    can open a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _test_write_delay(path: Path, f: IO[bytes]) -> None:
    """The ``TWM_TEST_WRITE_DELAY=<seconds>[@<part of the file name>]`` hook (module docstring)."""
    hook = os.environ.get("TWM_TEST_WRITE_DELAY")
    if not hook:
        return
    seconds, _, name_part = hook.partition("@")
    if name_part in path.name:
        f.flush()  # the partial file is visible on disk while we sleep
        mark = os.environ.get("TWM_TEST_WRITE_DELAY_MARK")
        if mark:
            Path(mark).touch()
        time.sleep(float(seconds))


def _temp_name(path: Path) -> Path:
    # Hidden and with a suffix after ".pt"/".npy": never mistaken for a checkpoint or a chunk.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], object],
    *,
    finish: Callable[[IO[bytes]], object] | None = None,
) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync, then ``os.replace`` it onto ``path``.

    ``finish(f)``, if given, runs after the test hook (e.g. a checksum trailer of what ``write``
    wrote: a file cut short by a kill in the hook has none). An ``OSError``
    (ENOSPC, EIO, ...), or the ``RuntimeError`` torch's zip writer raises for them, becomes
    ``CheckpointWriteError``; the temporary file is removed in every case
    but SIGKILL, and ``path`` is untouched unless the whole write succeeded.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w+b") as f:
            write(f)
            _test_write_delay(path, f)
            if finish is not None:
                finish(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except CheckpointWriteError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CheckpointWriteError(f"cannot write {path}: {reason}", exc.errno) from None
    except RuntimeError as exc:  # torch's zip writer reports ENOSPC and EIO this way, without an errno
        stop = exc.__context__
        if isinstance(stop, BaseException) and not isinstance(stop, Exception):
            # A signal handler raised (a second Ctrl-C) inside torch.save's Python write; the zip
            # writer wrapped it in RuntimeError. It is a stop, not a failed write.
            raise stop from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        errno_ = None
        if _nearly_full(path.parent):
            reason, errno_ = f"{os.strerror(errno.ENOSPC)} (torch: {reason})", errno.ENOSPC
        raise CheckpointWriteError(f"cannot write {path}: {reason}", errno_) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    fsync_path(path.parent)  # persist the rename itself (the directory entry)


def _nearly_full(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` has less than 1 MiB free (so a failed write was ENOSPC)."""
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file beside it and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)
