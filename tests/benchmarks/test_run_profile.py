"""A run records where its wall time went (final.json phase_seconds, time/<phase> metric fields), and
benchmarks/run_profile.py turns that into a table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from twm.config_files import load_config
from twm.training.trainer import Trainer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "run_profile.py"
spec = importlib.util.spec_from_file_location("run_profile", SCRIPT)
assert spec is not None and spec.loader is not None
run_profile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_profile)


def test_a_run_splits_its_wall_time_by_phase(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config("smoke", ["env.game=catch", "train.total_steps=200", "train.budget=5000"])
    Trainer(cfg, tmp_path / "run", device="cpu", progress=False).run()
    final = json.loads((tmp_path / "run" / "eval" / "final.json").read_text())
    phases = final["phase_seconds"]
    expected = {"prefill", "pretrain", "act", "env", "sample", "world_model", "imagination", "actor_critic",
                "eval", "final_eval", "checkpoint", "log"}  # fmt: skip
    assert set(phases) == expected
    assert all(v >= 0 for v in phases.values())
    assert 0 < sum(phases.values()) <= final["wall_time_s"]
    # The metric lines carry the same sums as they grow.
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    updates = [r["time/world_model"] for r in lines if "time/world_model" in r]
    assert updates == sorted(updates) and updates[-1] <= phases["world_model"]

    assert run_profile.main([str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "| world_model |" in out and "| other |" in out and f"{final['updates']} updates" in out
