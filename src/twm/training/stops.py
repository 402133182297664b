"""Stopping a run: SIGINT and SIGTERM become a stop at the next safe point (``StopControl``).

Signals
    The first SIGINT or SIGTERM sets a flag; the current step (or update, or pretraining step) finishes,
    a checkpoint is written and the run raises ``TrainingStopped`` (the CLI exits with 128 + signal:
    130, 143). A running evaluation is dropped at once instead (it changes no training state, and the
    checkpoint then says it is still to run). A second signal raises ``Interrupted`` immediately; atomic
    writes keep every file whole, so the last complete checkpoint remains the resume point.

Test hooks (environment variables)
    ``TWM_TEST_SIGNAL_AT=<point>`` makes the trainer send itself ``TWM_TEST_SIGNAL`` (default SIGINT)
    once, at the safe point named ``prefill:N``, ``pretrain:<obs|dyn|ac>:I``, ``train:N`` (after
    interaction N and its updates, before an evaluation due at N), ``eval:N`` (inside the evaluation at
    N), ``after_eval:N`` or ``final_eval`` (inside the final evaluation), where N counts interactions.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class TrainingStopped(Exception):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; exit code ``128 + signum``."""

    def __init__(
        self, signum: int, checkpoint: Path | None, run_dir: Path, interactions: int, total: int, where: str
    ) -> None:
        saved = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(
            f"stopped by {signal.Signals(signum).name} {where} at {interactions}/{total} interactions; "
            f"{saved}; continue with: twm train --resume {shlex.quote(str(run_dir))}"
        )
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class Interrupted(BaseException):
    """A second SIGINT/SIGTERM: leave at once without a new checkpoint (the last complete one stays).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        super().__init__(signum)
        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum


class AbortEval(BaseException):
    """Raised by the signal handler inside an evaluation: an evaluation changes no training state, so it
    can be dropped and redone after the resume instead of making a preempted job wait for it."""


class StopControl:
    """Turns SIGINT/SIGTERM into a stop at the next safe point (see the module docstring)."""

    def __init__(self, last_checkpoint: Callable[[], Path | None]) -> None:
        self.signal: int | None = None  # the first signal received, if any
        self.abortable_now = False  # inside an evaluation: a signal drops it at once
        self._last_checkpoint = last_checkpoint
        self._test_signal_at = os.environ.get("TWM_TEST_SIGNAL_AT")

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM inside the block (main thread only; elsewhere the defaults stay)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            # The second signal: leave now. Every file is written atomically, so whatever was being
            # written is either complete or not there; the last complete checkpoint is the resume point.
            raise Interrupted(signum, self._last_checkpoint())
        self.signal = signum
        if self.abortable_now:
            raise AbortEval()

    def abortable(self, where: str, evaluate: Callable[[], T]) -> T | None:
        """``evaluate()``, or None when a stop was asked for before or during it (it is redone later)."""
        try:
            self.abortable_now = True
            self.test_point(where)
            if not self.requested:
                return evaluate()
        except AbortEval:
            pass
        except Exception:
            # Evaluation worker processes may die of the same SIGINT/SIGTERM first; that is a stop too.
            if not self.requested:
                raise
        finally:
            self.abortable_now = False
        return None

    def test_point(self, where: str) -> None:
        """The ``TWM_TEST_SIGNAL_AT`` hook: signal this process once, at the named safe point."""
        if self._test_signal_at != where:
            return
        name = os.environ.get("TWM_TEST_SIGNAL", "SIGINT")
        self._test_signal_at = None  # once per process
        os.kill(os.getpid(), signal.Signals[name if name.startswith("SIG") else "SIG" + name])
