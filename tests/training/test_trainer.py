"""End to end: ``twm train`` / ``twm eval`` in a subprocess, the run folder, and reproducibility.

The smoke preset (300 interactions, ~340 updates of tiny networks) takes about half a minute per
run on one CPU thread. Subprocesses get one torch thread: on a shared 2-core machine extra threads
only contend (a run is several times slower with two threads when another job is busy).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from builders import assert_tensorboard_matches_metrics
from twm import cli
from twm.config import Config
from twm.config_files import load_config
from twm.games import human_normalized_score
from twm.training.checkpoint import agent_from_checkpoint, load_checkpoint
from twm.training.logger import read_metrics
from twm.training.trainer import Trainer, final_eval_seed, is_time_key

pytestmark = pytest.mark.slow  # about 1.5 minutes in all on one CPU thread

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_twm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def train_smoke(run_dir: Path, game: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    out = run_twm("train", "--game", game, "--preset", "smoke", "--run-dir", str(run_dir), "--no-progress")
    return out, time.perf_counter() - start


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    root = tmp_path_factory.mktemp("runs")
    result = {}
    for game in ("catch", "Pong"):
        out, seconds = train_smoke(root / game, game)
        assert out.returncode == 0, out.stderr
        print(f"twm train --game {game} --preset smoke: {seconds:.1f} s")
        result[game] = (root / game, out)
    return result


@pytest.mark.parametrize("game", ["catch", "Pong"])
def test_smoke_run_writes_the_whole_run_folder(runs: dict[str, Any], game: str) -> None:
    run_dir, out = runs[game]
    cfg = load_config("smoke", [f"env.game={game}"])

    # config.yaml: the full resolved config, round-tripping to the same Config.
    assert Config.from_yaml(run_dir / "config.yaml") == cfg
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == cfg.to_dict()

    # metrics.jsonl: evaluations after pretraining, every eval_interval, and the final one.
    records = read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in records if "eval/mean_score" in r]
    t = cfg.train
    assert [r["step"] for r in evals] == [100, 200, 300]
    assert [r["eval/episodes"] for r in evals] == [t.eval_episodes, t.eval_episodes, t.final_eval_episodes]
    assert all(("eval/hns" in r) == (game == "Pong") for r in evals)
    # Pretraining lines, at the interaction count where pretraining happens, for all three phases.
    for phase in ("obs", "dyn", "ac"):
        lines = [r for r in records if f"pretrain/{phase}/iteration" in r]
        assert lines and all(r["step"] == t.prefill_steps for r in lines)
    assert any("pretrain/obs/decoder_loss" in r for r in records)
    # Training lines every log_interval with the update metrics of the lines' windows.
    train_lines = [r for r in records if "charts/interactions" in r]
    assert [r["step"] for r in train_lines] == list(range(t.log_interval, t.total_steps + 1, t.log_interval))
    assert all("dyn/loss" in r and "ac/actor_loss" in r for r in train_lines if r["step"] > t.prefill_steps)
    assert train_lines[-1]["buffer/size"] == t.total_steps
    if game == "catch":
        assert any("charts/episode_score" in r for r in train_lines)
    else:
        # Pong in training (the released protocol): the 200-step limit truncates the episode but the
        # game goes on, so no whole game (and no game score) ends within 300 interactions.
        assert train_lines[-1]["buffer/episodes"] >= 1 and train_lines[-1]["charts/games"] == 0
        assert not any("charts/episode_score" in r for r in train_lines)
    # The number of updates is what the budget says (the float counter has no rounding drift).
    assert abs(train_lines[-1]["charts/updates"] - cfg.num_updates) <= 1

    # TensorBoard events.
    # TensorBoard holds the same scalars as metrics.jsonl.
    tags = ("charts/interactions", "dyn/loss", "ac/actor_loss", "eval/mean_score")
    assert_tensorboard_matches_metrics(run_dir, tags)

    # The final checkpoint rebuilds the agent.
    state = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    assert state["interactions"] == t.total_steps and abs(state["updates"] - cfg.num_updates) <= 1
    assert Config.from_dict(state["config"]) == cfg
    agent = agent_from_checkpoint(state)
    obs = np.zeros((2, cfg.env.frame_stack, 64, 64), dtype=np.uint8)
    assert agent.act(obs).shape == (2,)

    # eval/final.json, and the summary line on stdout.
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert final["game"] == game and final["seed"] == t.seed and final["preset"] == "smoke"
    assert len(final["scores"]) == t.final_eval_episodes
    assert final["mean"] == pytest.approx(np.mean(final["scores"]))
    assert final["std"] == pytest.approx(np.std(final["scores"]))
    assert final["interactions"] == t.total_steps and final["wall_time_s"] > 0
    assert final["eval_seed"] == final_eval_seed(t.seed)
    if game == "catch":
        assert final["hns"] is None
    else:
        assert final["hns"] == pytest.approx(human_normalized_score("Pong", final["mean"]))
    assert final["mean"] == evals[-1]["eval/mean_score"]
    assert out.stdout.count("\n") == 1 and "final mean score" in out.stdout and str(run_dir) in out.stdout


def test_eval_reproduces_the_final_evaluation(runs: dict[str, Any]) -> None:
    run_dir, _ = runs["catch"]
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    out = run_twm("eval", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    # Same checkpoint, same default seed, CPU: the very same games.
    assert result["scores"] == final["scores"] and result["seed"] == final["eval_seed"]
    assert {"mean", "std", "min", "max", "hns"} <= result.keys() and result["hns"] is None

    out = run_twm("eval", str(run_dir), "--episodes", "3", "--seed", "5")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("catch: mean ") and "(3 episodes, seed 5)" in out.stdout


def test_eval_traces_one_more_episode(runs: dict[str, Any], tmp_path: Path) -> None:
    run_dir, _ = runs["catch"]
    trace = tmp_path / "trace.csv"
    out = run_twm("eval", str(run_dir), "--episodes", "1", "--trace", str(trace), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    lines = trace.read_text().splitlines()
    assert lines[0].startswith("step,action,action_name,value,p_") and len(lines) == result["trace"]["steps"] + 1
    for bad in (tmp_path / "trace.txt", tmp_path / "missing" / "trace.csv"):
        out = run_twm("eval", str(run_dir), "--trace", str(bad))
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--trace" in out.stderr
        assert not bad.exists()


def test_eval_by_the_policys_mode_takes_its_most_likely_actions(runs: dict[str, Any], tmp_path: Path) -> None:
    run_dir, _ = runs["catch"]
    assert json.loads((run_dir / "eval" / "final.json").read_text())["eval_policy"] == "sample"
    traces = {}
    for policy in ("mode", "sample"):
        trace = tmp_path / f"{policy}.csv"
        out = run_twm("eval", str(run_dir), "--episodes", "3", "--policy", policy, "--trace", str(trace), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["policy"] == policy
        traces[policy] = list(csv.DictReader(trace.open()))
    names = [k for k in traces["mode"][0] if k.startswith("p_")]

    def likeliest(row: dict[str, str]) -> int:
        return int(np.argmax([float(row[k]) for k in names]))

    assert all(int(row["action"]) == likeliest(row) for row in traces["mode"])
    # The smoke policy is far from deterministic: sampled actions are not always its likeliest ones.
    assert any(int(row["action"]) != likeliest(row) for row in traces["sample"])
    out = run_twm("eval", str(run_dir), "--episodes", "2", "--policy", "mode")
    assert out.returncode == 0 and "the policy's most likely actions)" in out.stdout


def test_a_run_evaluated_by_the_policys_mode_says_so_and_eval_reproduces_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "mode"
    out = run_twm("train", "--game", "catch", "--preset", "smoke", "--set", "train.eval_policy=mode",
                  "--run-dir", str(run_dir), "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert final["eval_policy"] == "mode"
    out = run_twm("eval", str(run_dir), "--json")  # the run's own policy by default
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["policy"] == "mode" and result["scores"] == final["scores"]
    out = run_twm("eval", str(run_dir), "--json", "--policy", "sample")
    assert json.loads(out.stdout)["scores"] != final["scores"]  # another policy, other games


def test_existing_run_dir_is_refused_and_left_alone(runs: dict[str, Any]) -> None:
    run_dir, _ = runs["catch"]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = run_twm("train", "--game", "catch", "--preset", "smoke", "--run-dir", str(run_dir))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "already exists" in out.stderr and "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_eval_errors_are_one_line(tmp_path: Path) -> None:
    out = run_twm("eval", str(tmp_path / "missing"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr
    load_config("smoke", ["env.game=catch"]).to_yaml(tmp_path / "config.yaml")
    out = run_twm("eval", str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "final.pt not found" in out.stderr


def test_cuda_without_cuda_is_one_line_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = tmp_path / "run"
    args = ["train", "--game", "catch", "--preset", "smoke", "--device", "cuda", "--run-dir", str(run_dir)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err
    assert not run_dir.exists()
    assert cli.main([*args[:-4], "--device", "tpu"]) == 2
    assert "--device must be one of" in capsys.readouterr().err


def _run_in_process(run_dir: Path, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    Trainer(cfg, run_dir, device="cpu", progress=False).run()
    records = [
        {k: v for k, v in r.items() if not is_time_key(k)} for r in read_metrics(run_dir / "metrics.jsonl")
    ]
    return records, load_checkpoint(run_dir / "checkpoints" / "final.pt")["model"]


def test_same_seed_same_run(tmp_path: Path) -> None:
    # 100 random + 100 policy interactions and ~70 updates: every phase, twice, in seconds.
    cfg = load_config(
        "smoke", ["env.game=catch", "train.total_steps=200", "train.budget=5000", "train.seed=7"]
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, first_params = _run_in_process(tmp_path / "a", cfg)
        second, second_params = _run_in_process(tmp_path / "b", cfg)
    finally:
        torch.set_num_threads(threads)
    assert first == second
    assert first_params.keys() == second_params.keys()
    assert all(torch.equal(first_params[k], second_params[k]) for k in first_params)
    updates = [r["charts/updates"] for r in first if "charts/updates" in r][-1]
    assert abs(updates - cfg.num_updates) <= 1 and cfg.num_updates == 71
    # A different seed is a different run.
    other = load_config(
        "smoke", ["env.game=catch", "train.total_steps=200", "train.budget=5000", "train.seed=8"]
    )
    torch.set_num_threads(1)
    try:
        third, _ = _run_in_process(tmp_path / "c", other)
    finally:
        torch.set_num_threads(threads)
    assert third != first
