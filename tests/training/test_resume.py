"""Runs that survive: interrupt (real signals) and resume equals the uninterrupted run bit for bit;
SIGKILL mid-write, a second Ctrl-C, corrupt checkpoints, and every bad input is one line and an exit code.

All runs are the smoke preset on catch, cut to 200 interactions (100 random, 100 with the policy, 71
updates) with a checkpoint every 30 interactions; about 10 s per run on one CPU thread. The signal
points come from the trainer's ``TWM_TEST_SIGNAL_AT`` hook, so they are exact.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch
import yaml

from builders import SWITCH_OVERRIDES
from twm import cli
from twm.training import checkpoint as ckpt
from twm.training.checkpoint import CheckpointManager, atomic_torch_save, load_checkpoint
from twm.training.logger import read_metrics
from twm.training.trainer import Trainer, TrainingStopped, is_time_key
from twm.update import Learner

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SETTINGS = ["train.total_steps=200", "train.budget=5000", "train.checkpoint_interval=30"]
TRAIN_ARGS = ["--game", "catch", "--preset", "smoke", "--no-progress"]
for _s in SETTINGS:
    TRAIN_ARGS += ["--set", _s]


def twm_process(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "twm.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **env},
    )


def run_twm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = twm_process(*args, **env)
    out, err = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def outcome(run_dir: Path) -> dict[str, Any]:
    """What must not depend on interruptions: metrics without wall-clock fields, final scores, weights."""
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    return {
        "metrics": [
            {k: v for k, v in r.items() if not is_time_key(k)}
            for r in read_metrics(run_dir / "metrics.jsonl")
        ],
        "final": {k: v for k, v in final.items() if k not in ("wall_time_s", "phase_seconds")},
        "model": load_checkpoint(run_dir / "checkpoints" / "final.pt")["model"],
    }


def assert_same_run(run_dir: Path, reference: dict[str, Any]) -> None:
    got = outcome(run_dir)
    assert got["metrics"] == reference["metrics"]
    assert got["final"] == reference["final"]
    assert got["model"].keys() == reference["model"].keys()
    assert all(torch.equal(got["model"][k], reference["model"][k]) for k in got["model"])


def one_line(text: str) -> str:
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def newest_checkpoint(run_dir: Path) -> Path:
    return CheckpointManager(run_dir).checkpoint_files()[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    start = time.perf_counter()
    out = run_twm("train", *TRAIN_ARGS, "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    print(f"uninterrupted run: {time.perf_counter() - start:.1f} s")
    result = outcome(run_dir)
    # The run is long enough to matter: every phase, evaluations at 100 and the final one.
    assert [r["step"] for r in result["metrics"] if "eval/mean_score" in r] == [100, 200]
    return result


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): the same float results
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------- real signals


@pytest.mark.parametrize(
    ("point", "sig", "phase"),
    [("train:145", "SIGINT", "training"), ("after_eval:100", "SIGTERM", "training")],
    ids=["sigint-mid-collection", "sigterm-right-after-an-eval"],
)
def test_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path, reference: dict[str, Any], point: str, sig: str, phase: str
) -> None:
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    out = run_twm(
        "train", *TRAIN_ARGS, "--run-dir", str(run_dir), TWM_TEST_SIGNAL_AT=point, TWM_TEST_SIGNAL=sig
    )
    stopped = time.perf_counter() - start
    assert out.returncode == 128 + signal.Signals[sig], out.stderr
    at = int(point.split(":")[1])
    assert re.fullmatch(
        rf"twm: stopped by {sig} during {phase} at {at}/200 interactions; checkpoint \S+; "
        rf"continue with: twm train --resume {re.escape(str(run_dir))}\n",
        out.stderr,
    )
    assert newest_checkpoint(run_dir).name.startswith(f"step_{at:09d}_")
    assert not (run_dir / "eval" / "final.json").exists()

    # A second copy of the stopped run whose newest checkpoint is then truncated at a random byte.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    newest = newest_checkpoint(copy)
    data = newest.read_bytes()
    newest.write_bytes(data[: int(np.random.default_rng(at).integers(1, len(data)))])

    start = time.perf_counter()
    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    resumed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith(f"twm: resuming {run_dir} from step_{at:09d}_")
    assert_same_run(run_dir, reference)
    print(f"{point}: stopped after {stopped:.1f} s, resumed in {resumed:.1f} s")

    out = run_twm("train", "--resume", str(copy), "--no-progress")
    assert out.returncode == 0, out.stderr
    warning = out.stderr.splitlines()[0]
    assert warning.startswith("twm: warning: checkpoint ") and newest.name in warning
    assert "truncated" in warning or "corrupt" in warning or "cannot read" in warning
    assert "trying the previous one" in warning
    assert_same_run(copy, reference)

    # A finished run has nothing to resume.
    out = run_twm("train", "--resume", str(run_dir))
    assert out.returncode == 2 and "already finished" in one_line(out.stderr)


def wait_for(predicate: Any, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sleeping_half_written(mark: Path) -> dict[str, str]:
    """The hook's environment: the checkpoint write sleeps 60 s after its payload (before the
    checksum trailer) and creates ``mark`` when the sleep begins. The temporary file grows while
    ``torch.save`` writes, so its size alone would let a signal land inside ``torch.save``."""
    return {"TWM_TEST_WRITE_DELAY_MARK": str(mark)}


def test_sigkill_while_writing_leaves_a_loadable_checkpoint(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    run_dir = tmp_path / "run"
    # The periodic checkpoint at interaction 150 sleeps half-written; kill the process right then.
    mark = tmp_path / "sleeping"
    proc = twm_process(
        "train",
        *TRAIN_ARGS,
        "--run-dir",
        str(run_dir),
        TWM_TEST_WRITE_DELAY="60@step_000000150",
        **sleeping_half_written(mark),
    )
    ckpt_dir = run_dir / "checkpoints"
    wait_for(mark.exists, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    temporary = next(ckpt_dir.glob(".step_000000150_*.tmp-*"))
    assert temporary.stat().st_size > 0
    # The temporary file is never taken for a checkpoint: the newest is the one at 120, complete.
    assert newest_checkpoint(run_dir).name.startswith("step_000000120_")
    assert (ckpt_dir / "latest").read_text().strip() == newest_checkpoint(run_dir).name
    load_checkpoint(newest_checkpoint(run_dir), require_checksum=True)

    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert not temporary.exists()
    assert_same_run(run_dir, reference)


def test_a_second_signal_exits_at_once_and_corrupts_nothing(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    run_dir = tmp_path / "run"
    # The first SIGINT (hook, after interaction 145) starts the stop checkpoint, which sleeps
    # half-written; the second SIGINT arrives then.
    proc = twm_process(
        "train",
        *TRAIN_ARGS,
        "--run-dir",
        str(run_dir),
        TWM_TEST_SIGNAL_AT="train:145",
        TWM_TEST_WRITE_DELAY="60@step_000000145",
        **sleeping_half_written(tmp_path / "sleeping"),
    )
    ckpt_dir = run_dir / "checkpoints"
    wait_for((tmp_path / "sleeping").exists, proc)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 10  # not the 60 s of the sleeping write
    assert proc.returncode == 130
    assert one_line(err).startswith(
        "twm: interrupted again at 145/200 interactions; exited without a new checkpoint"
    )
    assert "step_000000120_" in err
    assert not any(ckpt_dir.glob(".*.tmp-*")) and newest_checkpoint(run_dir).name.startswith(
        "step_000000120_"
    )

    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert_same_run(run_dir, reference)


# --------------------------------------------------------------------------------------- in process


@pytest.mark.parametrize("point", ["prefill:50", "pretrain:obs:3", "eval:100", "final_eval"])
def test_resume_from_every_phase_in_process(
    tmp_path: Path,
    reference: dict[str, Any],
    point: str,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    # Mid-prefill, mid-pretraining (inside a logging window), an aborted evaluation, the final
    # evaluation; small frame chunks, so the replay is split over chunk files and a partial tail.
    monkeypatch.setattr(ckpt, "CHECKPOINT_CHUNK", 64)
    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", point)
    run_dir = tmp_path / "run"
    from twm.config_files import load_config

    cfg = load_config("smoke", ["env.game=catch", *SETTINGS])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingStopped) as stop:
        Trainer(cfg, run_dir, device="cpu", progress=False, preset="smoke").run()
    assert stop.value.exit_code == 130 and stop.value.checkpoint is not None
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer's handlers are gone again
    # Chunks of 64 steps on disk, the rest of the frames inside the checkpoint.
    interactions = load_checkpoint(stop.value.checkpoint)["interactions"]
    chunks = sorted(p.name for p in (run_dir / "checkpoints" / "replay").glob("frames_*.npy"))
    assert chunks == [f"frames_{64 * i:09d}.npy" for i in range(interactions // 64)]
    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    summary = Trainer.resume(run_dir, device="cpu", progress=False).run()
    assert summary["preset"] == "smoke"
    assert_same_run(run_dir, reference)


@pytest.mark.parametrize(
    ("game", "package", "extra"),
    [
        ("minatar/breakout", "minatar", []),
        ("minatar/breakout", "minatar", ["env.observation=grid"]),
        ("crafter", "crafter", []),
        ("gym:CartPole-v1", "gymnasium", ["env.observation=vector"]),
    ],
    ids=["minatar", "minatar-grid", "crafter", "gym-vector"],
)
def test_pixel_game_runs_resume_exactly(
    tmp_path: Path, game: str, package: str, extra: list[str], monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    # These games are Python objects, not the plain arrays of catch and Atari: a checkpoint holds
    # them as bytes (twm.envs.saved_state). Before that a resume of them failed, and moved every
    # checkpoint of the run aside as corrupt.
    pytest.importorskip(package)
    from twm.config_files import load_config

    cfg = load_config("smoke", [f"env.game={game}", *SETTINGS, *extra])
    Trainer(cfg, tmp_path / "reference", device="cpu", progress=False).run()
    reference = outcome(tmp_path / "reference")
    run_dir = tmp_path / "run"
    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", "train:145")  # mid-episode, in the policy's phase
    with pytest.raises(TrainingStopped):
        Trainer(cfg, run_dir, device="cpu", progress=False).run()
    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    assert newest_checkpoint(run_dir).name.startswith("step_000000145_")
    Trainer.resume(run_dir, device="cpu", progress=False).run()
    assert_same_run(run_dir, reference)
    assert not list((run_dir / "checkpoints").glob("*.corrupt"))


# Every switch beyond the paper at once (the `plus` preset's values): the slow critic's weights and
# the return normaliser's EMAs must come back from a checkpoint for the run to continue exactly.
# Policy resets every 40 interactions: one at 120 before the stop at 145, the others after the resume.
PLUS_SWITCHES = [
    *SWITCH_OVERRIDES,
    "actor_critic.entropy_coef=3e-4",
    "actor_critic.reset_every=40",
    "actor_critic.reset_updates=2",
]


@pytest.mark.parametrize(
    ("switches", "point"),
    [
        (PLUS_SWITCHES, "pretrain:ac:2"),
        (PLUS_SWITCHES, "train:145"),
        (["actor_critic.inputs=zh"], "train:145"),
    ],
    ids=["plus-mid-pretraining", "plus-mid-collection", "zh-mid-collection"],
)
def test_runs_with_switches_beyond_the_paper_resume_exactly(
    tmp_path: Path, switches: list[str], point: str, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    from twm.config_files import load_config

    cfg = load_config("smoke", ["env.game=catch", *SETTINGS, *switches])
    Trainer(cfg, tmp_path / "reference", device="cpu", progress=False).run()
    reference = outcome(tmp_path / "reference")
    if switches is PLUS_SWITCHES:
        assert any("ac/return_scale" in r for r in reference["metrics"])
        # Their state is in the checkpoints' weights, which assert_same_run compares too.
        assert any(k.startswith("slow_critic.") for k in reference["model"])
        assert {"return_normalizer.lo", "return_normalizer.hi"} <= set(reference["model"])
    run_dir = tmp_path / "run"
    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", point)
    with pytest.raises(TrainingStopped):
        Trainer(cfg, run_dir, device="cpu", progress=False).run()
    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    Trainer.resume(run_dir, device="cpu", progress=False).run()
    assert_same_run(run_dir, reference)
    # The train game's acting memory (zh) went through the checkpoint: the last resume checkpoints
    # (written before the final evaluation) hold the same memory.
    got = load_checkpoint(newest_checkpoint(run_dir))["resume"]["acting"]
    expected = load_checkpoint(newest_checkpoint(tmp_path / "reference"))["resume"]["acting"]
    assert (got is None) == (expected is None) == (switches is PLUS_SWITCHES)
    if got is not None:
        for key in ("h_prev", "prev_reward", "prev_done"):
            assert torch.equal(got[key], expected[key]), key
        assert all(
            torch.equal(a, b)
            for a, b in zip(got["memory"]["hiddens"], expected["memory"]["hiddens"], strict=True)
        )
        # The stream went on from the checkpoint rather than starting again at the resume.
        assert got["memory"]["num_tokens"] == expected["memory"]["num_tokens"] == 3 * 100 - 1
        assert torch.equal(got["memory"]["episode"], expected["memory"]["episode"])


@pytest.mark.parametrize("damage", ["missing", "bit-flip", "truncated"])
def test_a_damaged_replay_chunk_never_costs_the_resume_point(
    tmp_path: Path, reference: dict[str, Any], damage: str, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    # Chunks of 64 frames; stopped at 145 with checkpoints at 120 (chunk 0) and 145 (chunks 0 and 64).
    monkeypatch.setattr(ckpt, "CHECKPOINT_CHUNK", 64)
    from twm.config_files import load_config

    cfg = load_config("smoke", ["env.game=catch", *SETTINGS])
    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", "train:145")
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        Trainer(cfg, run_dir, device="cpu", progress=False, preset="smoke").run()
    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    replay_dir = run_dir / "checkpoints" / "replay"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt"))
    assert [c[:14] for c in checkpoints] == ["step_000000120", "step_000000145"]

    def spoil(chunk: Path) -> bytes:
        data = chunk.read_bytes()
        if damage == "missing":
            chunk.unlink()
        elif damage == "bit-flip":
            flipped = bytearray(data)
            flipped[-5] ^= 0x10
            chunk.write_bytes(bytes(flipped))
        else:
            chunk.write_bytes(data[: len(data) // 2])
        return data

    # The first chunk, which both checkpoints need: a clear refusal naming it; nothing renamed.
    first = replay_dir / "frames_000000000.npy"
    saved = spoil(first)
    out = run_twm("train", "--resume", str(run_dir), "--no-progress")
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert f"restore the replay chunk {first}" in last and "Traceback" not in out.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == checkpoints
    assert not list((run_dir / "checkpoints").glob("*.corrupt"))
    # Restored: the run resumes from its newest checkpoint and ends as the uninterrupted run.
    first.write_bytes(saved)
    second = replay_dir / "frames_000000064.npy"
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    Trainer.resume(run_dir, device="cpu", progress=False).run()
    assert_same_run(run_dir, reference)

    # The second chunk, which only the newest checkpoint needs: the previous checkpoint is used
    # (the run is still exact) and the newest is kept.
    spoil(copy / "checkpoints" / "replay" / second.name)
    warnings: list[str] = []
    trainer = Trainer.resume(copy, device="cpu", progress=False, warn=warnings.append)
    assert any(second.name in w and "the checkpoint is kept" in w for w in warnings), warnings
    trainer.run()
    assert_same_run(copy, reference)


def kill_soon_after_a_new_checkpoint(proc: subprocess.Popen[str], checkpoints: Path, delay: float) -> bool:
    """SIGKILLs ``proc`` ``delay`` seconds after a checkpoint newer than those present now appears.

    Returns whether it killed; False when the process ended first. Waiting for a checkpoint instead of
    a wall-clock moment keeps the kills after a checkpoint on any machine, fast or slow (a fixed
    window of seconds killed only before the first checkpoint on a slow CI machine).
    """
    before = set(checkpoints.glob("step_*.pt"))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not set(checkpoints.glob("step_*.pt")) - before:
        time.sleep(0.02)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return True
    return False


def test_random_sigkills_then_resume_equal_the_uninterrupted_run(tmp_path: Path, reference: dict[str, Any]) -> None:
    # SIGKILL at a random moment (seeded) after a new checkpoint, three times, each time resuming from
    # what is there; then let the run end. Kills land mid-update, mid-checkpoint and mid-logging.
    rng = np.random.default_rng(29)
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    kills = 0
    for attempt in range(4):
        if (run_dir / "eval" / "final.json").exists():
            break  # a kill came after the run had finished
        args = ["--resume", str(run_dir), "--no-progress"] if attempt else [*TRAIN_ARGS, "--run-dir", str(run_dir)]
        proc = twm_process("train", *args)
        if attempt < 3 and kill_soon_after_a_new_checkpoint(proc, checkpoints, float(rng.uniform(0.0, 1.5))):
            kills += 1
            continue
        assert proc.wait(timeout=300) == 0, proc.communicate()[1]
        break
    assert kills >= 1
    assert_same_run(run_dir, reference)


def stopped_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run stopped by SIGINT after 30 prefill steps, with its checkpoint (a couple of seconds)."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv("TWM_TEST_SIGNAL_AT", "prefill:30")
    assert cli.main(["train", *TRAIN_ARGS, "--run-dir", str(run_dir)]) == 130
    monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
    return run_dir


def test_resume_refuses_what_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    run_dir = stopped_run(tmp_path, monkeypatch)
    capsys.readouterr()
    checkpoint = newest_checkpoint(run_dir)
    original = checkpoint.read_bytes()

    def resume_error(*extra: str) -> str:
        assert cli.main(["train", "--resume", str(run_dir), "--no-progress", *extra]) == 2
        return one_line(capsys.readouterr().err)

    # Options that would change the run.
    for extra in (["--preset", "smoke"], ["--set", "train.seed=3"], ["--game", "catch"], ["--seed", "1"]):
        err = resume_error(*extra)
        assert "cannot be combined with " + extra[0] in err

    # The run's config.yaml was edited.
    config = run_dir / "config.yaml"
    text = config.read_text()
    data = yaml.safe_load(text)
    data["obs_model"]["lr"] = 0.5
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    err = resume_error()
    assert "does not match" in err and "obs_model.lr: 0.0001 in the checkpoint, 0.5 in config.yaml" in err
    config.write_text(text)

    # Written by an incompatible twm: the format version fields.
    for field, message in (("resume_format", "resume format 99"), ("format_version", "format version 99")):
        state = load_checkpoint(checkpoint)
        state[field] = 99
        atomic_torch_save(state, checkpoint)
        err = resume_error()
        assert message in err and "this twm" in err
        checkpoint.write_bytes(original)

    # Every checkpoint corrupt: warnings for each, then one error line.
    for path in CheckpointManager(run_dir).checkpoint_files():
        path.write_bytes(path.read_bytes()[:1000])
    assert cli.main(["train", "--resume", str(run_dir)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("twm: error: no usable checkpoint in ")
    assert all(line.startswith("twm: warning: checkpoint ") for line in lines[:-1]) and len(lines) >= 2


def test_resume_and_run_folder_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    def error(args: list[str]) -> str:
        assert cli.main(args) == 2
        return one_line(capsys.readouterr().err)

    assert "does not exist" in error(["train", "--resume", str(tmp_path / "missing")])
    assert "not a twm run folder" in error(["train", "--resume", str(tmp_path)])
    empty_run = tmp_path / "empty"
    empty_run.mkdir()
    (empty_run / "config.yaml").write_text(yaml.safe_dump({"env": {"game": "catch"}}))
    assert "no checkpoint to resume from" in error(["train", "--resume", str(empty_run)])

    run_dir = stopped_run(tmp_path, monkeypatch)
    capsys.readouterr()
    err = error(["train", *TRAIN_ARGS, "--run-dir", str(run_dir)])
    assert "already exists" in err and f"twm train --resume {run_dir}" in err

    # Bad input fails before anything is created.
    fresh = tmp_path / "fresh"
    assert "did you mean Pong" in error(["train", "--game", "Pongg", "--run-dir", str(fresh)])
    assert "unknown preset 'smok'" in error(
        ["train", "--game", "catch", "--preset", "smok", "--run-dir", str(fresh)]
    )
    assert "unknown config key 'train.totl_steps'" in error(
        ["train", "--game", "catch", "--set", "train.totl_steps=5", "--run-dir", str(fresh)]
    )
    assert "train.checkpoint_interval must be in [1, inf]" in error(
        ["train", "--game", "catch", "--set", "train.checkpoint_interval=0", "--run-dir", str(fresh)]
    )
    assert not fresh.exists()


def test_a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    update = Learner.update
    calls = {"n": 0}

    def exploding(self: Learner, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        metrics = update(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 40:
            metrics["dyn/loss"] = torch.tensor(float("nan"))
            with torch.no_grad():  # as a real blow-up would: the weights are gone too
                next(self.agent.parameters()).fill_(float("nan"))
        return metrics

    monkeypatch.setattr(Learner, "update", exploding)
    run_dir = tmp_path / "run"
    assert cli.main(["train", *TRAIN_ARGS, "--run-dir", str(run_dir)]) == 1
    err = one_line(capsys.readouterr().err)
    m = re.fullmatch(
        r"twm: error: non-finite loss dyn/loss=nan at update 40 \(interaction (\d+)\); "
        r"last good checkpoint: (\S+) \(interaction (\d+)\)\n",
        err,
    )
    assert m, err
    last = Path(m.group(2))
    assert newest_checkpoint(run_dir) == last and int(m.group(3)) < int(m.group(1))
    state = load_checkpoint(last, require_checksum=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run_dir / "checkpoints" / "final.pt").exists()


def test_no_space_left_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    write = ckpt._write_payload
    calls = {"n": 0}

    def filling_disk(obj: Any, f: IO[bytes]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: the disk is full halfway through it
            f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(obj, f)

    monkeypatch.setattr(ckpt, "_write_payload", filling_disk)
    run_dir = tmp_path / "run"
    assert cli.main(["train", *TRAIN_ARGS, "--run-dir", str(run_dir)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("twm: error: cannot write ") and "No space left on device" in err
    previous = newest_checkpoint(run_dir)
    assert f"the last checkpoint {previous} is intact" in err
    assert previous.name.startswith("step_000000060_")  # the checkpoints at 30 and 60 came first
    load_checkpoint(previous, require_checksum=True)
    assert not any((run_dir / "checkpoints").rglob(".*.tmp-*"))
