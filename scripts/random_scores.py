"""Measure the random-policy score of each MinAtar game and of Crafter; write them as package data.

    python scripts/random_scores.py                 # all of them, writes src/twm/random_scores.json
    python scripts/random_scores.py --games minatar/breakout --episodes 100 --out /tmp/r.json

A uniformly random action every agent step, in the eval environment of the default configuration
(MinAtar: sticky actions 0.1, as training and evaluation use them; Crafter: 10,000-step episodes),
full episodes, each env seeded differently. For each game: mean, std, the standard error of the mean,
episodes and agent steps; for Crafter also the Crafter score and success rates of random play.
Episodes run until ``--episodes`` are done or ``--seconds`` are spent (at least ``--min-episodes``).
``twm report`` and ``twm games`` read the written file (twm.games.measured_random_scores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from twm.config_files import load_config
from twm.envs import make_env
from twm.envs.crafter import crafter_score, success_rates
from twm.games import CRAFTER_GAME, MINATAR_GAMES, MINATAR_PREFIX, RANDOM_SCORES_FILE


def measure(game: str, episodes: int, min_episodes: int, seconds: float, seed: int) -> dict:
    cfg = load_config("atari100k", [f"env.game={game}"])
    rng = np.random.default_rng(seed)
    scores: list[float] = []
    unlocked: list[list[str]] = []
    steps = 0
    start = time.time()
    while len(scores) < episodes and (len(scores) < min_episodes or time.time() - start < seconds):
        env = make_env(cfg.env, "eval", seed * 100_000 + len(scores))
        env.reset()
        while True:
            _, _, terminated, truncated, info = env.step(int(rng.integers(env.num_actions)))
            steps += 1
            if terminated or truncated:
                scores.append(float(info["game_score"]))
                if "achievements" in info:
                    unlocked.append(list(info["achievements"]))
                break
        env.close()
    arr = np.asarray(scores)
    out = {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "sem": float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0,
        "episodes": len(scores),
        "steps": steps,
        "seconds": round(time.time() - start, 1),
        "sticky_actions": cfg.env.sticky_actions if game.startswith(MINATAR_PREFIX) else None,
    }
    if unlocked:
        out["crafter_score"] = crafter_score(unlocked)
        out["success_rates"] = success_rates(unlocked)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_games = ",".join([*(MINATAR_PREFIX + g for g in MINATAR_GAMES), CRAFTER_GAME])
    parser.add_argument("--games", default=default_games)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--min-episodes", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=120.0, help="per game, once min-episodes are done")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RANDOM_SCORES_FILE)
    args = parser.parse_args()
    games = {}
    for game in args.games.split(","):
        games[game] = measure(game, args.episodes, args.min_episodes, args.seconds, args.seed)
        g = games[game]
        print(
            f"{game:<24} {g['mean']:8.3f} ± {g['sem']:.3f} (sem; std {g['std']:.2f}) over {g['episodes']} "
            f"episodes, {g['steps']} steps, {g['seconds']} s",
            file=sys.stderr,
        )
    data = {
        "about": "random-policy scores measured by scripts/random_scores.py (uniform actions, eval env)",
        "date": time.strftime("%Y-%m-%d"),
        "games": games,
    }
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
