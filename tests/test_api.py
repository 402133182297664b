"""The Python API (twm.train, twm.load): a notebook-style script end to end, an environment a user
builds (env_fn), callbacks that see every metric line and evaluation and stop the run, resume, and
no process-wide side effects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

import twm
from twm.api import RunEvent, _config
from twm.config import ConfigError
from twm.training.logger import read_metrics

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def config_of(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.mark.slow
def test_notebook_style_script_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "api_quickstart.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=400, env=ENV,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    run_dir = tmp_path / "catch"
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert lines[0].startswith(f"final mean score {final['mean']} evaluations [(100, ")
    # The callback saw each evaluation as it was logged (the periodic ones and the final one).
    evals = [
        (r["step"], r["eval/mean_score"])
        for r in read_metrics(run_dir / "metrics.jsonl")
        if "eval/mean_score" in r
    ]
    assert lines[0].endswith(f"evaluations {evals}")
    assert lines[1].startswith("one episode: ") and lines[2].startswith("evaluation: ")
    assert lines[3] == f"dream: {tmp_path / 'dream.gif'}" and (tmp_path / "dream.gif").is_file()
    cfg = config_of(run_dir)
    assert cfg["dynamics"]["layers"] == 1 and cfg["train"]["seed"] == 1 and cfg["env"]["game"] == "catch"
    # The same images as the command line.
    assert list((run_dir / "images").glob("recon_*.png")) and list((run_dir / "images").glob("dream_*.png"))
    assert "twm: warning" not in out.stderr  # no Python-warning rewriting in the library


def test_overrides_as_keywords_dotted_keys_and_settings(tmp_path: Path) -> None:
    cfg = _config(
        "catch", "smoke", None, ["train.seed=4"], {"dynamics": {"layers": 2}, "replay.batch_size": 3}
    )
    assert cfg.dynamics.layers == 2 and cfg.replay.batch_size == 3 and cfg.train.seed == 4
    assert cfg.dynamics.heads == 2  # the rest of the section stays the preset's
    file = tmp_path / "c.yaml"
    file.write_text("env: {game: catch}\ntrain: {seed: 7, total_steps: 400}\n")
    cfg = _config(None, "smoke", file, [], {"train": {"seed": 8}})
    assert cfg.env.game == "catch" and cfg.train.seed == 8 and cfg.train.total_steps == 400
    with pytest.raises(ConfigError, match="neither a config section"):
        _config("catch", "smoke", None, [], {"layers": 2})
    with pytest.raises(ConfigError, match="dynamics.layres"):
        _config("catch", "smoke", None, [], {"dynamics": {"layres": 2}})
    with pytest.raises(ConfigError, match="not both"):
        twm.train("catch", env_fn=lambda: None, preset="smoke", run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="env_fn must be a function that returns a new environment"):
        twm.train(env_fn=Dots(), preset="smoke", run_dir=tmp_path / "x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


class Dots(gym.Env):
    """A user's env: a dot that moves with the action; reward 1 at the right edge. (1, 16, 16) channels first."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 255, (1, 16, 16), np.uint8)
        self.action_space = spaces.Discrete(3)
        self.x = 8

    def obs(self) -> np.ndarray:
        pic = np.zeros((1, 16, 16), np.uint8)
        pic[0, 8, self.x] = 255
        return pic

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(0, 16))
        return self.obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x = int(np.clip(self.x + action - 1, 0, 15))
        return self.obs(), float(self.x == 15), self.x == 15, False, {}


def make_dots() -> gym.Env:
    return Dots()


