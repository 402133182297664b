"""Checkpoints: the final agent, and the periodic resume checkpoints of a run.

Agent checkpoints (``save_checkpoint`` / ``load_checkpoint``, e.g. ``checkpoints/final.pt``)
    A plain dict saved with ``torch.save``:

    - ``format_version``, ``twm_version``: what wrote it;
    - ``config``: ``Config.to_dict()`` of the run, ``num_actions``: the action count of the game;
    - ``model``: ``agent.state_dict()``, ``optimizers``: ``Optimizers.state_dict()`` (``twm.update``);
    - any ``extra`` entries the caller adds (step counters, the resume state, ...).

    Only plain containers, numbers, strings, bytes and tensors go in (numpy arrays are wrapped by
    ``to_storable``), so ``load_checkpoint`` can use ``torch.load(weights_only=True)`` and never
    unpickles arbitrary objects.

Integrity
    Writes are atomic: the file is written next to its destination under a temporary name
    (``.NAME.tmp-PID``, which never matches a checkpoint name), fsynced, and moved over the destination
    with ``os.replace``; the folder is fsynced too. A crash, SIGKILL or full disk mid-save leaves the old
    file or the new one, never a torn one (a failed write removes its temporary file; one left by
    SIGKILL is ignored and removed by the next resume; ``twm.files``). Every file also ends with a
    48-byte trailer, ``CHECKSUM_MAGIC``, the payload length and its SHA-256: torch itself checks no
    checksum (a flipped byte in a tensor loads silently) and ``torch.load`` ignores bytes after the zip
    archive, so the file stays a normal torch file. ``load_checkpoint`` verifies the trailer when there is one.

Resume checkpoints (``CheckpointManager``), in ``RUN_DIR/checkpoints/``
    - ``step_<interactions>_<index>.pt``: an agent checkpoint plus everything else needed to continue
      (counters, random generators, environment state, logging position, the replay buffer's small
      arrays); ``index`` counts the run's checkpoints, since several can share an interaction count
      (pretraining happens at one). The newest ``KEEP`` are kept; an older one is only deleted once a
      newer one is complete.
    - ``latest``: the name of the newest checkpoint (for people and scripts; resuming scans the files
      and takes the newest one that verifies, so a stale pointer is harmless).
    - ``replay/frames_<first step>.npy``: the replay frames in append-only chunks of
      ``replay.CHECKPOINT_CHUNK`` steps. Frames never change once added, so each checkpoint only writes
      the chunks completed since the last one; the checkpoint lists the chunks it uses with their
      SHA-256 and carries the frames of the last, partial chunk itself. At 100k steps this makes a
      checkpoint ~50x faster than rewriting the 410 MB of frames (``benchmarks/speed/bench_checkpoint.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

from twm.files import atomic_write
from twm.replay import CHECKPOINT_CHUNK, ReplayBuffer
from twm.run_dir import CHECKPOINT_DIR, LATEST_POINTER, RESUME_CHECKPOINT
from twm.version import __version__

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import Config
    from twm.update import Optimizers

FORMAT_VERSION = 1
# Version of the resume state inside a resume checkpoint (the "resume" entry); bumped whenever a
# change would make an older checkpoint continue differently, so it is refused instead.
RESUME_FORMAT_VERSION = 1
REPLAY_DIR = "replay"
KEEP = 2  # resume checkpoints kept: the newest, and the one before it as a fallback

CHECKSUM_MAGIC = b"TWMSHA01"
_TRAILER = struct.Struct("<8sQ32s")  # magic, payload length, sha256 of the payload
_NDARRAY = "__ndarray__"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; phrased as a one-line message."""


class IncompatibleCheckpointError(CheckpointError):
    """A readable checkpoint written by an incompatible twm version (an older one would not help)."""


class ReplayChunkError(CheckpointError):
    """A replay chunk a checkpoint needs is missing, unreadable or damaged: the chunk's fault, not
    the checkpoint's (checkpoints that refer to it are left in place; restoring the chunk fixes them)."""

    def __init__(self, message: str, chunk: Path) -> None:
        super().__init__(message)
        self.chunk = chunk


# --------------------------------------------------------------------------------------- writing


def _write_payload(obj: Any, f: IO[bytes]) -> None:
    """The serialisation step of every checkpoint write (a seam for tests that simulate a full disk)."""
    torch.save(obj, f)


