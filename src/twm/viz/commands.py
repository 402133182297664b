"""What ``twm dream`` and ``twm play`` do, callable from Python; the CLI only parses arguments.

Every problem the user can fix (no run folder, no checkpoint, a bad suffix, MP4 without ffmpeg, a
window without pygame) raises ``VizError`` with a one-line message, checked before any slow work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from twm.envs import action_meanings_of
from twm.viz.attention import attention_heatmap
from twm.viz.dream import (
    RealContext,
    context_from_env,
    context_from_replay,
    dream,
)
from twm.viz.loading import LoadedRun, load_replay, load_run
from twm.viz.play import import_pygame, parse_actions, play_window, record_play
from twm.viz.render import VizError, check_animation_path, write_animation


def real_starts(
    run: LoadedRun, source: str, starts: int, warmup: int, seed: int, generator: torch.Generator
) -> tuple[RealContext, str]:
    """Real starts from the replay buffer (``source`` replay, or auto when there is one) or the env."""
    if source not in ("auto", "env", "replay"):
        raise VizError(f"--source must be auto, env or replay; got {source!r}")
    if source != "env":
        replay, origin = load_replay(run)
        if replay is not None and len(replay) >= 2:
            cpu = torch.Generator().manual_seed(seed)
            return context_from_replay(replay, starts, warmup, cpu), origin
        if source == "replay":
            raise VizError(f"--source replay: no usable replay buffer ({origin}); use --source env")
    return context_from_env(run.agent, run.cfg.env, starts, warmup, seed, generator), "the real game"


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise VizError(f"{name} must be positive; got {value}")


def run_dream(
    run_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    horizon: int = 30,
    starts: int = 4,
    seed: int = 0,
    fps: float = 8.0,
    warmup: int = 16,
    scale: int = 3,
    source: str = "auto",
    attention: str | Path | None = None,
    attention_step: int = -1,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """``twm dream``: K starts side by side dreaming ``horizon`` steps; returns what was written.

    The animation has horizon + 1 frames (the start latent, then one per step), each
    ``starts * 64 * scale`` px wide. ``attention`` also writes the heat map of start 0 at
    ``attention_step`` (default: the last step).
    """
    out = check_animation_path(out)
    if attention is not None and Path(attention).suffix.lower() != ".png":
        raise VizError(f"--attention {attention}: the file name must end in .png")
    for name, value in (
        ("--horizon", horizon),
        ("--starts", starts),
        ("--fps", fps),
        ("--warmup", warmup),
        ("--scale", scale),
    ):
        _positive(name, value)
    if not -horizon <= attention_step < horizon:
        raise VizError(
            f"--attention-step must be in [0, {horizon}) (or negative from the end); got {attention_step}"
        )
    run = load_run(run_dir, checkpoint, device)
    generator = torch.Generator(device=run.agent.device).manual_seed(seed)
    context, origin = real_starts(run, source, starts, warmup, seed, generator)
    meanings = action_meanings_of(run.cfg.env)
    result = dream(run.agent, context, horizon, generator, meanings, record_attention=attention is not None)
    frames = result.animation_frames(scale)
    write_animation(out, frames, fps)
    summary: dict[str, Any] = {
        "out": out,
        "frames": len(frames),
        "size": (frames[0].shape[1], frames[0].shape[0]),
        "starts_from": origin,
        "dream": result,
    }
    if attention is not None:
        path = Path(attention)
        path.parent.mkdir(parents=True, exist_ok=True)
        attention_heatmap(result, 0, attention_step).save(path)
        summary["attention"] = path
        summary["attention_step"] = attention_step % horizon
    return summary


def run_play(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    warmup: int = 8,
    fps: float = 10.0,
    scale: int | None = None,
    record: str | Path | None = None,
    actions: str | None = None,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
) -> dict[str, Any]:
    """``twm play``: the window (pygame), or with ``record`` the scripted ``actions`` to a file."""
    if (record is None) != (actions is None):
        raise VizError("--record FILE and --actions SPEC go together (they play without a window)")
    if record is not None:
        record = check_animation_path(record)
    else:
        import_pygame()  # fail before loading anything
    for name, value in (("--fps", fps), ("--warmup", warmup), ("--scale", scale or 1)):
        _positive(name, value)
    run = load_run(run_dir, checkpoint, device)
    meanings = action_meanings_of(run.cfg.env)
    generator = torch.Generator(device=run.agent.device).manual_seed(seed)

    def new_context(restart: int) -> RealContext:
        return context_from_env(run.agent, run.cfg.env, 1, warmup, seed + restart, generator)

    if record is not None:
        assert actions is not None
        scripted = parse_actions(actions, meanings, seed)
        played = record_play(
            run.agent, meanings, new_context, scripted, generator, record, fps=fps, scale=scale or 4
        )
        return {"out": record, "frames": len(played.frames), "score": played.score, "record": played}
    played = play_window(
        run.agent, run.cfg, meanings, new_context, generator, fps=fps, scale=scale or 6, max_steps=max_steps
    )
    return {"steps": len(played.actions), "score": played.score, "record": played}
