"""A run's agent and replay buffer, loaded for ``twm dream`` and ``twm play``.

Its own module because both commands and the play recorder load runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from twm.agent import Agent
from twm.config import Config
from twm.replay import ReplayBuffer
from twm.viz.render import VizError


@dataclass
class LoadedRun:
    agent: Agent
    cfg: Config
    run_dir: Path | None
    checkpoint: Path
    state: dict[str, Any]


def load_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedRun:
    """The agent of a run folder (``config.yaml`` + ``checkpoints/final.pt``) in eval mode.

    ``checkpoint`` picks another checkpoint file; ``run_dir`` may itself be a checkpoint file. The
    run folder's ``config.yaml`` is used where there is one, else the config saved in the checkpoint.
    """
    from twm.run_dir import RunDir, RunDirError
    from twm.training.checkpoint import CheckpointError, agent_from_checkpoint, load_checkpoint

    path = Path(run_dir)
    folder: Path | None
    if path.is_file() and checkpoint is None:
        folder, ckpt = None, path
    elif path.is_dir():
        folder = path
        try:
            ckpt = RunDir(path).require_final_checkpoint("pass --checkpoint FILE") if checkpoint is None else Path(checkpoint)
        except RunDirError as exc:
            raise VizError(str(exc)) from None
    else:
        raise VizError(f"run folder {path} does not exist")
    if not ckpt.is_file():
        raise VizError(f"checkpoint {ckpt} does not exist")
    config_path = None if folder is None else RunDir(folder).config
    cfg = Config.from_yaml(config_path) if config_path is not None and config_path.is_file() else None
    try:
        state = load_checkpoint(ckpt, device)
        agent = agent_from_checkpoint(state, device, cfg)
    except CheckpointError as exc:
        raise VizError(str(exc)) from None
    agent.eval()
    return LoadedRun(agent=agent, cfg=agent.cfg, run_dir=folder, checkpoint=ckpt, state=state)


def load_replay(run: LoadedRun) -> tuple[ReplayBuffer | None, str]:
    """The run's replay buffer, from the checkpoint if it holds one, else from the newest resume
    checkpoint of the run folder (``checkpoints/step_*.pt``); (None, why not) when there is none."""
    from twm.training import checkpoint as ck

    manager_cls = getattr(ck, "CheckpointManager", None)
    if manager_cls is None:
        return None, "this twm version keeps no replay buffer in its checkpoints"
    # Resume checkpoints live in RUN_DIR/checkpoints/, next to their replay/ frame chunks.
    candidates: list[tuple[Path, dict[str, Any] | None]]  # (checkpoint, its state if loaded)
    if "replay" in run.state:
        candidates = [(run.checkpoint, run.state)]
        run_dir = run.checkpoint.parent.parent
    elif run.run_dir is not None:
        candidates = [(p, None) for p in manager_cls(run.run_dir).checkpoint_files()]
        run_dir = run.run_dir
    else:
        return None, f"{run.checkpoint} holds no replay buffer"
    reasons = []
    for path, state in candidates:
        try:
            if state is None:
                state = ck.load_checkpoint(path, "cpu")
            if "replay" not in state:
                reasons.append(f"{path.name} holds no replay buffer")
                continue
            # load_replay only reads (the frame chunks, verified by their checksums).
            replay = manager_cls(run_dir).load_replay(state)
            return replay, f"the replay buffer of {path.name}"
        except (ck.CheckpointError, OSError, ValueError, KeyError) as exc:
            reasons.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return None, "; ".join(reasons) or "the run folder has no resume checkpoint (checkpoints/step_*.pt)"