def _append_checksum(f: IO[bytes]) -> None:
    """Append the trailer (module docstring) to the payload written so far."""
    length = f.tell()
    f.flush()
    f.seek(0)
    digest = hashlib.sha256()
    # Hash what is in the file (read back from the page cache), not what we meant to write.
    for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
    f.seek(length)
    f.write(_TRAILER.pack(CHECKSUM_MAGIC, length, digest.digest()))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``atomic_write``, with the checksum trailer."""
    atomic_write(path, lambda f: _write_payload(obj, f), finish=_append_checksum)


def save_checkpoint(
    path: str | Path, agent: Agent, extra: Mapping[str, Any] | None = None, *, optimizers: Optimizers | None = None
) -> Path:
    """Write ``agent`` (weights, optimiser states, config) plus ``extra`` to ``path`` atomically.

    ``optimizers`` are the agent's (``Learner.optimizers``); without them, those of an agent that
    never updated: fresh ones.
    """
    from twm.update import Optimizers

    path = Path(path)
    if optimizers is None:
        optimizers = Optimizers(agent)
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "twm_version": __version__,
        "config": agent.cfg.to_dict(),
        "num_actions": int(agent.num_actions),
        "model": agent.state_dict(),
        "optimizers": optimizers.state_dict(),
    }
    if extra:
        clash = set(extra) & set(state)
        if clash:
            raise ValueError(f"extra checkpoint keys {sorted(clash)} would overwrite reserved entries")
        state.update(extra)
    atomic_torch_save(state, path)
    return path


# --------------------------------------------------------------------------------------- reading


def _verified_payload(path: Path, data: bytes, require_checksum: bool) -> bytes:
    """The payload of a checkpoint file's bytes, after checking its trailer."""
    if len(data) >= _TRAILER.size:
        magic, length, digest = _TRAILER.unpack(data[-_TRAILER.size :])
        if magic == CHECKSUM_MAGIC:
            if length != len(data) - _TRAILER.size:
                raise CheckpointError(f"checkpoint {path} is corrupt (length does not match its trailer)")
            payload = data[:length]
            if hashlib.sha256(payload).digest() != digest:
                raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch)")
            return payload
    if require_checksum:
        # Every write appends the trailer last, so its absence means the file was cut short.
        raise CheckpointError(f"checkpoint {path} is truncated or incomplete (no checksum trailer)")
    return data  # a file written before checksums existed


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, require_checksum: bool = False
) -> dict[str, Any]:
    """The dict ``save_checkpoint`` wrote; raises ``CheckpointError`` with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    payload = _verified_payload(path, data, require_checksum)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file; report them alike
        # Except an intact file holding a pickled object (how twm saved MinAtar, Crafter and gym games
        # before 2026-12-03): not corruption, so it must not be moved aside as corrupt.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and refused is not None:
            raise IncompatibleCheckpointError(
                f"{path} holds a pickled {refused.group(1)}, which twm does not load from a checkpoint "
                "(an older twm saved games that way; this checkpoint cannot be resumed)"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a twm checkpoint")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{path} has checkpoint format version {version} (written by twm "
            f"{state.get('twm_version', '?')}); this twm {__version__} reads version {FORMAT_VERSION}"
        )
    return state


def agent_from_checkpoint(
    state: Mapping[str, Any],
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
) -> Agent:
    """An ``Agent`` with the checkpoint's weights on ``device`` (``load_agent_state`` loads optimisers).

    ``cfg`` defaults to the config stored in the checkpoint; pass the run folder's ``config.yaml``
    instead where that is the source of truth (they are the same for runs written by the trainer).
    """
    from twm.agent import Agent
    from twm.config import Config

    if cfg is None:
        cfg = Config.from_dict(state["config"])
    agent = Agent(cfg, int(state["num_actions"]))
    load_agent_state(agent, state, device)
    return agent


def load_agent_state(
    agent: Agent, state: Mapping[str, Any], device: str | torch.device, *, optimizers: Optimizers | None = None
) -> None:
    """Load a checkpoint's weights into an existing agent, moved to ``device``, and its optimiser
    states into the agent's ``optimizers`` if given."""
    try:
        agent.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit the config: {first}") from None
    agent.to(device)
    if optimizers is not None:
        # Loaded after .to(device) so that the moment tensors land on the parameters' device.
        optimizers.load_state_dict(state["optimizers"])


# --------------------------------------------------------------------------------------- numpy codec


