"""A run records where its wall time went (final.json phase_seconds, time/<phase> metric fields), and
benchmarks/run_profile.py turns that into a table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks.scripts import load_script

from twm.config_files import load_config
from twm.training.trainer import Trainer

SCRIPT, run_profile = load_script("run_profile.py")


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


def test_median_per_update_over_log_intervals(tmp_path: Path) -> None:
    # Four intervals of 10 updates; the world model took 1, 2, 9 and 3 s in them (a load spike in the
    # third): mean 375 ms per update, median of 100, 200, 900, 300 ms = 250 ms.
    world_model = [0.0, 1.0, 3.0, 12.0, 15.0]
    lines = [{"step": 1000 * i, "charts/updates": 10 * i, "time/world_model": t, "time/sample": 0.01 * i}
             for i, t in enumerate(world_model)]  # fmt: skip
    lines.insert(2, {"step": 2000, "eval/mean_score": 1.0})  # evaluation lines carry no times
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    medians = run_profile.window_medians(tmp_path)
    assert medians["world_model"] == 0.25
    assert abs(medians["sample"] - 0.001) < 1e-12
    assert "imagination" not in medians
    final = {"phase_seconds": {"world_model": 15.0}, "wall_time_s": 20.0, "updates": 40}
    (tmp_path / "final.json").write_text(json.dumps(final))
    assert "| world_model | 0.2 | 75% | 375 ms | 250 ms |" in run_profile.table(tmp_path)
