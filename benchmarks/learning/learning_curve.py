"""Learning check: train with a preset under a wall-clock budget and print the evaluation curve.

    python benchmarks/learning/learning_curve.py --game catch --preset quick --minutes 30 --run-dir runs/bench-catch
    python benchmarks/learning/learning_curve.py --game Boxing --preset quick --minutes 60 --run-dir runs/bench-boxing

Runs ``twm train`` in a subprocess, stops it when the budget is spent (its metrics.jsonl keeps every
evaluation done so far), and prints evaluation return against interactions and wall time. For the
built-in game it also says whether the policy reached, and kept, 90% of the optimal return; for an
Atari game it prints the random and human reference scores beside the curve.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from twm.games import ATARI100K_GAMES, resolve_game
from twm.training.logger import read_metrics


def eval_curve(run_dir: Path) -> list[dict[str, float]]:
    """Evaluation lines of a run: step, mean score, episodes, wall time."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [
        {
            "step": r["step"],
            "score": r["eval/mean_score"],
            "episodes": r.get("eval/episodes", 0),
            "time": r["time"],
        }
        for r in read_metrics(path)
        if "eval/mean_score" in r
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", default="catch")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch/OpenMP threads (default: all cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    game = resolve_game(args.game)
    command = [sys.executable, "-m", "twm.cli", "train", "--game", game, "--preset", args.preset]
    command += ["--seed", str(args.seed), "--run-dir", str(args.run_dir), "--no-progress"]
    for item in args.overrides:
        command += ["--set", item]
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.time()
    proc = subprocess.Popen(command, env=env)
    try:
        proc.wait(timeout=args.minutes * 60)
        finished = proc.returncode == 0
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait()
        finished = False
    wall = time.time() - start

    curve = eval_curve(args.run_dir)
    result: dict[str, object] = {
        "game": game,
        "preset": args.preset,
        "finished": finished,
        "wall_s": round(wall),
    }
    result["curve"] = curve
    if game == "catch":
        from twm.config_files import load_config
        from twm.envs.catch import CatchEnv

        catch = CatchEnv(load_config(args.preset, ["env.game=catch"]).env, mode="eval", seed=0)
        target = 0.9 * catch.optimal_return
        reached = [i for i, point in enumerate(curve) if point["score"] >= target]
        first = reached[0] if reached else None
        kept = first is not None and all(p["score"] >= target for p in curve[first:])
        result.update(
            optimal=catch.optimal_return,
            random=catch.expected_random_return,
            target=target,
            reached_at_step=None if first is None else curve[first]["step"],
            reached_at_s=None if first is None else curve[first]["time"],
            stayed=kept,
        )
    elif game in ATARI100K_GAMES:
        result.update(random=ATARI100K_GAMES[game].random, human=ATARI100K_GAMES[game].human)

    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{game} / {args.preset}: {'finished' if finished else 'stopped at the budget'} after {wall / 60:.1f} min"
    )
    print(f"{'interactions':>12} {'eval return':>12} {'episodes':>9} {'minutes':>8}")
    for point in curve:
        print(
            f"{point['step']:>12} {point['score']:>12.2f} {point['episodes']:>9.0f} {point['time'] / 60:>8.1f}"
        )
    for key in ("optimal", "random", "human", "target", "reached_at_step", "stayed"):
        if key in result:
            print(f"{key}: {result[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
