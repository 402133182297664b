"""Time one world-model update at the paper configuration, plain vs fused attention.

Synthetic replay data (random frames and actions, a few episode ends), batch 100 x 16 as in docs/method.md.
Reports the median of several updates after a warm-up, for each attention path, and their ratio.

    python benchmarks/speed/bench_world_model.py [--updates 3] [--batch-size 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from twm.agent import Agent
from twm.config import Config
from twm.config_files import apply_overrides
from twm.perf.bench import synthetic_batch
from twm.update import Learner


def time_updates(cfg: Config, updates: int, num_actions: int = 6) -> list[float]:
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, num_actions))
    batch = synthetic_batch(cfg, num_actions, "cpu")

    def update() -> None:  # the world-model part of Learner.update
        losses = learner.agent.world_model.compute_loss(batch)
        learner.step([losses.obs_loss, losses.dyn_loss], ("obs", "dyn"))

    update()  # warm-up
    times = []
    for _ in range(updates):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results = {}
    for attention in ("plain", "fused"):
        cfg = apply_overrides(
            Config(), [f"dynamics.attention={attention}", f"replay.batch_size={args.batch_size}"]
        )
        times = time_updates(cfg, args.updates)
        results[attention] = {"median_s": statistics.median(times), "times_s": [round(t, 3) for t in times]}
    results["fused_speedup"] = results["plain"]["median_s"] / results["fused"]["median_s"]
    results["torch"] = torch.__version__
    results["threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"world-model update, paper config, batch {args.batch_size} x 16, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for attention in ("plain", "fused"):
        r = results[attention]
        print(f"  {attention:<6} median {r['median_s']:.2f} s  (runs: {r['times_s']})")
    print(f"  fused / plain speed-up: {results['fused_speedup']:.2f}x")


if __name__ == "__main__":
    main()