def to_storable(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars replaced by what ``torch.load(weights_only=True)`` accepts;
    ``TypeError`` for any other object (see ``twm.envs.saved_state`` for how games are stored)."""
    if isinstance(obj, np.ndarray):
        array = np.array(obj, copy=True, order="C")
        try:
            return {_NDARRAY: torch.from_numpy(array)}
        except TypeError:  # a dtype this torch has no tensor type for (uint32 before torch 2.3)
            return {_NDARRAY: array.tobytes(), "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: to_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_storable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_storable(v) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor)):
        return obj
    # Anything else would be pickled as an object, and weights_only resume would refuse it: fail
    # when the checkpoint is written, not when a run that died is resumed.
    raise TypeError(f"a {type(obj).__module__}.{type(obj).__qualname__} cannot go into a resume checkpoint")


def from_storable(obj: Any) -> Any:
    """The inverse of ``to_storable`` (arrays come back as writable numpy arrays)."""
    if isinstance(obj, Mapping):
        if _NDARRAY in obj:
            value = obj[_NDARRAY]
            if isinstance(value, torch.Tensor):
                return value.cpu().numpy().copy()
            return np.frombuffer(value, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        return {k: from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_storable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_storable(v) for v in obj)
    return obj


# --------------------------------------------------------------------------------------- resume checkpoints


def _array_digest(array: np.ndarray) -> str:
    # ``.data`` is memoryview(array), typed (numpy types ndarray as a buffer from Python 3.12 only).
    return hashlib.sha256(np.ascontiguousarray(array).data.cast("B")).hexdigest()


class CheckpointManager:
    """Writes and finds the resume checkpoints of one run folder (layout: see the module docstring)."""

    def __init__(self, run_dir: str | Path, *, keep: int = KEEP, chunk: int | None = None) -> None:
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.replay_dir = self.dir / REPLAY_DIR
        self.keep = max(1, keep)
        # Looked up at call time, so tests can shrink the chunks of a whole run.
        self.chunk = chunk if chunk is not None else CHECKPOINT_CHUNK
        # Frame chunks on disk that this run wrote (or verified on resume): file, first, steps, sha256.
        self.chunks: list[dict[str, Any]] = []
        self.index = 0  # index of the newest checkpoint written or loaded
        self.last_path: Path | None = None
        self.last_interactions: int | None = None

    # ------------------------------------------------------------------ writing

    def save(
        self,
        agent: Agent,
        replay: ReplayBuffer,
        interactions: int,
        extra: Mapping[str, Any],
        *,
        optimizers: Optimizers | None = None,
    ) -> Path:
        """Write a resume checkpoint (new frame chunks first, then the file, then ``latest``, then prune).

        ``optimizers``: as for ``save_checkpoint``."""
        self._write_new_chunks(replay)
        chunked = len(self.chunks) * self.chunk
        replay_state = replay.checkpoint_state(frames_from=chunked)
        replay_state["chunks"] = [dict(c) for c in self.chunks]
        replay_state["chunk_steps"] = self.chunk
        index = self.index + 1
        path = self.dir / f"step_{interactions:09d}_{index:05d}.pt"
        payload = {
            **extra,
            "resume_format": RESUME_FORMAT_VERSION,
            "checkpoint_index": index,
            "replay": to_storable(replay_state),
        }
        save_checkpoint(path, agent, payload, optimizers=optimizers)
        self.index, self.last_path, self.last_interactions = index, path, interactions
        atomic_write(self.dir / LATEST_POINTER, lambda f: f.write(f"{path.name}\n".encode()))
        self._prune()
        return path

    def _write_new_chunks(self, replay: ReplayBuffer) -> None:
        """Append the chunks of frames completed since the last checkpoint (each written atomically)."""
        frames = replay.frames
        while (len(self.chunks) + 1) * self.chunk <= len(frames):
            first = len(self.chunks) * self.chunk
            block = frames[first : first + self.chunk]
            name = f"frames_{first:09d}.npy"

            def write_block(f: IO[bytes], block: np.ndarray = block) -> None:
                np.save(f, block)

            atomic_write(self.replay_dir / name, write_block)
            self.chunks.append(
                {"file": name, "first": first, "steps": self.chunk, "sha256": _array_digest(block)}
            )

    def _prune(self) -> None:
        for old in self.checkpoint_files()[self.keep :]:
            with contextlib.suppress(OSError):
                old.unlink()

    # ------------------------------------------------------------------ reading

    def checkpoint_files(self) -> list[Path]:
        """Resume checkpoints in the folder, newest (highest index) first; temporary files never match."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = RESUME_CHECKPOINT.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(2)), int(m.group(1)), p))
        return [p for _, _, p in sorted(found, reverse=True)]

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left by a process killed mid-write (only our own ``.*.tmp-*`` names)."""
        # eval/: the final.json of a run killed while writing it
        for folder in (self.dir, self.replay_dir, self.dir.parent / "eval"):
            if folder.is_dir():
                for p in folder.glob(".*.tmp-*"):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def load_latest(
        self, map_location: str | torch.device = "cpu", warn: Callable[[str], None] | None = None
    ) -> tuple[dict[str, Any], ReplayBuffer, Path]:
        """The newest resume checkpoint that verifies, with its replay buffer rebuilt.

        A corrupt or truncated checkpoint file is renamed to ``*.corrupt`` (kept for inspection, never
        picked again), reported through ``warn`` and the previous one is tried. A checkpoint whose
        replay chunks do not verify (each chunk carries its SHA-256 in the checkpoints that use it) is
        left in place -- the chunk is at fault, and restoring it makes the checkpoint usable again --
        and the previous one is tried; if none is usable, the ``CheckpointError`` names the chunks to
        restore. ``IncompatibleCheckpointError`` is raised at once: an older checkpoint of the same run
        would not be more compatible.
        """
        files = self.checkpoint_files()
        if not files:
            raise CheckpointError(f"no checkpoint to resume from in {self.dir}")
        reasons = []
        bad_chunks: list[Path] = []
        for i, path in enumerate(files):
            nxt = "trying the previous one" if i + 1 < len(files) else "no older checkpoint left"
            try:
                state = load_checkpoint(path, map_location, require_checksum=True)
                if state.get("resume_format") != RESUME_FORMAT_VERSION:
                    raise IncompatibleCheckpointError(
                        f"{path} has resume format {state.get('resume_format')} (written by twm "
                        f"{state.get('twm_version', '?')}); this twm {__version__} resumes format "
                        f"{RESUME_FORMAT_VERSION}"
                    )
                replay, chunks = self._load_replay(state)
            except IncompatibleCheckpointError:
                raise
            except ReplayChunkError as exc:
                reasons.append(f"{path.name} needs {exc}")
                if exc.chunk not in bad_chunks:
                    bad_chunks.append(exc.chunk)
                if warn is not None:
                    warn(f"{path.name} cannot be used: {exc} (the checkpoint is kept); {nxt}")
                continue
            except CheckpointError as exc:
                reasons.append(str(exc))
                corrupt = path.with_name(path.name + ".corrupt")
                with contextlib.suppress(OSError):
                    path.rename(corrupt)
                if warn is not None:
                    warn(f"{exc}; renamed the checkpoint to {corrupt.name}; {nxt}")
                continue
            self.chunks = chunks
            self.index = int(state["checkpoint_index"])
            self.last_path = path
            self.last_interactions = int(state["interactions"])
            return state, replay, path
        if bad_chunks:
            names = ", ".join(str(c) for c in bad_chunks)
            raise CheckpointError(
                f"no usable checkpoint in {self.dir}: restore the replay chunk{'s' * (len(bad_chunks) > 1)} "
                f"{names} (missing or damaged; the checkpoints are kept) and resume again"
            )
        raise CheckpointError(f"no usable checkpoint in {self.dir}: " + "; ".join(reasons))

    def load_replay(self, state: Mapping[str, Any]) -> ReplayBuffer:
        """The replay buffer of a loaded resume checkpoint of this folder (frame chunks verified);
        ``CheckpointError`` if a chunk is missing or corrupt. Reads only."""
        return self._load_replay(state)[0]

    def _load_replay(self, state: Mapping[str, Any]) -> tuple[ReplayBuffer, list[dict[str, Any]]]:
        replay_state = from_storable(state["replay"])
        chunks = list(replay_state.pop("chunks"))
        steps = int(replay_state.pop("chunk_steps"))
        if steps != self.chunk:
            self.chunk = steps  # keep appending in the layout the run started with

        def blocks() -> Any:
            for c in chunks:
                file = self.replay_dir / c["file"]
                try:
                    block = np.load(file, allow_pickle=False)
                except FileNotFoundError:
                    raise ReplayChunkError(f"replay chunk {file} is missing", file) from None
                except (OSError, ValueError, EOFError) as exc:
                    reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                    raise ReplayChunkError(f"replay chunk {file} is unreadable ({reason})", file) from None
                if len(block) != c["steps"] or _array_digest(block) != c["sha256"]:
                    raise ReplayChunkError(f"replay chunk {file} is damaged (checksum mismatch)", file)
                yield c["first"], block

        try:
            replay = ReplayBuffer.from_checkpoint_state(replay_state, blocks())
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"replay state in the checkpoint is invalid: {exc}") from None
        return replay, chunks
