"""Seeing a run anywhere: plain status lines when stderr is not a terminal, the config and pretraining
in TensorBoard, the optional W&B and MLflow sinks, and Python warnings as ``twm: warning:`` lines.
(``twm eval --checkpoint/--video`` and a whole piped run: tests/test_recipes.py, tests/test_api.py.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from twm.config import ConfigError
from twm.config_files import load_config
from twm.training import output
from twm.training.logger import MetricsLogger, flat_config, pretrain_axes, read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("WANDB_MODE", None)
ENV.pop("MLFLOW_TRACKING_URI", None)


def run_twm(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


class FakeStderr(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress_lines(monkeypatch: pytest.MonkeyPatch, tty: bool, enabled: bool = True) -> list[str]:
    err = FakeStderr(tty)
    clock = Clock()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(output.time, "monotonic", clock)
    cfg = load_config("smoke", ["env.game=catch"])
    from twm.training.state import TrainingState

    state = TrainingState(0, __import__("torch").device("cpu"))
    bar = output.Progress(300, 0, enabled, status_seconds=60.0)
    bar.describe("prefill")
    for step in range(1, 101):
        clock.now += 1.0  # one step a second: a line every 60 steps
        state.interactions = step
        bar.step(cfg, state)
    bar.start_phase("obs", 10, 0)
    for i in range(10):
        bar.phase_step(done=i == 9)
    bar.note("eval", "-2.0")
    bar.close()
    return err.getvalue().splitlines()


def test_status_lines_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = progress_lines(monkeypatch, tty=False)
    assert lines[0] == "twm: prefill 0/300 (0.0%) elapsed 00:00"
    assert lines[1].startswith("twm: prefill 60/300 (20.0%) elapsed 01:00 ETA ")
    assert lines[2] == "twm: pretrain obs 10/10 elapsed 01:40"  # a phase's end always gets a line
    assert lines[3].startswith("twm: prefill 100/300 (33.3%) elapsed 01:40") and lines[3].endswith("eval -2.0")
    assert len(lines) == 4


def test_no_status_lines_on_a_terminal_or_with_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not [line for line in progress_lines(monkeypatch, tty=True) if line.startswith("twm:")]
    assert progress_lines(monkeypatch, tty=False, enabled=False) == []


def test_status_seconds_zero_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FakeStderr(False))
    assert output.Progress(10, 0, True, status_seconds=0.0).status_seconds == 0.0
    with pytest.raises(ConfigError):
        load_config("smoke", ["env.game=catch", "train.status_seconds=-1"])


def test_pretraining_lines_get_their_own_tensorboard_axis() -> None:
    line = {"pretrain/obs/loss": 1.0, "pretrain/obs/iteration": 7.0}
    assert pretrain_axes(line) == {"pretrain/obs/loss": 7, "pretrain/obs/iteration": 7}
    assert pretrain_axes({"obs/loss": 1.0}) == {}


def test_tensorboard_config_text_hparams_and_pretrain_axis(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = load_config("smoke", ["env.game=catch", "dynamics.layers=2"]).to_dict()
    with MetricsLogger(tmp_path, config=cfg) as logger:
        for i in (1, 2, 3):
            logger.log(100, {"pretrain/obs/loss": 1.0 / i, "pretrain/obs/iteration": i})
        logger.log(150, {"obs/loss": 0.5})
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "game: catch" in text and "layers: 2" in text
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["env.game"].string_value == "catch" and hparams["dynamics.layers"].number_value == 2
    assert set(flat_config(cfg)) == set(hparams)
    assert [e.step for e in events.Scalars("pretrain/obs/loss")] == [1, 2, 3]
    assert [e.step for e in events.Scalars("obs/loss")] == [150]
    # metrics.jsonl keeps the interaction count.
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [100, 100, 100, 150]


def test_missing_logger_package_is_one_line_before_any_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = (
        "import sys; sys.modules['wandb'] = None; from twm.cli import main; "
        f"sys.exit(main(['train', '--game', 'catch', '--preset', 'smoke', '--set', 'train.loggers=[wandb]', "
        f"'--run-dir', {str(run_dir)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "twm[wandb]" in out.stderr and not run_dir.exists()
    with pytest.raises(ConfigError, match="wandb, mlflow"):
        load_config("smoke", ["env.game=catch", "train.loggers=[tensorboardX]"])


def mlflow_run(db: Path) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("twm")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


@pytest.mark.slow
def test_wandb_offline_and_mlflow_local_store(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    run_dir = tmp_path / "run"
    out = run_twm("train", "--game", "catch", "--preset", "smoke", "--set", "train.loggers=[wandb, mlflow]",
                  "--run-dir", str(run_dir), "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = read_metrics(run_dir / "metrics.jsonl")
    evals = [(r["step"], r["eval/mean_score"]) for r in records if "eval/mean_score" in r]
    client, run = mlflow_run(run_dir / "mlflow.db")
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["env.game"] == "catch" and run.data.params["train.loggers"] == '["wandb", "mlflow"]'
    history = client.get_metric_history(run.info.run_id, "eval/mean_score")
    assert sorted((m.step, m.value) for m in history) == sorted(evals)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))  # the offline log that 'wandb sync' uploads
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert final["interactions"] == 300


def test_python_warnings_become_twm_warning_lines() -> None:
    out = run_twm("config", "--game", "gym:ALE/Pong-v5", "--preset", "smoke")
    assert out.returncode == 0
    (line,) = out.stderr.splitlines()
    assert line.startswith("twm: warning: gym:ALE/Pong-v5 runs as 'Pong' under twm's Atari 100k protocol")
    assert "game: Pong" in out.stdout
