"""The life of a run around its schedule: resume checks, signals, stops, failures, test hooks.

Reproducibility, checkpoints, resume
    Every random stream derives from ``cfg.train.seed`` (``twm.seeding``). The trainer writes a resume
    checkpoint (``twm.training.state`` lists what it holds) at safe points between two steps: every
    ``checkpoint_interval`` interactions (after the evaluation when both fall on one interaction), with
    every pretraining log line, after pretraining, before the final evaluation, and on SIGINT or
    SIGTERM. On the CPU a run is a function of its config, and an interrupted and resumed run equals
    the uninterrupted one bit for bit (apart from ``TIME_KEYS`` of ``twm.training.trainer``).

Signals
    The first SIGINT or SIGTERM sets a flag; the current step (or update, or pretraining step) finishes,
    a checkpoint is written and the run raises ``TrainingStopped`` (the CLI exits with 128 + signal:
    130, 143). A running evaluation is dropped at once instead (it changes no training state, and the
    checkpoint then says it is still to run). A second signal raises ``Interrupted`` immediately; atomic
    writes keep every file whole, so the last complete checkpoint remains the resume point.

Failures
    A NaN or infinite loss or gradient norm raises ``NonFiniteLossError`` naming the key, the update and
    interaction and the last good checkpoint (checked once per interaction and before every log line and
    checkpoint, so no checkpoint ever holds non-finite weights). A failed checkpoint write (e.g. disk
    full) raises ``CheckpointWriteError``; the previous checkpoint stays intact.

Test hooks (environment variables)
    ``TWM_TEST_SIGNAL_AT=<point>`` makes the trainer send itself ``TWM_TEST_SIGNAL`` (default SIGINT)
    once, at the safe point named ``prefill:N``, ``pretrain:<obs|dyn|ac>:I``, ``train:N`` (after
    interaction N and its updates, before an evaluation due at N), ``eval:N`` (inside the evaluation at
    N), ``after_eval:N`` or ``final_eval`` (inside the final evaluation), where N counts interactions.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from twm.config import Config, ConfigError
from twm.replay import ReplayBuffer
from twm.run_dir import ResumeError, RunDir
from twm.training.checkpoint import CheckpointError, CheckpointManager

T = TypeVar("T")


class Phase(StrEnum):
    """Where a run is; saved in each checkpoint so a resume continues at the same place."""

    PREFILL = "prefill"
    PRETRAIN = "pretrain"
    TRAIN = "train"
    FINAL_EVAL = "final_eval"
    DONE = "done"


PHASE_WORDS = {
    Phase.PREFILL: "during the prefill",
    Phase.PRETRAIN: "during pretraining",
    Phase.TRAIN: "during training",
    Phase.FINAL_EVAL: "before the final evaluation",
    Phase.DONE: "after the run",
}


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


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm became NaN or infinite; the message names it, the step and the last
    good checkpoint (which holds finite weights: the check runs before every checkpoint)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


def warn(message: str) -> None:
    print(f"twm: warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ finite checks


class FiniteCheck:
    """Collects the metrics of each step on their device and checks them all with one sync later.

    Checking every update with ``.item()`` would stall the GPU queue; the trainer checks once per
    interaction (``act`` synchronises there anyway) and before every log line and checkpoint, so no
    checkpoint ever holds non-finite weights, and the error still names the first bad step.
    """

    def __init__(self, checkpoints: CheckpointManager) -> None:
        self._pending: list[tuple[str, list[str], Tensor]] = []
        self._checkpoints = checkpoints

    def add(self, where: str, metrics: Mapping[str, Any]) -> None:
        keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
        if keys:
            device = metrics[keys[0]].device
            values = torch.stack([metrics[k].detach().float().mean().to(device) for k in keys])
            self._pending.append((where, keys, values))

    def first_bad(self) -> tuple[str, str, float] | None:
        """(where, key, value) of the first non-finite value since the last call, else None."""
        pending, self._pending = self._pending, []
        if not pending or bool(torch.isfinite(torch.cat([v for _, _, v in pending])).all()):
            return None
        for where, keys, values in pending:
            for key, value in zip(keys, values.tolist(), strict=True):
                if not math.isfinite(value):
                    return where, key, value
        return None  # unreachable: some value was non-finite

    def check(self) -> None:
        """``NonFiniteLossError`` naming the first bad value and the last good checkpoint, if any."""
        bad = self.first_bad()
        if bad is None:
            return
        where, key, value = bad
        checkpoints = self._checkpoints
        last = checkpoints.last_path
        kind = "loss" if "loss" in key else "value"
        good = (
            f"last good checkpoint: {last} (interaction {checkpoints.last_interactions})"
            if last is not None
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(f"non-finite {kind} {key}={value} {where}; {good}", last)


# ------------------------------------------------------------------------------ resume checks


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``section.key: A in the checkpoint, B in config.yaml`` for every differing value (device excluded)."""
    out = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) == ("train", "device"):
                continue  # where a run continues is not part of what it computes
            if a.get(key) != b.get(key):
                out.append(
                    f"{section}.{key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} in config.yaml"
                )
    return out


def resumable_config(run_dir: RunDir) -> Config:
    """The config of a run that ``--resume`` can continue; ``ResumeError`` says why not otherwise."""
    run_dir.require_resumable()
    return Config.from_yaml(run_dir.config)


def load_resume_point(
    run_dir: RunDir, cfg: Config, warn: Callable[[str], None]
) -> tuple[CheckpointManager, dict[str, Any], ReplayBuffer, Path]:
    """The newest good checkpoint of a locked run folder, checked against its ``config.yaml``.

    A checkpoint written with a different config, or by an incompatible twm version, is refused
    (``ResumeError``); a corrupt one is skipped with a warning in favour of the previous one.
    """
    manager = CheckpointManager(run_dir.path)
    manager.remove_stale_temporaries()
    try:
        state, replay, path = manager.load_latest("cpu", warn=warn)
    except CheckpointError as exc:
        raise ResumeError(str(exc)) from None
    try:
        saved_cfg = Config.from_dict(state["config"]).to_dict()
    except ConfigError as exc:
        raise ResumeError(f"{path}: its config cannot be read by this twm version: {exc}") from None
    diffs = config_differences(saved_cfg, cfg.to_dict())
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise ResumeError(f"{path} does not match {run_dir.config}: {diffs[0]}{more}")
    return manager, state, replay, path


def truncate_metrics(path: Path, size: int, warn: Callable[[str], None]) -> None:
    """Cut ``metrics.jsonl`` back to the checkpoint's position: the lines after it are logged again."""
    current = path.stat().st_size if path.exists() else 0
    if current < size:
        warn(f"{path} is shorter than at the checkpoint ({current} < {size} bytes); some lines are missing")
        size = current
    if size == 0:
        return
    with path.open("r+b") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":  # the file ends in a torn line: drop it, or the next line would be glued on
            f.seek(max(0, size - (1 << 20)))
            tail = f.read(size - f.tell())
            cut = tail.rfind(b"\n")
            size = size - len(tail) + cut + 1 if cut >= 0 else 0
            warn(f"{path} ended in a torn line; it was dropped")
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------ signals


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
