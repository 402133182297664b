"""Metric logging: one JSON line per logged step, mirrored to TensorBoard and optional sinks.

Metric names are namespaced by what they describe (``obs/``, ``dyn/``, ``ac/``, ``eval/``,
``charts/``), so TensorBoard groups them and ``metrics.jsonl`` stays greppable.

TensorBoard also gets the resolved config (a text summary ``config`` and the HParams of every
``section.key``), and pretraining, which happens at one interaction count, on its own step axis: a
``pretrain/<phase>/...`` scalar is plotted at its iteration within the phase. ``train.loggers`` adds
Weights & Biases (offline unless ``WANDB_MODE`` says otherwise; files under the run folder) and MLflow
(``MLFLOW_TRACKING_URI``, else a local SQLite store ``mlflow.db`` in the run folder).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
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
        config: Mapping[str, Any] | None = None,
        loggers: Sequence[str] = (),
        on_log: Callable[[int, dict[str, float]], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._file = self.path.open("a", buffering=1)  # line-buffered: a crash loses at most one line
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge_step)
            if config is not None and purge_step is None:  # a resumed run wrote them already
                write_config_summary(self._writer, config)
        self.sinks: list[Sink] = []
        try:
            for name in loggers:
                self.sinks.append(make_sink(name, self.run_dir, config or {}))
        except BaseException:
            self.close()
            raise
        self._start = time.time() - elapsed
        self.on_log = on_log

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
            axes = pretrain_axes(values)
            for key, value in values.items():
                self._writer.add_scalar(key, value, global_step=axes.get(key, int(step)))
        for sink in self.sinks:
            sink.log(int(step), {k: v for k, v in values.items() if math.isfinite(v)})
        if self.on_log is not None:
            self.on_log(int(step), dict(values))
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
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pretrain_axes(values: Mapping[str, float]) -> dict[str, int]:
    """The TensorBoard step of each ``pretrain/...`` value of a pretraining line: the iteration within its
    phase (``pretrain/<phase>/iteration``), so pretraining is not squeezed into one interaction count."""
    iterations = [int(v) for k, v in values.items() if k.startswith("pretrain/") and k.endswith("/iteration")]
    if not iterations:
        return {}
    return {k: iterations[0] for k in values if k.startswith("pretrain/")}


def flat_config(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """``section.key`` -> value, lists and mappings as JSON text (what HParams can show)."""
    out: dict[str, bool | int | float | str] = {}
    for section, values in config.items():
        for key, value in (values or {}).items():
            plain = isinstance(value, bool | int | float | str)
            out[f"{section}.{key}"] = value if plain else json.dumps(value, sort_keys=True)
    return out


def write_config_summary(writer: Any, config: Mapping[str, Any]) -> None:
    """The resolved config as TensorBoard text (tag ``config``) and as HParams (metric: eval/mean_score)."""
    import yaml
    from torch.utils.tensorboard.summary import hparams

    text = yaml.safe_dump(dict(config), sort_keys=False)
    writer.add_text("config", "```yaml\n" + text + "```", global_step=0)
    experiment, start, end = hparams(flat_config(config), {"eval/mean_score": math.nan})
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)


class Sink:
    """An extra metric sink of ``train.loggers``."""

    def log(self, step: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LoggerUnavailableError(RuntimeError):
    """A logger of ``train.loggers`` whose package is not installed (one line)."""


class WandbSink(Sink):
    """Weights & Biases: offline unless ``WANDB_MODE`` is set; its files under ``RUN_DIR/wandb``."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise LoggerUnavailableError("train.loggers: wandb needs pip install 'twm[wandb]'") from None
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "twm"),
            name=run_dir.name,
            dir=str(run_dir),
            config=flat_config(config),
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            reinit="create_new",
            settings=wandb.Settings(silent=True),
        )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowSink(Sink):
    """MLflow: ``MLFLOW_TRACKING_URI``, else a local store ``RUN_DIR/mlflow.db`` (SQLite: MLflow 3 has
    put its plain file store in maintenance mode); one MLflow run per twm run."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise LoggerUnavailableError("train.loggers: mlflow needs pip install 'twm[mlflow]'") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
        self._client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "twm")
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            artifacts = (run_dir / "mlartifacts").resolve().as_uri()
            experiment_id = self._client.create_experiment(name, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self._client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        for key, value in flat_config(config).items():
            self._client.log_param(self.run_id, key, str(value)[:500])

    def log(self, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, stamp, step) for k, v in values.items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self._client.set_terminated(self.run_id)


def _mlflow_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


LOGGER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def check_loggers(names: Sequence[str]) -> None:
    """Raise LoggerUnavailableError for a logger whose package is not installed (before a run starts)."""
    import importlib.util

    for name in names:
        if importlib.util.find_spec(LOGGER_PACKAGES[name]) is None:
            raise LoggerUnavailableError(f"train.loggers: {name} needs pip install 'twm[{name}]'")


def make_sink(name: str, run_dir: Path, config: Mapping[str, Any]) -> Sink:
    if name == "wandb":
        return WandbSink(run_dir, config)
    if name == "mlflow":
        return MlflowSink(run_dir, config)
    raise ValueError(f"unknown logger {name!r}; valid: wandb, mlflow")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
