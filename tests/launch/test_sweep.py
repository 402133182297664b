"""``twm sweep``: parsing, the skip/resume/restart decision, retries and statuses with a fake trainer, bad
input as one line with exit code 2, and real smoke sweeps whose training process is SIGKILLed midway
(locally, and as Ray tasks on a local 2-CPU Ray instance) that end with every run complete.

The real runs are the smoke preset cut to 150 interactions with a small update budget and short
evaluation episodes: 10-20 s each on one CPU thread, most of it starting Python and torch.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from twm import cli
from twm.games import ATARI100K_GAMES, UnknownGameError
from twm.launch import attempt, plan, sweep
from twm.launch.attempt import execute_run, train_command
from twm.launch.plan import (
    Action,
    RunSpec,
    Status,
    SweepError,
    SweepOptions,
    TrainOptions,
    move_aside,
    parse_games,
    parse_seeds,
    plan_run,
    run_dir_for,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMALL = [  # 100 random steps, pretraining, 50 policy steps; short evaluation episodes
    "train.total_steps=150",
    "train.budget=1500",
    "train.pretrain_budget=300",
    "train.eval_episodes=1",
    "train.checkpoint_interval=50",
    "env.time_limit=100",
]
SMALL_ARGS = [arg for s in SMALL for arg in ("--set", s)]


# --------------------------------------------------------------------------------------- parsing


def test_parse_games() -> None:
    assert parse_games("pong, BOXING") == ["Pong", "Boxing"]
    assert parse_games("ms_pacman,catch,Catch") == ["MsPacman", "catch"]
    assert parse_games("all") == list(ATARI100K_GAMES) and len(parse_games("ALL")) == 26
    assert parse_games("all,catch,Pong") == [*ATARI100K_GAMES, "catch"]
    with pytest.raises(UnknownGameError, match="did you mean Pong"):
        parse_games("Pong,Pongg")
    with pytest.raises(SweepError):
        parse_games(" , ")


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2,3,4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 3,7,2-3") == [7, 3, 2]
    for bad in ("", "a", "-1", "4-2", "1.5", "0-x"):
        with pytest.raises(SweepError, match="--seeds"):
            parse_seeds(bad)


def test_run_dir_layout_and_commands(tmp_path: Path) -> None:
    run_dir = run_dir_for(tmp_path, "Pong", 3)
    assert run_dir == tmp_path / "Pong" / "seed_3"
    options = TrainOptions(preset="smoke", overrides=("train.total_steps=200",), device="cpu")
    spec = RunSpec("Pong", 3, str(run_dir), options)
    assert spec.log_path == tmp_path / "Pong" / "seed_3.log"
    assert spec.pid_path == tmp_path / "Pong" / "seed_3.pid"
    fresh = train_command(spec, resume=False)
    assert fresh[:4] == [sys.executable, "-m", "twm.cli", "train"]
    joined = " ".join(fresh)
    for part in ("--game Pong", "--seed 3", "--preset smoke", f"--run-dir {run_dir}", "--device cpu"):
        assert part in joined
    assert "--set train.total_steps=200" in joined
    resume = train_command(spec, resume=True)
    # --resume takes the run's own config.yaml: no --game/--set (the CLI refuses them with --resume)
    assert resume[4:] == ["--resume", str(run_dir), "--no-progress", "--device", "cpu"]


def test_build_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    (tmp_path / "c.yaml").write_text("train: {}\n")
    opts = SweepOptions(["Pong", "catch"], [0, 1], "sw", TrainOptions(config_file="c.yaml"), parallel=2)
    specs = plan.build_specs(opts)
    assert [(s.game, s.seed) for s in specs] == [("Pong", 0), ("Pong", 1), ("catch", 0), ("catch", 1)]
    assert specs[3].run_dir == str(tmp_path / "sw" / "catch" / "seed_1")  # absolute: for Ray workers
    assert specs[0].options.config_file == str(tmp_path / "c.yaml") and specs[0].options.threads == 4
    opts.ray_address = "auto"  # Ray sets the threads of a task from its CPUs
    assert plan.build_specs(opts)[0].options.threads is None


# --------------------------------------------------------------------------------------- run folders


def test_plan_run_skip_resume_start_restart(tmp_path: Path) -> None:
    run = tmp_path / "Pong" / "seed_0"
    assert plan_run(run) is Action.START  # no folder
    run.mkdir(parents=True)
    assert plan_run(run) is Action.START  # an empty folder: twm train accepts it
    (run / "config.yaml").write_text("env: {}\n")
    assert plan_run(run) is Action.RESTART  # died before its first checkpoint
    ckpts = run / "checkpoints"
    ckpts.mkdir()
    (ckpts / ".step_000000100_00001.pt.tmp-123").write_bytes(b"half")  # a temporary file is no checkpoint
    (ckpts / "final.pt").write_bytes(b"")  # nor is the final agent
    assert plan_run(run) is Action.RESTART
    (ckpts / "step_000000100_00001.pt").write_bytes(b"x")
    assert plan_run(run) is Action.RESUME
    (run / "eval").mkdir()
    (run / "eval" / "final.json").write_text('{"game": "Pong", "scores": [1.0], "mean": 1.0}')
    assert plan_run(run) is Action.SKIP


def test_move_aside_keeps_the_data(tmp_path: Path) -> None:
    run = tmp_path / "seed_0"
    for _ in range(2):
        run.mkdir()
        (run / "config.yaml").write_text("x")
        moved = move_aside(run)
        assert not run.exists() and (moved / "config.yaml").read_text() == "x"
        assert moved.name.startswith("seed_0.failed-")
    assert len(list(tmp_path.glob("seed_0.failed-*"))) == 2  # the same second twice: unique names


# --------------------------------------------------------------------------------------- with a fake trainer

FAKE_TRAIN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    mode, run_dir, resume = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "True"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("env: {}\\n")
    print("fake train", mode, "resume" if resume else "start")
    if mode == "usage":
        print("twm: error: a usage problem", file=sys.stderr)
        sys.exit(2)
    if mode == "early":  # dies before its first checkpoint, every time
        print("twm: error: died early", file=sys.stderr)
        sys.exit(1)
    if mode == "slow" and not resume:  # a checkpoint, then trains until SIGTERM (exit 143, as twm train)
        import signal, time
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "step_000000100_00001.pt").write_bytes(b"x")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        print("twm: training", flush=True)
        time.sleep(60)
        sys.exit(1)
    if mode == "crash" and not resume:  # a checkpoint, then a crash; the resume finishes
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "step_000000100_00001.pt").write_bytes(b"x")
        (run_dir / "checkpoints" / "latest").write_text("step_000000100_00001.pt\\n")
        sys.exit(1)
    (run_dir / "eval").mkdir(exist_ok=True)
    final = {"game": run_dir.parent.name, "seed": 0, "scores": [2.0, 4.0], "mean": 3.0, "hns": None}
    (run_dir / "eval" / "final.json").write_text(json.dumps(final))
    """
)


