"""Checkpoints: one ``.pt`` file with everything needed to rebuild (and later resume) an agent.

A checkpoint is a plain dict saved with ``torch.save``:

- ``format_version``, ``twm_version``: what wrote it;
- ``config``: ``Config.to_dict()`` of the run, ``num_actions``: the action count of the game;
- ``model``: ``agent.state_dict()``, ``optimizers``: ``agent.optimizer_state_dict()``;
- any ``extra`` entries the caller adds (step counters, RNG states, ...).

Only plain containers, numbers, strings and tensors go in, so ``load_checkpoint`` can use
``torch.load(weights_only=True)`` and never unpickles arbitrary objects. The resume feature (a later
issue) will add its own ``extra`` keys (generator states, the replay buffer path) without changing
this format.

Writes are atomic: the file is written next to its destination, fsynced and moved over it with
``os.replace``, so a crash or Ctrl-C mid-save leaves either the old checkpoint or the new one, never
a torn file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from twm import __version__

if TYPE_CHECKING:
    from twm.agent import Agent
    from twm.config import Config

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
FINAL_CHECKPOINT = "final.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; phrased as a one-line message."""


def save_checkpoint(path: str | Path, agent: Agent, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``agent`` (weights, optimiser states, config) plus ``extra`` to ``path`` atomically."""
    path = Path(path)
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "twm_version": __version__,
        "config": agent.cfg.to_dict(),
        "num_actions": int(agent.num_actions),
        "model": agent.state_dict(),
        "optimizers": agent.optimizer_state_dict(),
    }
    if extra:
        clash = set(extra) & set(state)
        if clash:
            raise ValueError(f"extra checkpoint keys {sorted(clash)} would overwrite reserved entries")
        state.update(extra)
    atomic_torch_save(state, path)
    return path


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the destination: os.replace is only atomic within one file system.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # Persist the rename itself (the directory entry); not every platform can open a directory.
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict ``save_checkpoint`` wrote; raises ``CheckpointError`` with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file; report them alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a twm checkpoint")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format version {version} (expected {FORMAT_VERSION})"
        )
    return state


def agent_from_checkpoint(
    state: Mapping[str, Any],
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
    *,
    optimizers: bool = True,
) -> Agent:
    """An ``Agent`` with the checkpoint's weights (and optimiser states if ``optimizers``) on ``device``.

    ``cfg`` defaults to the config stored in the checkpoint; pass the run folder's ``config.yaml``
    instead where that is the source of truth (they are the same for runs written by the trainer).
    """
    from twm.agent import Agent
    from twm.config import Config

    if cfg is None:
        cfg = Config.from_dict(state["config"])
    agent = Agent(cfg, int(state["num_actions"]))
    try:
        agent.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit the config: {first}") from None
    agent.to(device)
    if optimizers:
        # Loaded after .to(device) so that the moment tensors land on the parameters' device.
        agent.load_optimizer_state_dict(state["optimizers"])
    return agent
