"""``twm sweep``: one training run per (game, seed), locally or as Ray tasks, surviving crashes.

Layout under the sweep root ``ROOT``::

    ROOT/sweep.json                   every run's status, attempts and final score (rewritten as runs end)
    ROOT/<Game>/seed_<N>/             the run folder of ``twm train`` (config.yaml, checkpoints/, eval/...)
    ROOT/<Game>/seed_<N>.log          stdout and stderr of every attempt, appended, one header per attempt
    ROOT/<Game>/seed_<N>.pid          while an attempt runs: its process id and host (JSON)
    ROOT/<Game>/seed_<N>.attempt      the sweep and attempt number of the latest attempt (JSON)
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

This module is the entry point (``run_sweep``, called by ``twm.cli``): the progress lines, the
summary table, ``sweep.json`` and the signal handling. ``twm.launch.plan`` holds the options, specs
and the decision per run folder, ``twm.launch.attempt`` one run's attempts, ``twm.launch.runners``
the local and the Ray runner.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, cast

from twm.files import atomic_write_text
from twm.launch.attempt import stop_requested
from twm.launch.plan import (
    RunResult,
    Status,
    SweepError,
    SweepOptions,
    build_specs,
    validate,
)
from twm.launch.progress import Progress, plural
from twm.launch.runners import import_ray, run_local, run_ray

SWEEP_JSON = "sweep.json"


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
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
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


class PipeSafe(io.TextIOBase):
    """A text stream that stops writing, without an error, once its reader has gone (BrokenPipeError)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self.closed_pipe = True
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.closed_pipe = True

    def isatty(self) -> bool:
        return not self.closed_pipe and self.stream.isatty()


def run_sweep(opts: SweepOptions, out: IO[str] | None = None) -> int:
    """Everything ``twm sweep`` does; returns its exit code (0 all done, 1 a run failed, 128+signal stopped).

    Raises ``SweepError`` / ``ConfigError`` / ``UnknownGameError`` for a usage problem, before any run starts.
    """
    # `twm sweep ... | head` closes the pipe early: the sweep and its runs go on, silently.
    stream: IO[str] = cast(IO[str], PipeSafe(out if out is not None else sys.stdout))
    out = stream
    validate(opts)
    if opts.ray_address is not None:
        import_ray()  # a missing Ray is a usage error before anything is written
    started = time.time()
    specs = build_specs(opts, sweep_id=f"{os.getpid()}@{started:.6f}")
    rows = {(s.game, s.seed): RunResult(s.game, s.seed, s.run_dir) for s in specs}
    try:
        write_sweep_json(opts, rows.values(), started)
    except OSError as exc:
        raise SweepError(f"cannot write the sweep folder {opts.root}: {exc.strerror or exc}") from None
    progress = Progress(len(specs), opts.progress, out)
    where = f"on Ray ({opts.ray_address})" if opts.ray_address else f"locally, {opts.parallel or 1} at a time"
    counts = f"{plural(len(opts.games), 'game')} x {plural(len(opts.seeds), 'seed')}"
    progress.line(f"{plural(len(specs), 'run')} ({counts}) {where} in {Path(opts.root).resolve()}")

    def on_result(result: RunResult) -> None:
        rows[(result.game, result.seed)] = result
        try:
            write_sweep_json(opts, rows.values(), started)
        except OSError as exc:  # e.g. a full disk: the runs go on; the final write tries again
            progress.line(f"warning: cannot update {SWEEP_JSON}: {exc.strerror or exc}")

    progress.on_result = on_result
    stop_requested.clear()
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
