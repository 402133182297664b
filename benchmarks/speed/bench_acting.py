"""Milliseconds per real step of acting (encoder + actor on one frame), today's ``Agent.act`` against
the same call wrapped in a whole-agent switch to eval mode and back (what ``act`` did before it
switched only the encoder and actor), in one process with the two alternating.

    python benchmarks/speed/bench_acting.py [--preset plus] [--game minatar/space_invaders] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from twm.agent import Agent
from twm.config_files import load_config
from twm.envs import make_env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="plus")
    parser.add_argument("--game", default="minatar/space_invaders")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200, help="acting steps per round and variant")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.preset, [f"env.game={args.game}"])
    torch.manual_seed(0)
    agent = Agent(cfg, make_env(cfg.env, "eval", 0).num_actions)
    obs = np.random.default_rng(0).integers(0, 256, (1, cfg.image_channels, 64, 64), dtype=np.uint8)
    gen = torch.Generator().manual_seed(0)

    def whole_agent_switch() -> None:
        agent.eval()
        agent.act(obs, gen)
        agent.train()

    variants: dict[str, Callable[[], object]] = {
        "whole-agent switch": whole_agent_switch,
        "act": lambda: agent.act(obs, gen),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            for _ in range(20):
                step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps * 1e3)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, ms in medians.items():
        print(f"{name:<20} {ms:6.2f} ms per step (median of {args.rounds} rounds of {args.steps})")
    print(f"ratio {medians['whole-agent switch'] / medians['act']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