@pytest.fixture
def fake_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Replace ``twm train`` by a script whose behaviour is chosen per game: modes[game]."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    modes: dict[str, str] = {}

    def command(spec: RunSpec, resume: bool) -> list[str]:
        return [sys.executable, str(script), modes.get(spec.game, "ok"), spec.run_dir, str(resume)]

    monkeypatch.setattr(attempt, "train_command", command)
    return modes


def spec_for(root: Path, game: str = "Pong", seed: int = 0, retries: int = 2) -> RunSpec:
    return RunSpec(game, seed, str(run_dir_for(root, game, seed)), TrainOptions(preset="smoke"), retries)


def test_crashed_run_is_resumed(tmp_path: Path, fake_trainer: dict[str, str]) -> None:
    fake_trainer["Pong"] = "crash"
    events: list[str] = []
    spec = spec_for(tmp_path / "sweep")
    result = execute_run(spec, events.append)
    assert result.status is Status.FINISHED and result.attempts == 2 and result.score == 3.0
    assert any("start (attempt 1/3)" in e for e in events)
    assert any("attempt 1 failed (exit code 1: fake train crash start); retrying" in e for e in events)
    assert any("resume from step_000000100_00001.pt (attempt 2/3)" in e for e in events)
    log = spec.log_path.read_text()
    assert log.count("=== twm sweep: attempt") == 2 and "fake train crash resume" in log
    assert not spec.pid_path.exists()  # removed when the attempt ends
    # Started again: finished runs are skipped without starting anything.
    again = execute_run(spec, events.append)
    assert again.status is Status.SKIPPED and again.attempts == 0 and again.score == 3.0


