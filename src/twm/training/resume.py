"""Resuming a run: which checkpoint, whether it fits the run's config, and its logs cut back to it.

Reproducibility, checkpoints, resume
    Every random stream derives from ``cfg.train.seed`` (``twm.seeding``). The trainer writes a resume
    checkpoint (``twm.training.state`` lists what it holds) at safe points between two steps: every
    ``checkpoint_interval`` interactions (after the evaluation when both fall on one interaction), with
    every pretraining log line, after pretraining, before the final evaluation, and on SIGINT or
    SIGTERM. On the CPU a run is a function of its config, and an interrupted and resumed run equals
    the uninterrupted one bit for bit (apart from ``TIME_KEYS`` of ``twm.training.trainer``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twm.config import Config, ConfigError
from twm.replay import ReplayBuffer
from twm.run_dir import ResumeError, RunDir
from twm.training.checkpoint import CheckpointError, CheckpointManager


def warn(message: str) -> None:
    print(f"twm: warning: {message}", file=sys.stderr, flush=True)


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