@pytest.mark.slow
def test_env_fn_callbacks_stop_resume_and_no_side_effects(tmp_path: Path) -> None:
    from twm import allocator

    applied_before = allocator._applied
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    showwarning = warnings.showwarning
    events: list[RunEvent] = []

    def stop_at_200(event: RunEvent) -> bool:
        events.append(event)
        return event.kind == "log" and event.step >= 200

    run_dir = tmp_path / "dots"
    result = twm.train(env_fn=make_dots, preset="smoke", run_dir=run_dir, callbacks=[stop_at_200],
                       env={"time_limit": 50})  # fmt: skip
    assert result.summary is None and result.stopped is not None and "SIGINT" not in result.stopped
    assert "stopped" in result.stopped and "at 200/300 interactions" in result.stopped
    game = config_of(run_dir)["env"]["game"]
    assert game == "gym:twm_api/make_dots-v0"
    assert not (run_dir / "eval" / "final.json").exists()
    kinds = {(e.kind, e.step) for e in events}
    assert ("eval", 100) in kinds and ("log", 150) in kinds and ("log", 200) in kinds
    assert max(e.step for e in events) == 200 and all(e.run_dir == run_dir for e in events)
    assert any(k.startswith("pretrain/") for e in events for k in e.metrics)

    # No process-wide side effects left behind.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert warnings.showwarning is showwarning
    assert allocator._applied == applied_before

    # An unfinished run: the newest checkpoint, through the API and the command line.
    agent = twm.load(run_dir, checkpoint="latest")
    assert agent.checkpoint.name.startswith("step_000000200_") and agent.num_actions == 3
    obs, _ = agent.make_env().reset()
    assert obs.shape == (4, 64, 64) and agent.act(obs) in (0, 1, 2)
    assert agent.act(np.stack([obs, obs])).shape == (2,)
    from twm.cli import main

    assert (
        main(["eval", str(run_dir), "--episodes", "1"]) == 2
    )  # no final.pt: says to use --checkpoint latest
    assert main(["eval", str(run_dir), "--episodes", "1", "--checkpoint", "latest"]) == 0

    # Resumed to the end; a second callback list sees the rest.
    later: list[RunEvent] = []
    done = twm.train(resume=run_dir, env_fn=make_dots, callbacks=[later.append])
    assert done.stopped is None and done.summary is not None and done.summary["interactions"] == 300
    # The evaluation due at 200 was not run before the stop: the resumed run does it first.
    assert later[0].kind == "eval" and later[0].step == 200 and later[-1].kind == "eval"
    assert all(e.step > 200 for e in later[1:])
    loaded = done.load()
    assert loaded.evaluate(episodes=2).mean == pytest.approx(done.summary["mean"])
    # An episode step by step: the same rows in memory and in the CSV, the score summed step by step.
    rows = loaded.trace(seed=3, out=tmp_path / "trace.csv")
    assert (
        rows
        and rows[-1]["done"] == 1
        and rows[-1]["score"] == pytest.approx(sum(r["raw_reward"] for r in rows))
    )
    assert (tmp_path / "trace.csv").read_text().count("\n") == len(rows) + 1


def test_an_env_fn_run_in_a_new_process_says_to_pass_env_fn() -> None:
    from twm.config_files import load_config
    from twm.envs import EnvError, check_env

    with pytest.raises(EnvError, match="pass the same env_fn to twm.load"):
        check_env(load_config("smoke", ["env.game=gym:twm_api/never_registered-v0"]).env)


def test_vector_observations_from_python_train_load_and_act(tmp_path: Path) -> None:
    result = twm.train("gym:CartPole-v1", preset="smoke", env={"observation": "vector"},
                       run_dir=tmp_path / "cartpole", progress=False, eval_images=False)  # fmt: skip
    assert config_of(result.run_dir)["env"]["vector_size"] == 4
    agent = twm.load(result.run_dir)
    env = agent.make_env(seed=1)
    obs, _ = env.reset()
    assert obs.shape == (16, 1, 1) and obs.dtype == np.float32
    assert agent.act(obs) in (0, 1)
    assert agent.act(obs.astype(np.float64)) in (0, 1)  # numbers of another float type are read as float32
    assert agent.evaluate(episodes=2).mean > 0