def test_run_dying_before_a_checkpoint_is_restarted_then_fails(
    tmp_path: Path, fake_trainer: dict[str, str]
) -> None:
    fake_trainer["Pong"] = "early"
    spec = spec_for(tmp_path, retries=2)
    result = execute_run(spec, lambda _: None)
    assert result.status is Status.FAILED and result.attempts == 3
    assert "exit code 1: twm: error: died early" in result.message
    # The second and third attempts moved the folder of the previous one aside instead of deleting it.
    moved = sorted((tmp_path / "Pong").glob("seed_0.failed-*"))
    assert len(moved) == 2 and all((m / "config.yaml").is_file() for m in moved)


def test_a_task_run_again_after_its_node_died_keeps_counting_attempts(
    tmp_path: Path, fake_trainer: dict[str, str]
) -> None:
    import dataclasses
    import json
    import socket

    fake_trainer["Pong"] = "early"
    spec = dataclasses.replace(spec_for(tmp_path, retries=2), sweep_id="sweep-1")
    spec.pid_path.parent.mkdir(parents=True, exist_ok=True)

    def headers() -> int:
        return spec.log_path.read_text().count("=== twm sweep: attempt") if spec.log_path.exists() else 0

    # What a node that died during attempt 2 of this sweep leaves: the attempt record and its pid
    # file (the process is gone).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    spec.attempt_path.write_text(json.dumps({"sweep": "sweep-1", "attempt": 2}))
    info = {"pid": dead.pid, "host": socket.gethostname(), "attempt": 2, "started": 1.0, "sweep": "sweep-1"}
    spec.pid_path.write_text(json.dumps(info))
    before = headers()
    result = execute_run(spec, lambda _: None)
    assert result.status is Status.FAILED and result.attempts == 3  # one attempt left, not three
    assert headers() - before == 1
    # A node that died after attempt 2 ended (its pid file removed) and before attempt 3 started:
    # the record still counts (this re-run used to start again at attempt 1).
    spec.attempt_path.write_text(json.dumps({"sweep": "sweep-1", "attempt": 2}))
    assert not spec.pid_path.exists()
    before = headers()
    result = execute_run(spec, lambda _: None)
    assert result.attempts == 3 and headers() - before == 1
    # Another sweep (a new `twm sweep`) starts with the full budget.
    spec.attempt_path.write_text(json.dumps({"sweep": "sweep-0", "attempt": 2}))
    before = headers()
    assert execute_run(spec, lambda _: None).attempts == 3
    assert headers() - before == 3


def test_usage_error_is_not_retried(tmp_path: Path, fake_trainer: dict[str, str]) -> None:
    fake_trainer["Pong"] = "usage"
    result = execute_run(spec_for(tmp_path), lambda _: None)
    assert result.status is Status.FAILED and result.attempts == 1
    assert result.message == "exit code 2: twm: error: a usage problem"


