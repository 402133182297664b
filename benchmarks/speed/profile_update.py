"""Where one update's time goes, by operator: torch.profiler over a preset's updates, grouped by kind.

    python benchmarks/speed/profile_update.py [--preset cpu] [--num-actions 3] [--updates 3]
                                              [--set KEY=VALUE ...] [--kernels] [--rows 30] [--json]

Runs the preset's update (captured or eager, as the preset says; ``--set train.capture=false`` for
eager) on synthetic data, warms it up (a captured update compiles in its first two updates), then
profiles ``--updates`` updates and prints the operators' self time in five groups:

- ``convolution``: ATen convolutions and their backward (oneDNN on a CPU);
- ``matmul``: addmm, mm, bmm, baddbmm (linear layers, attention);
- ``random``: the random-number kernels (latent and action sampling, dropout masks);
- ``fused``: inductor's generated kernels (with ``--kernels``, each by name; without it, the
  compiled graph's self time, which is the same total);
- ``other``: every other operator and the Python between them.

``--kernels`` sets ``torch._inductor.config.cpp.enable_kernel_profile``, which changes the cache key:
the first run recompiles (minutes on a CPU). Shares are what to read; absolute times depend on what
else the machine runs.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
import torch._inductor.config as inductor_config

from twm.agent import Agent
from twm.captured import COMPILING_UPDATES
from twm.config_files import load_config
from twm.perf.bench import synthetic_batch, synthetic_obs_sampler, time_update, update_generator
from twm.update import Learner

CONVOLUTION = ("aten::_convolution", "aten::convolution_backward", "aten::mkldnn_convolution")
MATMUL = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")
RANDOM = ("aten::exponential_", "aten::random_", "aten::uniform_", "aten::bernoulli_", "aten::normal_")


def group_of(name: str) -> str:
    if name in CONVOLUTION:
        return "convolution"
    if name in MATMUL:
        return "matmul"
    if name in RANDOM:
        return "random"
    if "cpp_fused" in name or name.startswith("## Call CompiledFxGraph"):
        return "fused"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--num-actions", type=int, default=3)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kernels", action="store_true", help="name inductor's kernels (recompiles)")
    parser.add_argument("--rows", type=int, default=30, help="operators listed, by self time")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.kernels:
        inductor_config.cpp.enable_kernel_profile = True

    cfg = load_config(args.preset, args.overrides)
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, args.num_actions))
    batch = synthetic_batch(cfg, args.num_actions, "cpu", 0)
    sample_obs = synthetic_obs_sampler(cfg, torch.device("cpu"))
    gen = update_generator(learner, 0)
    for _ in range(COMPILING_UPDATES + 1 if cfg.train.capture else 1):
        time_update(learner, batch, sample_obs, gen)

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.updates):
            time_update(learner, batch, sample_obs, gen)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)  # microseconds
    groups: dict[str, float] = defaultdict(float)
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]
    result = {
        "preset": args.preset,
        "overrides": args.overrides,
        "capture": cfg.train.capture,
        "updates": args.updates,
        "ms_per_update": total / 1e3 / args.updates,
        "groups_ms_per_update": {k: v / 1e3 / args.updates for k, v in sorted(groups.items())},
        "top": [
            {"name": e.key, "ms_per_update": e.self_cpu_time_total / 1e3 / args.updates, "calls": e.count}
            for e in top
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = "captured" if cfg.train.capture else "eager"
    print(f"{args.preset} ({kind}), {args.updates} profiled updates: {result['ms_per_update']:.1f} ms per update")
    for name, ms in sorted(result["groups_ms_per_update"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<12}{ms:>8.1f} ms  {100 * ms / result['ms_per_update']:>5.1f}%")
    print(f"  top {args.rows} operators by self time (ms per update, calls over all profiled updates):")
    for row in result["top"]:
        print(f"  {row['ms_per_update']:>8.2f}  {row['calls']:>5}  {row['name'][:90]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
