"""Run folders and metric logs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from builders import read_tensorboard, scalars
from twm.run_dir import RunDirExistsError, create_run_dir
from twm.training.logger import MetricsLogger, read_metrics


def test_run_dir_is_never_overwritten(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path / "run")
    (run / "config.yaml").write_text("x: 1\n")
    with pytest.raises(RunDirExistsError, match="already exists"):
        create_run_dir(run)
    assert (run / "config.yaml").read_text() == "x: 1\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_run_dir(empty) == empty


def test_metrics_jsonl_and_tensorboard(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as logger:
        logger.log(10, {"dyn/loss": torch.tensor(1.5), "charts/fps": 3, "bad": float("nan")})
        logger.log(20, {"dyn/loss": 0.5})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20]
    assert records[0]["dyn/loss"] == 1.5 and records[0]["charts/fps"] == 3.0
    assert records[0]["bad"] == "nan"
    events = read_tensorboard(tmp_path / "tensorboard")
    assert set(events.Tags()["scalars"]) == {"dyn/loss", "charts/fps", "bad"}
    assert scalars(events, "dyn/loss") == [(10, 1.5), (20, 0.5)]
    assert scalars(events, "charts/fps") == [(10, 3.0)]
    [(step, bad)] = scalars(events, "bad")
    assert step == 10 and math.isnan(bad)


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 2}\n{"step": 2, "a"')
    assert read_metrics(path) == [{"step": 1, "a": 2}]
