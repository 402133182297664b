"""``twm bench``: its JSON object, its table, and one-line usage errors."""

from __future__ import annotations

import json

import pytest
import torch

from twm.cli import main
from twm.perf.bench import matmul_peak

QUICK = ["--preset", "smoke", "--game", "catch", "--peak-seconds", "0.05", "--env-steps", "20"]


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *QUICK, "--updates", "2", "--warmup", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    parts = ("world_model", "imagination", "actor_critic")
    assert all(r["seconds"][p] > 0 for p in parts)
    assert len(r["seconds_all"]["world_model"]) == 2
    assert r["flops"]["total"] == pytest.approx(sum(r["flops"][p] for p in parts))
    assert r["switches"] == {
        "obs_model.fast_convs": True,
        "dynamics.kv_cache": True,
        "dynamics.attention": "plain",
        "train.precision": "float32",
        "train.compile": False,
        "train.capture": False,
        "train.keep_freed_memory": True,
        "actor_critic.inputs": "z",
    }
    assert r["acting_seconds_per_step"] > 0
    assert set(r["matmul_peak_flops_per_second"]) == {"float32", "bfloat16"}
    assert 0 < r["fraction_of_peak"] < 1
    assert r["memory"]["bytes"] >= 0 and "RSS" in r["memory"]["kind"]
    assert r["env_steps_per_second"] > 0
    assert r["preset"] == "smoke" and r["game"] == "catch"


def test_bench_table_and_switches(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", *QUICK, "--updates", "1", "--set", "dynamics.kv_cache=false", "--env-steps", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for word in (
        "world_model",
        "imagination",
        "actor_critic",
        "total",
        "GFLOP/s",
        "matmul peak",
        "peak memory",
    ):
        assert word in out
    assert "dynamics.kv_cache=False" in out
    assert "environment" not in out  # --env-steps 0 skips it
    assert "ms per real step for one game (the policy reads z)" in out


def test_bench_counts_the_cost_of_acting_with_h(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", *QUICK, "--updates", "1", "--warmup", "0", "--env-steps", "0", "--peak-seconds", "0"]
    assert main([*args, "--set", "actor_critic.inputs=zh", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["switches"]["actor_critic.inputs"] == "zh" and r["acting_seconds_per_step"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--updates", "0"], "--updates must be at least 1"),
        (["--set", "train.precision=float16"], "train.precision must be one of"),
        (["--device", "tpu"], "--device must be one of"),
    ],
)
def test_bench_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["bench", *QUICK, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("twm: error:") and message in err and "\n" not in err


def test_matmul_peak_is_positive() -> None:
    assert matmul_peak(torch.device("cpu"), torch.float32, seconds=0.02) > 1e8
