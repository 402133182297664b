"""A sweep's progress: one line per finished run and a bar of runs done.

Its own module because both the sweep and its runners report to it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import IO

from twm.launch.plan import RunResult, Status


class Progress:
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


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _outcome(result: RunResult) -> str:
    score = "" if result.score is None else f", score {result.score:.2f}"
    tries = plural(result.attempts, "attempt")
    if result.status is Status.SKIPPED:
        return f"skipped, already finished{score}"
    if result.status is Status.FINISHED:
        return f"finished{score} ({tries}, {result.seconds:.0f} s)"
    if result.attempts == 0:
        return f"{result.status.value}: {result.message}"
    return f"{result.status.value} after {tries}: {result.message}"
