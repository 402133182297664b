"""benchmarks/ablation_grid.py: a grid runs, survives a stop by resuming, skips what is done, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.benchmarks.scripts import load_script

from builders import assert_drawn, png_pixels
from twm.games import random_score

SCRIPT, grid = load_script("ablation_grid.py")

pytestmark = pytest.mark.slow

TINY = ["train.total_steps=200", "train.budget=5000", "train.checkpoint_interval=50", "env.time_limit=200"]


def test_settings_are_plus_with_one_mechanism_off_each() -> None:
    from twm.config_files import load_config

    def resolved(name: str) -> dict:
        preset, overrides = grid.SETTINGS[name]
        return load_config(preset, ["env.game=minatar/breakout", *overrides]).to_dict()

    # Earlier versions of plus are kept with the experiments made on them: each of those is
    # compared with its own version (plus-v1-x with plus-v1, plus-v2-x with plus-v2), the others
    # with today's plus.
    bases = {"plus-v1-": "plus-v1", "plus-v2-": "plus-v2", "plus-": "plus"}
    for name in grid.SETTINGS:
        if not name.startswith("plus-") or name in ("plus-v1", "plus-v2"):
            continue
        base = next(b for prefix, b in bases.items() if name.startswith(prefix))
        cfg, reference = resolved(name), resolved(base)
        differing = {(s, k) for s in cfg for k in cfg[s] if cfg[s][k] != reference[s][k]}
        assert differing and len({s for s, _ in differing}) <= 2, (name, sorted(differing))
    def differing(a: dict, b: dict) -> set[tuple[str, str]]:
        return {(s, k) for s in a for k in a[s] if a[s][k] != b[s][k]}

    plus_v1, plus_v2, plus = resolved("plus-v1"), resolved("plus-v2"), resolved("plus")
    speed = {("train", "capture"), ("train", "optimizer_impl"), ("actor_critic", "fresh_pool")}
    assert differing(plus_v2, plus) == {("dynamics", "encoder_grad"), *speed}
    assert differing(plus_v1, plus_v2) == {("obs_model", "unimix"), ("obs_model", "sampler")}
    assert differing(resolved("plus-eager"), plus) == speed
    # The smaller presets as they ran before capture: the speed keys only.
    assert differing(resolved("minatar-eager"), resolved("minatar")) == speed
    assert differing(resolved("cpu-eager"), resolved("cpu")) == speed


def test_a_stopped_grid_resumes_skips_finished_runs_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("minatar")
    monkeypatch.setitem(grid.SETTINGS, "tiny", ("smoke", TINY))
    root, results = tmp_path / "runs", tmp_path / "results"
    args = ["run", "--games", "breakout", "--seeds", "0", "--settings", "tiny", "--parallel", "1"]
    args += ["--root", str(root), "--results", str(results)]

    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", "train:150")  # the machine stops mid-run
    assert grid.main(args) == 0
    assert "exit 130" in capsys.readouterr().out
    assert not (results / "breakout" / "tiny-s0").exists()

    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    assert grid.main(args) == 0
    assert "tiny-s0: done" in capsys.readouterr().out
    log = (root / "breakout" / "tiny-s0.log").read_text()
    assert "--resume" in log  # continued from its checkpoint, not started again
    final = json.loads((results / "breakout" / "tiny-s0" / "final.json").read_text())
    assert final["interactions"] == 200
    assert (results / "breakout" / "tiny-s0" / "metrics.jsonl").exists()

    assert grid.main(args) == 0
    assert capsys.readouterr().out.startswith("0 runs to do")

    png = tmp_path / "curves.png"
    assert grid.main(["report", "--results", str(results), "--out-png", str(png)]) == 0
    table = capsys.readouterr().out
    row = [line for line in table.splitlines() if "| breakout | tiny |" in line]
    assert len(row) == 1 and f"s0: {final['mean']:.2f}" in row[0]
    pixels = png_pixels(png)
    assert_drawn(pixels)
    # Other scores draw another figure: the curves come from the results' metrics.jsonl.
    metrics = results / "breakout" / "tiny-s0" / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert any("eval/mean_score" in r for r in records)
    for r in records:
        if "eval/mean_score" in r:
            r["eval/mean_score"] = r["eval/mean_score"] + 5.0 * (1 + r["step"] / 100)
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    other = tmp_path / "other.png"
    assert grid.main(["report", "--results", str(results), "--out-png", str(other)]) == 0
    capsys.readouterr()
    other_pixels = png_pixels(other)
    assert other_pixels.shape != pixels.shape or not np.array_equal(other_pixels, pixels)


def test_the_table_gives_each_seed_the_seed_mean_and_the_span_of_minutes() -> None:
    row = {"curve": [(100000, 0.0)]}
    seeds = {0: {**row, "final": 3.0, "minutes": 50.0}, 1: {**row, "final": 6.0, "minutes": 30.0}}
    table = {"breakout": {"plus": seeds}}
    lines = grid.markdown(table).splitlines()
    assert len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    ratio = f"{4.5 / random_score('minatar/breakout'):.2f}"
    assert cells[:6] == ["breakout", "plus", "2", "s0: 3.00, s1: 6.00", "4.50", ratio]
    assert cells[6] == "30.0-50.0"  # the fastest and the slowest run


def test_the_ablation_table_compares_each_mechanism_off_with_plus_on_the_same_seed() -> None:
    def run(final: float) -> dict:
        return {"final": final, "curve": [(100000, final)], "minutes": 30.0}

    table = {
        "space_invaders": {
            "plus": {0: run(13.63), 1: run(16.33)},
            "plus-no-twohot-reward": {0: run(10.13)},
            "plus-paper-critic-lr": {0: run(15.0), 2: run(9.0)},  # seed 2 has no plus run: left out
            "plus-grid": {0: run(13.57)},  # not an ablation
        },
        "breakout": {"plus-no-unimix": {0: run(4.0)}},  # no plus run of the game: left out
    }
    lines = grid.ablation_markdown(table).splitlines()
    assert len(lines) == 4
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert rows[0] == ["space_invaders", "0", "plus-no-twohot-reward", "10.13", "13.63", "-3.50", "`dynamics.reward_head=gaussian`"]
    assert rows[1] == ["space_invaders", "0", "plus-paper-critic-lr", "15.00", "13.63", "+1.37", "`actor_critic.critic_lr=1e-5`"]
    assert grid.ablation_markdown({"breakout": {"plus": {0: run(3.0)}}}) == ""
