"""Metric logging: one JSON line per logged step, mirrored to TensorBoard.

Metric names are namespaced by what they describe (``obs/``, ``dyn/``, ``ac/``, ``eval/``,
``charts/``), so TensorBoard groups them and ``metrics.jsonl`` stays greppable.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from twm.run_dir import METRICS_FILE, TENSORBOARD_DIR


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


class MetricsLogger:
    """Append-only ``metrics.jsonl`` plus TensorBoard event files in the run folder.

    A resumed run passes ``elapsed`` (the wall time already spent, so "time" counts on) and
    ``purge_step`` (TensorBoard then hides events at or after that step, which the interrupted
    session logged after its last checkpoint and the resumed one will log again).
    """

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        *,
        elapsed: float = 0.0,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._file = self.path.open("a", buffering=1)  # line-buffered: a crash loses at most one line
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge_step)
        self._start = time.time() - elapsed

    def log(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Write one line ``{"step": step, "time": seconds since start, **metrics}``.

        Scalars go to both sinks; lists (e.g. Crafter's ``crafter/unlocked``, one list of achievement
        names per game) are written to metrics.jsonl only.
        """
        lists = {k: v for k, v in metrics.items() if isinstance(v, list | tuple)}
        values = {key: _to_float(value) for key, value in metrics.items() if key not in lists}
        record: dict[str, Any] = {"step": int(step), "time": round(time.time() - self._start, 3)}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        record.update({k: list(v) for k, v in lists.items()})
        self._file.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, global_step=int(step))
        return values

    def add_image(self, tag: str, image_hwc: Any, step: int) -> None:
        if self._writer is not None:
            self._writer.add_image(tag, image_hwc, global_step=int(step), dataformats="HWC")

    def flush(self) -> None:
        self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self.flush()
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
