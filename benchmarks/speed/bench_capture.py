"""Seconds per update, eager against captured (``train.capture``), measured in one run.

    python benchmarks/speed/bench_capture.py [--preset cpu] [--num-actions 6] [--updates 5] [--pool 64]
                                       [--device cpu|cuda] [--backend inductor] [--json]

Both variants share everything but the switch: ``train.optimizer_impl=foreach`` and
``actor_critic.fresh_pool=--pool`` (what capture needs), float32, synthetic data. The captured
agent's first two updates compile (the second again, once the optimisers have state); their
seconds are reported apart. Then the variants' updates alternate (so that load from other
processes hits both alike) and the medians per part and of the whole update are printed with the
ratio eager / captured. On a CPU, inductor fuses the elementwise work between the matrix products;
on CUDA, ``reduce-overhead`` replays each region as a CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from twm.agent import Agent
from twm.captured import COMPILING_UPDATES
from twm.config_files import load_config
from twm.device import resolve_device
from twm.perf.bench import PARTS, interleaved_medians, synthetic_batch, synthetic_obs_sampler, time_update
from twm.update import Learner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--num-actions", type=int, default=6)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--pool", type=int, default=64, help="actor_critic.fresh_pool of both variants")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    base = ["train.optimizer_impl=foreach", f"actor_critic.fresh_pool={args.pool}", "train.precision=float32"]
    variants = {
        "eager": load_config(args.preset, base),
        "captured": load_config(
            args.preset, [*base, "train.capture=true", f"train.compile_backend={args.backend}"]
        ),
    }
    runs = {}
    for name, cfg in variants.items():
        torch.manual_seed(0)
        learner = Learner(Agent(cfg, args.num_actions).to(device))
        batch = synthetic_batch(cfg, args.num_actions, device, 0)
        gen = None if cfg.train.capture else torch.Generator(device=device).manual_seed(0)
        runs[name] = (learner, batch, synthetic_obs_sampler(cfg, device), gen)

    compile_seconds = []
    for name in runs:  # two warm-up updates each; the captured ones compile
        for _ in range(COMPILING_UPDATES):
            start = time.perf_counter()
            time_update(*runs[name])
            if name == "captured":
                compile_seconds.append(time.perf_counter() - start)
    medians = interleaved_medians(runs, args.updates)
    result = {
        "preset": args.preset,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "pool": args.pool,
        "backend": args.backend,
        "updates": args.updates,
        "compile_seconds": compile_seconds,
        "median_seconds": medians,
        "speedup": {p: medians["eager"][p] / medians["captured"][p] for p in (*PARTS, "total")},
        "regions_per_update": runs["captured"][0].captured.region_calls // (2 + args.updates),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"eager vs captured ({args.backend}), preset {args.preset} on {device}, {result['threads']} threads, "
        f"torch {result['torch']}; medians of {args.updates} interleaved updates"
    )
    print(f"  compiling (first two captured updates): {', '.join(f'{s:.1f} s' for s in compile_seconds)}")
    print(f"  {'part':<14}{'eager s':>10}{'captured s':>12}{'eager/captured':>16}")
    for part in (*PARTS, "total"):
        e, c = medians["eager"][part], medians["captured"][part]
        print(f"  {part:<14}{e:>10.3f}{c:>12.3f}{e / c:>16.2f}")
    print(f"  captured regions per update: {result['regions_per_update']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
