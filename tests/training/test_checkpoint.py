"""Checkpoint files: atomic writes with a checksum trailer, corruption and full-disk handling, the numpy
codec, the replay buffer's checkpoint state, and the resume checkpoints' incremental frame chunks."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
import torch

from twm.agent import Agent
from twm.config_files import load_config
from twm.files import CheckpointWriteError
from twm.replay import ReplayBuffer
from twm.training import checkpoint as ckpt
from twm.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    IncompatibleCheckpointError,
    agent_from_checkpoint,
    atomic_torch_save,
    from_storable,
    load_checkpoint,
    save_checkpoint,
    to_storable,
)


@pytest.fixture(scope="module")
def agent() -> Agent:
    torch.manual_seed(0)
    return Agent(load_config("smoke", ["env.game=catch"]), 3)


def filled_buffer(steps: int, capacity: int = 400, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity, seed=seed)
    add_steps(buf, steps, rng)
    return buf


def add_steps(buf: ReplayBuffer, steps: int, rng: np.random.Generator) -> None:
    for _ in range(steps):
        frame = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
        buf.add(frame, int(rng.integers(3)), float(rng.normal()), bool(rng.random() < 0.05), False)


def assert_same_buffer(a: ReplayBuffer, b: ReplayBuffer) -> None:
    assert (a.size, a.capacity, a.frame_stack) == (b.size, b.capacity, b.frame_stack)
    for name in ("frames", "actions", "rewards", "terminated", "truncated", "episode_start", "visits"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # Same generator state: the next draws agree.
    np.testing.assert_array_equal(a.draw_starts(8, 4), b.draw_starts(8, 4))


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


# --------------------------------------------------------------------------------------- single files


def test_checkpoint_round_trip_and_the_file_stays_a_torch_file(tmp_path: Path, agent: Agent) -> None:
    path = save_checkpoint(tmp_path / "a.pt", agent, {"interactions": 7})
    state = load_checkpoint(path, require_checksum=True)
    assert state["interactions"] == 7 and state["format_version"] == ckpt.FORMAT_VERSION
    copy = agent_from_checkpoint(state)
    assert all(torch.equal(p, q) for p, q in zip(agent.parameters(), copy.parameters(), strict=True))
    # The trailer comes after the zip archive, which torch.load ignores: plain torch.load still works.
    assert path.read_bytes()[-ckpt._TRAILER.size :].startswith(ckpt.CHECKSUM_MAGIC)
    assert torch.load(path, weights_only=True)["interactions"] == 7
    assert temporaries(tmp_path) == []


def test_a_truncated_checkpoint_is_detected_at_any_byte(tmp_path: Path, agent: Agent) -> None:
    path = save_checkpoint(tmp_path / "a.pt", agent, {"interactions": 7})
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    cuts = [0, 1, len(data) - 1, len(data) - ckpt._TRAILER.size, *rng.integers(1, len(data), size=12)]
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|cannot read|corrupt") as exc:
            load_checkpoint(path, require_checksum=True)
        assert "\n" not in str(exc.value)


def test_a_flipped_byte_is_a_checksum_mismatch(tmp_path: Path, agent: Agent) -> None:
    path = save_checkpoint(tmp_path / "a.pt", agent)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a tensor: torch alone would load it silently
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_format_version_is_incompatible(tmp_path: Path, agent: Agent) -> None:
    path = save_checkpoint(tmp_path / "a.pt", agent)
    state = load_checkpoint(path)
    state["format_version"] = 99
    atomic_torch_save(state, path)
    with pytest.raises(IncompatibleCheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_no_space_left_keeps_the_previous_file_and_removes_the_temporary(
    tmp_path: Path, agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "a.pt", agent, {"interactions": 1})
    before = path.read_bytes()

    def full_disk(obj: Any, f: IO[bytes]) -> None:
        f.write(b"x" * 1000)  # part of the payload made it to disk, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "_write_payload", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as exc:
        save_checkpoint(path, agent, {"interactions": 2})
    assert exc.value.errno == errno.ENOSPC and "\n" not in str(exc.value)
    assert path.read_bytes() == before and temporaries(tmp_path) == []
    monkeypatch.undo()
    assert load_checkpoint(path)["interactions"] == 1


def test_numpy_values_round_trip_through_a_weights_only_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    value = {
        "u8": rng.integers(0, 256, size=(2, 3), dtype=np.uint8),
        "u32": rng.integers(0, 2**32, size=5, dtype=np.uint32),
        "f64": rng.normal(size=4),
        "bool": np.array([True, False]),
        "scalar": np.int64(5),
        "numpy_global": np.random.get_state(),
        "pcg": rng.bit_generator.state,
        "nested": [(1, 2.5, None, b"bytes", "text")],
    }
    atomic_torch_save(to_storable(value), tmp_path / "v.pt")
    back = from_storable(torch.load(tmp_path / "v.pt", weights_only=True))
    for key in ("u8", "u32", "f64", "bool"):
        assert back[key].dtype == value[key].dtype
        np.testing.assert_array_equal(back[key], value[key])
    assert back["scalar"] == 5 and back["pcg"] == value["pcg"] and back["nested"] == value["nested"]
    np.random.set_state(back["numpy_global"])
    assert np.array_equal(back["numpy_global"][1], value["numpy_global"][1])


# --------------------------------------------------------------------------------------- replay state


def test_replay_checkpoint_state_rebuilds_the_buffer_from_blocks_and_a_tail() -> None:
    buf = filled_buffer(250)
    buf.draw_starts(16, 4)  # some visits and generator use
    state = buf.checkpoint_state(frames_from=200)
    assert state["tail_frames"].shape == (50, 64, 64)
    blocks = [(0, buf.frames[:120]), (120, buf.frames[120:200])]
    loaded = ReplayBuffer.from_checkpoint_state(state, blocks)
    assert_same_buffer(loaded, buf)
    # Both keep filling the same way afterwards.
    for target in (buf, loaded):
        add_steps(target, 30, np.random.default_rng(5))
    assert_same_buffer(loaded, buf)
    with pytest.raises(ValueError, match="cover"):
        ReplayBuffer.from_checkpoint_state(state, blocks[:1])
    with pytest.raises(ValueError, match="does not continue"):
        ReplayBuffer.from_checkpoint_state(state, blocks[1:])


# --------------------------------------------------------------------------------------- resume checkpoints


def test_only_new_chunks_are_written_and_old_checkpoints_are_pruned(tmp_path: Path, agent: Agent) -> None:
    buf = filled_buffer(150)
    manager = CheckpointManager(tmp_path, chunk=64)
    first = manager.save(agent, buf, 150, {"interactions": 150})
    chunk_files = sorted(manager.replay_dir.glob("frames_*.npy"))
    assert [p.name for p in chunk_files] == ["frames_000000000.npy", "frames_000000064.npy"]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunk_files}

    add_steps(buf, 150, np.random.default_rng(1))
    buf.draw_starts(16, 4)
    manager.save(agent, buf, 300, {"interactions": 300})
    newest = manager.save(agent, buf, 300, {"interactions": 300})
    # Frames never change: the earlier chunks were not rewritten, two new ones were appended.
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in chunk_files} == stamps
    assert len(list(manager.replay_dir.glob("frames_*.npy"))) == 4
    # Only the newest KEEP checkpoints stay, the pointer names the newest, nothing temporary is left.
    assert not first.exists() and len(manager.checkpoint_files()) == ckpt.KEEP
    assert manager.checkpoint_files()[0] == newest
    assert (manager.dir / ckpt.LATEST_POINTER).read_text().strip() == newest.name
    assert temporaries(tmp_path) == []

    state, loaded, path = CheckpointManager(tmp_path).load_latest()
    assert path == newest and state["interactions"] == 300 and state["checkpoint_index"] == 3
    assert_same_buffer(loaded, buf)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, agent: Agent) -> None:
    buf = filled_buffer(100)
    manager = CheckpointManager(tmp_path, chunk=64)
    previous = manager.save(agent, buf, 100, {"interactions": 100})
    add_steps(buf, 50, np.random.default_rng(1))
    newest = manager.save(agent, buf, 150, {"interactions": 150})
    data = newest.read_bytes()
    newest.write_bytes(data[: int(np.random.default_rng(3).integers(1, len(data)))])
    # A temporary file left by a killed writer is neither a checkpoint nor in the way.
    stale = manager.dir / ".step_000000200_00003.pt.tmp-12345"
    stale.write_bytes(b"partial")
    manager.remove_stale_temporaries()
    assert not stale.exists()

    warnings: list[str] = []
    fresh = CheckpointManager(tmp_path)
    state, loaded, path = fresh.load_latest(warn=warnings.append)
    assert path == previous and state["interactions"] == 100 and loaded.size == 100
    assert len(warnings) == 1 and newest.name in warnings[0] and "trying the previous one" in warnings[0]
    assert not newest.exists() and newest.with_name(newest.name + ".corrupt").exists()
    # The next checkpoint continues the numbering after the one that was loaded.
    assert fresh.save(agent, loaded, 100, {"interactions": 100}).name == "step_000000100_00002.pt"


def test_corrupt_frame_chunks_make_every_checkpoint_unusable(tmp_path: Path, agent: Agent) -> None:
    buf = filled_buffer(150)
    manager = CheckpointManager(tmp_path, chunk=64)
    manager.save(agent, buf, 150, {"interactions": 150})
    manager.save(agent, buf, 150, {"interactions": 150})
    chunk = manager.replay_dir / "frames_000000064.npy"
    data = bytearray(chunk.read_bytes())
    data[-10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    warnings: list[str] = []
    with pytest.raises(CheckpointError, match="no usable checkpoint.*restore the replay chunk .*frames_000000064.npy"):
        CheckpointManager(tmp_path).load_latest(warn=warnings.append)
    assert len(warnings) == 2 and all("damaged" in w and "the checkpoint is kept" in w for w in warnings)
    # The chunk is at fault, not the checkpoints: they stay, and work again once the chunk is restored.
    assert len(manager.checkpoint_files()) == 2 and not list(tmp_path.rglob("*.corrupt"))
    data[-10] ^= 0xFF
    chunk.write_bytes(bytes(data))
    CheckpointManager(tmp_path).load_latest()


def test_an_incompatible_resume_format_is_refused_without_fallback(tmp_path: Path, agent: Agent) -> None:
    buf = filled_buffer(100)
    manager = CheckpointManager(tmp_path, chunk=64)
    manager.save(agent, buf, 100, {"interactions": 100})
    newest = manager.save(agent, buf, 100, {"interactions": 100})
    state = load_checkpoint(newest)
    state["resume_format"] = 99
    atomic_torch_save(state, newest)
    with pytest.raises(IncompatibleCheckpointError, match="resume format 99"):
        CheckpointManager(tmp_path).load_latest()
    assert newest.exists()  # not corrupt: left alone


def test_no_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        CheckpointManager(tmp_path).load_latest()


class _Game:
    """A game object as an older twm put it into resume checkpoints (pickled as itself)."""

    def __init__(self) -> None:
        self.t = 3


def test_a_pickled_object_is_incompatible_and_left_alone(tmp_path: Path, agent: Agent) -> None:
    # Written by an older twm: intact (the checksum verifies), but weights_only refuses the object.
    # It must not be taken for corruption and moved aside (that lost every MinAtar checkpoint of a run).
    buf = filled_buffer(100)
    manager = CheckpointManager(tmp_path, chunk=64)
    previous = manager.save(agent, buf, 100, {"interactions": 100})
    newest = manager.save(agent, buf, 100, {"interactions": 100})
    for path in (previous, newest):
        state = load_checkpoint(path)
        state["resume"] = {"env": _Game()}
        atomic_torch_save(state, path)
    with pytest.raises(IncompatibleCheckpointError, match=r"holds a pickled .*_Game.*cannot be resumed"):
        CheckpointManager(tmp_path).load_latest()
    assert newest.exists() and previous.exists()
    assert not list(manager.dir.glob("*.corrupt"))


@pytest.mark.parametrize("value", [_Game(), {"env": [1, {"deep": _Game()}]}, (np.random.default_rng(0),)])
def test_to_storable_refuses_objects_when_the_checkpoint_is_written(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot go into a resume checkpoint"):
        to_storable(value)