def test_run_still_running_elsewhere_is_left_alone(tmp_path: Path, fake_trainer: dict[str, str]) -> None:
    spec = spec_for(tmp_path)
    spec.pid_path.parent.mkdir(parents=True)
    # A live process that looks like a twm run (its command line names twm), as another sweep's would.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "twm"])
    try:
        import socket

        spec.pid_path.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        result = execute_run(spec, lambda _: None)
        assert result.status is Status.FAILED and str(other.pid) in result.message
        assert result.attempts == 0 and not Path(spec.run_dir).exists()
    finally:
        other.kill()
        other.wait()
    # A stale pid file (the process is gone) does not block the run.
    assert execute_run(spec, lambda _: None).status is Status.FINISHED


def test_local_sweep_statuses_summary_and_exit_code(
    tmp_path: Path, fake_trainer: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "sweep"
    fake_trainer.update({"Pong": "crash", "Boxing": "ok"})
    args = ["sweep", "--games", "pong,boxing", "--seeds", "0,1", "--preset", "smoke", "--root", str(root)]
    args += ["--parallel", "2", "--no-progress"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "4/4 runs complete (4 finished now, 0 skipped), 0 failed" in out
    assert f"twm report {root}" in out
    data = json.loads((root / "sweep.json").read_text())
    assert data["complete"] and data["counts"] == {"finished": 4}
    statuses = {(r["game"], r["seed"]): (r["status"], r["attempts"], r["score"]) for r in data["runs"]}
    assert statuses == {
        ("Pong", 0): ("finished", 2, 3.0),
        ("Pong", 1): ("finished", 2, 3.0),
        ("Boxing", 0): ("finished", 1, 3.0),
        ("Boxing", 1): ("finished", 1, 3.0),
    }
    # Again, with one more game that fails permanently: the others are skipped; exit code 1.
    fake_trainer["catch"] = "early"
    args[2] = "pong,boxing,catch"
    assert cli.main([*args, "--retries", "0"]) == 1
    out = capsys.readouterr().out
    assert "4/6 runs complete (0 finished now, 4 skipped), 2 failed" in out
    table = [line.split() for line in out.splitlines() if line.startswith(("Pong ", "Boxing ", "catch "))]
    assert sorted((row[0], row[2]) for row in table) == sorted(
        [("Pong", "skipped")] * 2 + [("Boxing", "skipped")] * 2 + [("catch", "failed")] * 2
    )
    assert "catch seed 0: exit code 1: twm: error: died early" in out
    data = json.loads((root / "sweep.json").read_text())
    assert not data["complete"] and data["counts"] == {"skipped": 4, "failed": 2}


def test_an_error_in_one_run_does_not_stop_the_sweep(
    tmp_path: Path, fake_trainer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_attempt = attempt.run_attempt

    def failing_attempt(spec: RunSpec, command: list[str], n: int) -> int:
        if spec.game == "Boxing":
            raise OSError(28, "No space left on device")
        return real_attempt(spec, command, n)

    monkeypatch.setattr(attempt, "run_attempt", failing_attempt)
    root = tmp_path / "sweep"
    opts = SweepOptions(["Pong", "Boxing"], [0], str(root), TrainOptions(preset="smoke"), progress=False)
    out = io.StringIO()
    assert sweep.run_sweep(opts, out=out) == 1
    runs = {r["game"]: r for r in json.loads((root / "sweep.json").read_text())["runs"]}
    assert runs["Pong"]["status"] == "finished" and runs["Boxing"]["status"] == "failed"
    assert "No space left on device" in runs["Boxing"]["message"]
    assert "Boxing seed 0: OSError: [Errno 28] No space left on device" in out.getvalue()


def test_sigterm_stops_the_sweep_resumably(
    tmp_path: Path, fake_trainer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_trainer["Pong"] = "slow"
    root = tmp_path / "sweep"
    opts = SweepOptions(
        ["Pong"], [0, 1, 2], str(root), TrainOptions(preset="smoke"), parallel=2, progress=False
    )

    def stop_when_both_run() -> None:  # as a scheduler would: SIGTERM to the sweep process only
        deadline = time.monotonic() + 60
        while len(list(root.glob("Pong/seed_*.pid"))) < 2 or not all(
            "training" in p.read_text() for p in root.glob("Pong/seed_*.log")
        ):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_when_both_run)
    killer.start()
    out = io.StringIO()
    t0 = time.monotonic()
    code = sweep.run_sweep(opts, out=out)
    killer.join()
    assert code == 143 and time.monotonic() - t0 < 30, out.getvalue()
    runs = json.loads((root / "sweep.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["interrupted"] * 3
    assert runs[0]["message"] == runs[1]["message"] == "stopped by SIGTERM (exit code 143): twm: training"
    assert runs[2]["message"] == "not started" and not list(root.glob("Pong/*.pid"))
    assert "start the same sweep again" in out.getvalue()
    # Started again, the two stopped runs resume from their checkpoint and the third starts.
    fake_trainer["Pong"] = "ok"
    assert sweep.run_sweep(opts, out=io.StringIO()) == 0
    runs = json.loads((root / "sweep.json").read_text())["runs"]
    assert [(r["status"], r["attempts"]) for r in runs] == [("finished", 1)] * 3
    assert "fake train ok resume" in (root / "Pong" / "seed_0.log").read_text()
    assert "fake train ok start" in (root / "Pong" / "seed_2.log").read_text()


# --------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--games", "Pong,Pongg"], "unknown game 'Pongg' (did you mean Pong?)"),
        (["--games", "Pong", "--seeds", "0,x"], "--seeds takes non-negative integers"),
        (["--games", "Pong", "--set", "env.game=Boxing"], "--set env.game=... is set by the sweep"),
        (["--games", "Pong", "--set", "train.seed=3"], "--set train.seed=... is set by the sweep"),
        (["--games", "Pong", "--set", "dynamics.layrs=3"], "unknown config key 'dynamics.layrs'"),
        (["--games", "Pong", "--preset", "smok"], "unknown preset 'smok'"),
        (["--games", "Pong", "--parallel", "0"], "--parallel must be at least 1"),
        (["--games", "Pong", "--retries", "-1"], "--retries must be 0 or more"),
        (["--games", "Pong", "--gpus-per-run", "1"], "--gpus-per-run needs --ray-address"),
        (["--games", "Pong", "--config", "/no/such.yaml"], "config file /no/such.yaml not found"),
        (["--games", "Pong", "--device", "tpu"], "--device must be one of auto, cpu, cuda"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    root = tmp_path / "sweep"
    assert cli.main(["sweep", "--root", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("twm: error: ") and message in err, err
    assert not root.exists()  # nothing was started or written


def test_unwritable_root_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "sweep"
    assert cli.main(["sweep", "--games", "catch", "--root", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the sweep folder" in err


def test_missing_ray_is_one_line_with_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    root = tmp_path / "sweep"
    assert cli.main(["sweep", "--games", "catch", "--root", str(root), "--ray-address", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs Ray" in err and "pip install 'twm[cluster]'" in err
    assert not root.exists()


def test_sweep_without_ray_does_not_import_it(
    tmp_path: Path, fake_trainer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    opts = SweepOptions(["catch"], [0], str(tmp_path / "sweep"), TrainOptions(preset="smoke"), progress=False)
    assert sweep.run_sweep(opts, out=io.StringIO()) == 0
    assert "ray" not in sys.modules


# --------------------------------------------------------------------------------------- real runs


def wait_for(predicate: Any, alive: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert alive(), "the sweep ended before the condition was met"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def running_with_checkpoint(root: Path) -> tuple[Path, int] | None:
    """A run whose training process is running and has written a resume checkpoint: (run folder, pid)."""
    for pid_file in sorted(root.glob("*/seed_*.pid")):
        run_dir = pid_file.with_suffix("")
        if (run_dir / "checkpoints" / "latest").is_file() and not (run_dir / "eval" / "final.json").exists():
            try:
                return run_dir, int(json.loads(pid_file.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                continue  # it ended in between
    return None


def kill_midway(root: Path, alive: Any) -> Path:
    """SIGKILL the training process of the first run that has a checkpoint; returns its run folder."""
    run_dir, pid = wait_for(lambda: running_with_checkpoint(root), alive)
    os.kill(pid, signal.SIGKILL)
    return run_dir


@pytest.mark.slow
def test_local_sweep_resumes_a_killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    root = tmp_path / "sweep"
    args = ["sweep", "--games", "catch", "--seeds", "0", "--preset", "smoke", "--root", str(root)]
    args += ["--retries", "1", "--no-progress", *SMALL_ARGS]
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(cli.main(args)))
    thread.start()
    try:
        killed = kill_midway(root, thread.is_alive)
    finally:
        thread.join(timeout=300)
    assert out == [0]
    assert killed == root / "catch" / "seed_0"
    data = json.loads((root / "sweep.json").read_text())
    assert [(r["status"], r["attempts"]) for r in data["runs"]] == [("finished", 2)]
    log = (root / "catch" / "seed_0.log").read_text()
    assert log.count("=== twm sweep: attempt") == 2 and f"twm: resuming {killed} from step_" in log
    assert (killed / "eval" / "final.json").is_file()


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_run_and_is_completed_by_a_restart(tmp_path: Path) -> None:
    """2 games x 2 seeds as Ray tasks on a local 2-CPU Ray instance; one run's training process is
    SIGKILLed midway (no retries, so it fails); the sweep started again skips the three finished runs
    and resumes the killed one from its checkpoint; the report then covers all four."""
    pytest.importorskip("ray")
    root = tmp_path / "sweep"
    args = [sys.executable, "-m", "twm.cli", "sweep", "--games", "catch,Pong", "--seeds", "0,1"]
    args += ["--preset", "smoke", "--root", str(root), "--ray-address", "local", "--parallel", "2"]
    args += ["--no-progress", *SMALL_ARGS]
    first = subprocess.Popen(
        [*args, "--retries", "0"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        killed = kill_midway(root, lambda: first.poll() is None)
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    game, seed = killed.parent.name, int(killed.name.removeprefix("seed_"))
    assert first.returncode == 1, out
    assert "(_ray_task pid=" in out  # the runs went through Ray tasks
    assert f"{game} seed {seed}: failed after 1 attempt: killed by SIGKILL" in out, out
    runs = json.loads((root / "sweep.json").read_text())["runs"]
    statuses = {(r["game"], r["seed"]): r["status"] for r in runs}
    assert statuses.pop((game, seed)) == "failed" and set(statuses.values()) == {"finished"}
    assert not (killed / "eval" / "final.json").exists()

    second = subprocess.run([*args], env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    runs = json.loads((root / "sweep.json").read_text())["runs"]
    statuses = {(r["game"], r["seed"]): (r["status"], r["attempts"]) for r in runs}
    assert statuses.pop((game, seed)) == ("finished", 1) and set(statuses.values()) == {("skipped", 0)}
    assert f"{game} seed {seed}: resume from step_" in second.stdout
    log = (killed.parent / f"{killed.name}.log").read_text()
    assert f"twm: resuming {killed} from step_" in log
    assert all(
        (run_dir_for(root, g, s) / "eval" / "final.json").is_file() for g in ("catch", "Pong") for s in (0, 1)
    )

    from twm.analysis.report import run_report

    report = io.StringIO()
    assert run_report([str(root)], reps=100, as_json=True, stdout=report, stderr=io.StringIO()) == 0
    games = json.loads(report.getvalue())["games"]
    assert {g: v["runs"] for g, v in games.items()} == {"catch": 2, "Pong": 2}
