"""Every command of docs/environments-recipes.md, run as written but at smoke size.

``--preset quick`` becomes ``--preset smoke``, each run gets its own ``--run-dir``, ``runs/RUN`` is a
finished catch run, and output files go to a temporary folder. Each training run must write its
complete run folder; the Python block runs end to end in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builders import assert_tensorboard_matches_metrics

DOC = Path(__file__).parents[1] / "docs" / "environments-recipes.md"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("WANDB_MODE", None)  # the default: offline
ENV.pop("MLFLOW_TRACKING_URI", None)  # the default: a store in the run folder


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def commands() -> list[str]:
    """The twm command lines of the bash blocks (comments and redirections kept for the test to read)."""
    return [line.strip() for block in blocks("bash") for line in block.splitlines() if line.startswith("twm ")]


TRAIN = [c for c in commands() if c.startswith("twm train")]
EVAL = [c for c in commands() if c.startswith("twm eval")]


def argv(command: str, run_dir: Path) -> tuple[list[str], bool]:
    """The arguments of a recipe line at smoke size; whether it redirects output to a log."""
    command = command.split("#", 1)[0]
    logged = ">" in command
    command = command.split(">", 1)[0]
    args = shlex.split(command)[1:]
    args = ["smoke" if a == "quick" else a for a in args]
    if args[0] == "train":
        args += ["--run-dir", str(run_dir)]
        if not logged:
            args.append("--no-progress")
    return args, logged


def run_twm(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def check_run_folder(run_dir: Path) -> dict[str, Any]:
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/final.pt", "eval/final.json"):
        assert (run_dir / name).is_file(), name
    assert_tensorboard_matches_metrics(run_dir, ("charts/interactions", "dyn/loss", "eval/mean_score"))
    assert list((run_dir / "images").glob("recon_*.png")) and list((run_dir / "images").glob("dream_*.png"))
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert final["interactions"] == 300 and len(final["scores"]) == final["episodes"] == 2
    return final


def test_the_recipes_are_found() -> None:
    assert len(TRAIN) >= 8 and len(EVAL) == 2 and len(blocks("python")) == 1
    assert any("MiniGrid" in c and "RGBImgObsWrapper" in c for c in TRAIN)
    assert any("env.obs_key=" in c for c in TRAIN) and any("env.pixels=render" in c for c in TRAIN)
    assert any("gym:ALE/Pong-v5" in c for c in TRAIN) and any("--game Tennis" in c for c in TRAIN)
    assert {"gym:CartPole-v1", "gym:FrozenLake-v1"} <= {c.split()[3] for c in TRAIN if "env.observation=vector" in c}


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The recipe whose output goes to a log file: a finished catch run, and what it printed."""
    (command,) = [c for c in TRAIN if ">" in c]
    run_dir = tmp_path_factory.mktemp("recipes") / "catch"
    args, _ = argv(command, run_dir)
    out = run_twm(args)
    assert out.returncode == 0, out.stderr
    return run_dir, out


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in TRAIN if ">" not in c])
def test_train_recipe(command: str, tmp_path: Path) -> None:
    if "wandb" in command:
        pytest.importorskip("wandb")
        pytest.importorskip("mlflow")
    if "minigrid" in command:
        pytest.importorskip("minigrid")
    run_dir = tmp_path / "run"
    args, _ = argv(command, run_dir)
    out = run_twm(args)
    assert out.returncode == 0, out.stderr
    final = check_run_folder(run_dir)
    assert "final mean score" in out.stdout and str(run_dir) in out.stdout
    game = args[args.index("--game") + 1]
    if game == "gym:ALE/Pong-v5":
        assert final["game"] == "Pong" and final["hns"] is not None
        assert "twm: warning: gym:ALE/Pong-v5 runs as 'Pong'" in out.stderr and "UserWarning" not in out.stderr
    elif game == "Tennis":
        assert final["game"] == "Tennis" and final["hns"] is None
        report = run_twm(["report", str(run_dir), "--json"])
        assert report.returncode == 0, report.stderr
        entry = json.loads(report.stdout)["games"]["Tennis"]
        assert entry["mean_score"] == pytest.approx(final["mean"]) and entry["mean_hns"] is None
    else:
        assert final["game"] == game
    if "wandb" in command:
        assert list((run_dir / "wandb").glob("offline-run-*"))
        assert (run_dir / "mlflow.db").is_file()


@pytest.mark.slow
def test_a_run_piped_to_a_file_prints_plain_status_lines(
    catch_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, out = catch_run
    check_run_folder(run_dir)
    lines = out.stderr.splitlines()
    assert lines[0].startswith("twm: prefill 0/300 (0.0%) elapsed ")
    assert any(line.startswith("twm: pretrain obs ") for line in lines)
    assert lines[-1].startswith("twm: final eval 300/300 (100.0%) elapsed ") and " eval " in lines[-1]
    assert "\r" not in out.stderr and "|" not in out.stderr  # no progress bar drawing


@pytest.mark.slow
@pytest.mark.parametrize("command", EVAL)
def test_eval_recipe(command: str, catch_run: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    if "--video" in command:
        pytest.importorskip("imageio_ffmpeg")
    run_dir, _ = catch_run
    args, _ = argv(command.replace("runs/RUN", str(run_dir)), tmp_path)
    args = [str(tmp_path / a) if a.endswith(".mp4") else a for a in args]
    out = run_twm([*args, "--episodes", "2"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("catch: mean ")
    if "--checkpoint" in command:
        assert "step_000000300_" in out.stdout  # the newest resume checkpoint
    if "--video" in command:
        import imageio.v2 as imageio

        video = tmp_path / "episode.mp4"
        steps = int(re.search(r"one eval episode of (\d+) steps", out.stdout)[1])  # type: ignore[index]
        with imageio.get_reader(str(video)) as reader:
            assert reader.count_frames() == steps + 1  # the start and one frame per step


@pytest.mark.slow
def test_python_recipe(tmp_path: Path) -> None:
    (code,) = blocks("python")
    code = code.replace('preset="quick"', 'preset="smoke"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400, env=ENV,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    check_run_folder(tmp_path / "runs" / "catch-api")
    assert (tmp_path / "dream.gif").is_file()
    mean = float(out.stdout.strip().splitlines()[-1])  # print(agent.evaluate(episodes=5).mean)
    assert -10 <= mean <= 10  # catch: +-1 per ball, 10 balls a game
    assert yaml_config(tmp_path / "runs" / "catch-api")["dynamics"]["layers"] == 2


def yaml_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())
