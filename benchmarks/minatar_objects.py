"""Which of a MinAtar game's objects a run's latent keeps, and (Space Invaders) how its games end.

    python benchmarks/minatar_objects.py runs/si-s0                       # 10 eval games
    python benchmarks/minatar_objects.py runs/si-s0 --episodes 30 --json

Loads a run folder's final checkpoint (or ``--checkpoint FILE``) and plays eval games with its policy (sampled actions, the
run's final-evaluation seed plus the game's index, sticky actions as in training). At every step it
encodes the observation to the latent the policy reads (the encoder's one-hot argmax), decodes it,
and reads each object's cells in the newest decoded frame against the game's true state, one line
per kind of object (the state's channels: Space Invaders' ``cannon``, ``alien``, ``alien_left``,
``alien_right``, ``friendly_bullet``, ``enemy_bullet``):

- ``cells``: how many of that object's cells the games showed (an object drawn over by a later
  channel in the picture is counted for the later one only);
- ``shown``: the share of them the decoded frame shows. In a picture a cell's 6x6 block is shown
  when its mean decoded value is nearer the object's gray (or colour) than the background's, along
  the line between them; in a grid when the decoder gives the cell's channel a probability above 1/2;
- ``false``: grids only, the share of cells without the object that the decoder sets.

A latent that drops a kind of object leaves the policy (which reads the latent alone) and the
world model's imagination blind to it. On Space Invaders it also counts how games ended: by an
alien's bullet reaching the cannon or by the aliens reaching the bottom row.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch

from twm.envs import make_env
from twm.envs.minatar import BACKGROUND_GRAY, BACKGROUND_RGB, BORDER, CELL, COLORS, GRAY_LEVELS
from twm.imagination import observe_latent
from twm.seeding import final_eval_seed, torch_generator
from twm.viz.loading import load_run
from twm.viz.render import VizError


def object_visibility(
    decoded: np.ndarray, state: np.ndarray, grid: bool, color: bool
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per state channel k: (shown, false) booleans of its cells in one decoded newest frame.

    decoded: a picture (64, 64) or (3, 64, 64) in [0, 255], or a grid's (C, 10, 10) probabilities;
    state: the game's (10, 10, C) booleans. ``shown`` holds one entry per cell where channel k is
    the drawn (last set) channel; ``false`` (grids) one per cell where k is not set.
    """
    channels = state.shape[2]
    top = np.full(state.shape[:2], -1)
    for k in range(channels):
        top[state[..., k]] = k
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in range(channels):
        if grid:
            out[k] = (decoded[k][state[..., k]] > 0.5, decoded[k][~state[..., k]] > 0.5)
            continue
        rows, cols = np.nonzero(top == k)
        object_ = np.array(COLORS[k] if color else [GRAY_LEVELS[k]], dtype=np.float64)
        background = np.array(BACKGROUND_RGB if color else [BACKGROUND_GRAY], dtype=np.float64)
        pixels = decoded if color else decoded[None]  # (3 or 1, 64, 64)
        shown = []
        for i, j in zip(rows, cols, strict=True):
            y, x = BORDER + CELL * i, BORDER + CELL * j
            block = pixels[:, y : y + CELL, x : x + CELL].reshape(pixels.shape[0], -1).mean(axis=1)
            # Where the block's mean lies on the line from the background (0) to the object (1).
            direction = object_ - background
            along = float((block - background) @ direction / (direction @ direction))
            shown.append(along > 0.5)
        out[k] = (np.array(shown, dtype=bool), np.zeros(0, dtype=bool))
    return out


def space_invaders_end(game: Any) -> str:
    """How a Space Invaders game that just ended ended (the minatar game object after the last step)."""
    if game.e_bullet_map[9, game.pos]:
        return "enemy_bullet"
    if game.alien_map[9].any():
        return "aliens_at_bottom"
    return "other"


