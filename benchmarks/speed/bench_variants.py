"""Seconds per update of several configurations, measured in one run with their updates interleaved.

    python benchmarks/speed/bench_variants.py --preset plus --game minatar/space_invaders --updates 20 \\
        --variant base= --variant no-unimix=obs_model.unimix=0,actor_critic.unimix=0 [--json]

Each ``--variant NAME=KEY=VALUE,KEY=VALUE`` is ``--preset`` with those overrides (``NAME=`` alone: the
preset itself). Each variant gets its own agent and synthetic batch (``twm.perf.bench``); after two
warm-up updates each, the variants' updates alternate, so load from other processes hits all of
them alike, and the medians per part (world model, imagination, actor-critic) and of the whole
update are printed with each variant's ratio to the first. This is how the cost of each switch
beyond the paper was measured (docs/speed.md, "What the plus switches cost").
"""

from __future__ import annotations

import argparse
import json

import torch

from twm.agent import Agent
from twm.config_files import load_config
from twm.device import resolve_device
from twm.envs import make_env
from twm.perf.bench import (
    PARTS,
    interleaved_medians,
    synthetic_batch,
    synthetic_obs_sampler,
    time_update,
    update_generator,
)
from twm.update import Learner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="plus")
    parser.add_argument("--game", default="minatar/space_invaders")
    parser.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,KEY=VALUE (repeat)")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    variants = args.variant or ["base="]
    runs = {}
    for spec in variants:
        name, _, overrides = spec.partition("=")
        cfg = load_config(args.preset, [f"env.game={args.game}", *[o for o in overrides.split(",") if o]])
        num_actions = make_env(cfg.env, "eval", 0).num_actions
        torch.manual_seed(0)
        learner = Learner(Agent(cfg, num_actions).to(device))
        batch = synthetic_batch(cfg, num_actions, device, 0)
        runs[name] = (learner, batch, synthetic_obs_sampler(cfg, device), update_generator(learner, 0))
    for run in runs.values():
        for _ in range(2):
            time_update(*run)
    medians = interleaved_medians(runs, args.updates)
    first = next(iter(medians))
    if args.json:
        print(json.dumps({"preset": args.preset, "game": args.game, "updates": args.updates,
                          "threads": torch.get_num_threads(), "median_seconds": medians}, indent=2))  # fmt: skip
        return 0
    print(f"preset {args.preset}, {args.game}, {torch.get_num_threads()} threads, medians of {args.updates} "
          f"interleaved updates (ratio: total / {first}'s)")  # fmt: skip
    print(f"  {'variant':<24}" + "".join(f"{p:>14}" for p in (*PARTS, "total")) + f"{'ratio':>8}")
    for name, m in medians.items():
        cells = "".join(f"{m[p]:>14.3f}" for p in (*PARTS, "total"))
        print(f"  {name:<24}{cells}{m['total'] / medians[first]['total']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