def measure(run_dir: str, episodes: int, max_steps: int, checkpoint: str | None = None) -> dict[str, Any]:
    run = load_run(run_dir, checkpoint)
    agent, cfg = run.agent, run.cfg
    if not cfg.env.game.startswith("minatar/"):
        raise VizError(f"{cfg.env.game} is not a MinAtar game; this reads MinAtar's object channels")
    grid, color = cfg.env.observation == "grid", bool(cfg.env.color)
    c = cfg.frame_channels
    obs_model = agent.world_model.obs_model
    obs_model.eval()
    seed = final_eval_seed(cfg.train.seed)
    generator = torch_generator(seed, agent.device)
    shown: dict[int, list[np.ndarray]] = {}
    false: dict[int, list[np.ndarray]] = {}
    scores, lengths, ends = [], [], []
    names: list[str] = []
    for episode in range(episodes):
        env = make_env(cfg.env, "eval", seed + episode)
        game_env = env.source._env  # type: ignore[attr-defined]  # minatar.Environment
        channel_names = getattr(game_env.env, "channels", {})
        names = [name for name, _ in sorted(channel_names.items(), key=lambda kv: kv[1])]
        memory = agent.acting_memory(1)
        obs, _ = env.reset()
        score, steps = 0.0, 0
        while True:
            with torch.no_grad():
                frames = torch.as_tensor(np.asarray(obs))[None]
                decoded = obs_model.decode(observe_latent(obs_model, frames))[0, -c:].numpy()
            decoded = decoded if grid else decoded * 255.0
            for k, (s, f) in object_visibility(
                decoded if (grid or color) else decoded[0], game_env.state().astype(bool), grid, color
            ).items():
                shown.setdefault(k, []).append(s)
                false.setdefault(k, []).append(f)
            action = int(np.asarray(agent.act(np.asarray(obs)[None], generator, memory))[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            if memory is not None:
                memory.record([float(reward)], [bool(terminated or truncated)])
            score, steps = score + float(reward), steps + 1
            if terminated or truncated or steps >= max_steps:
                break
        scores.append(score)
        lengths.append(steps)
        if cfg.env.game == "minatar/space_invaders":
            ends.append(space_invaders_end(game_env.env) if terminated else "not_ended")
        env.close()
    objects = {}
    for k in sorted(shown):
        s, f = np.concatenate(shown[k]), np.concatenate(false[k])
        objects[names[k] if k < len(names) else str(k)] = {
            "cells": int(s.size),
            "shown": float(s.mean()) if s.size else float("nan"),
            **({"false": float(f.mean()) if f.size else float("nan")} if grid else {}),
        }
    result: dict[str, Any] = {
        "checkpoint": str(run.checkpoint),
        "interactions": int(run.state.get("interactions", -1)),
        "episodes": episodes,
        "mean_score": float(np.mean(scores)),
        "mean_length": float(np.mean(lengths)),
        "objects": objects,
    }
    if ends:
        result["ends"] = {kind: ends.count(kind) for kind in sorted(set(ends))}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint file instead of the final one")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=10_000, help="cut a game after this many steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        result = measure(args.run_dir, args.episodes, args.max_steps, args.checkpoint)
    except VizError as exc:
        print(f"minatar_objects: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.run_dir} ({result['checkpoint']}): {episodes_line(result)}")
    grid = any("false" in o for o in result["objects"].values())
    print(f"{'object':18s} {'cells':>7s} {'shown':>6s}" + (f" {'false':>7s}" if grid else ""))
    for name, o in result["objects"].items():
        extra = f" {o['false']:7.4f}" if "false" in o else ""
        print(f"{name:18s} {o['cells']:7d} {o['shown']:6.2f}{extra}")
    return 0


def episodes_line(result: dict[str, Any]) -> str:
    line = f"{result['episodes']} games, mean score {result['mean_score']:.2f}, mean length {result['mean_length']:.0f} steps"
    if "ends" in result:
        line += ", ends: " + ", ".join(f"{kind} {count}" for kind, count in result["ends"].items())
    return line


if __name__ == "__main__":
    sys.exit(main())
