"""Speed of one update: the plain implementation against the fast defaults, and how cost grows.

    python benchmarks/speed/bench_speed.py [--preset atari100k] [--updates 3] [--bf16] [--no-scaling]
                                     [--batch-sizes 25,50,100] [--sequence-lengths 8,16,32]
                                     [--memory-steps 4,8,16] [--device cpu|cuda] [--json]

1. plain vs fast, measured in one run with the updates of the variants interleaved (so that load
   from other processes hits them alike): "plain" is the original implementation
   (dynamics.kv_cache=false, obs_model.fast_convs=false), "fast" the defaults (key/value cache,
   fast convs), "fast+bf16" the defaults with train.precision=bfloat16 (--bf16). Medians of
   --updates updates after one warm-up, per part, and the speed-up of each variant over plain.
   train.keep_freed_memory acts on the whole process, so it applies to every variant alike (on by
   default); measure its effect with a second run under --set train.keep_freed_memory=false.
2. scaling: seconds per update (fast defaults) against the world-model batch size, its sequence
   length and the memory length (dynamics.memory_steps), one knob at a time from the preset.

Timings on a shared machine are noisy: compare the ratios of part 1 (same run, interleaved) rather
than absolute seconds across runs. `twm bench` covers one configuration with FLOPs and peak.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from twm.agent import Agent
from twm.allocator import keep_freed_memory
from twm.config import Config
from twm.config_files import load_config
from twm.device import resolve_device
from twm.perf.bench import PARTS, synthetic_batch, synthetic_obs_sampler, time_update
from twm.perf.flops import update_flops
from twm.update import Learner

VARIANTS = {
    "plain": ["dynamics.kv_cache=false", "obs_model.fast_convs=false"],
    "fast": [],
    "fast+bf16": ["train.precision=bfloat16"],
}


def build(cfg: Config, device: torch.device, num_actions: int, seed: int = 0):
    torch.manual_seed(seed)
    learner = Learner(Agent(cfg, num_actions).to(device))
    batch = synthetic_batch(cfg, num_actions, device, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    return learner, batch, synthetic_obs_sampler(cfg, device), gen


def compare(
    base: list[str], preset: str, variants: list[str], updates: int, device: torch.device, num_actions: int
) -> dict:
    """Interleaved updates of each variant; medians per part and speed-ups over the first variant."""
    runs = {}
    for name in variants:
        cfg = load_config(preset, [*base, *VARIANTS[name]])
        runs[name] = (cfg, *build(cfg, device, num_actions))
    times: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PARTS} for name in variants}
    for i in range(1 + updates):  # the first round warms up
        for name in variants:
            _, learner, batch, sample, gen = runs[name]
            seconds, _ = time_update(learner, batch, sample, gen)
            if i:
                for p in PARTS:
                    times[name][p].append(seconds[p])
    out = {}
    for name in variants:
        cfg = runs[name][0]
        totals = [sum(parts) for parts in zip(*(times[name][p] for p in PARTS), strict=True)]
        medians = {p: statistics.median(times[name][p]) for p in PARTS}
        medians["total"] = statistics.median(totals)
        flops = {k: t.total for k, t in update_flops(cfg, num_actions).items()}
        out[name] = {"seconds": medians, "totals": totals, "tflop": sum(flops.values()) / 1e12}
    first = variants[0]
    for name in variants:
        out[name]["speedup"] = {
            p: out[first]["seconds"][p] / out[name]["seconds"][p] for p in (*PARTS, "total")
        }
    return out


def scaling(
    base: list[str],
    preset: str,
    knobs: dict[str, list[int]],
    updates: int,
    device: torch.device,
    num_actions: int,
) -> list[dict]:
    rows = []
    for key, values in knobs.items():
        for value in values:
            cfg = load_config(preset, [*base, f"{key}={value}"])
            learner, batch, sample, gen = build(cfg, device, num_actions)
            time_update(learner, batch, sample, gen)  # warm-up
            per_update = [time_update(learner, batch, sample, gen)[0] for _ in range(updates)]
            row = {"knob": key, "value": value}
            for p in PARTS:
                row[p] = statistics.median(u[p] for u in per_update)
            row["total"] = statistics.median(sum(u.values()) for u in per_update)
            row["tflop"] = sum(t.total for t in update_flops(cfg, num_actions).values()) / 1e12
            rows.append(row)
    return rows


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per variant (plus one warm-up)")
    parser.add_argument("--scaling-updates", type=int, default=1, help="timed updates per scaling row")
    parser.add_argument("--num-actions", type=int, default=6, help="action count (no env is created)")
    parser.add_argument("--bf16", action="store_true", help="also time fast+bf16")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    parser.add_argument("--batch-sizes", type=ints, default=[25, 50, 100])
    parser.add_argument("--sequence-lengths", type=ints, default=[8, 16, 32])
    parser.add_argument("--memory-steps", type=ints, default=[4, 8, 16])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    base = list(args.overrides)
    # Process-wide, so it cannot differ between the interleaved variants: compare it across two runs
    # (the second with --set train.keep_freed_memory=false).
    kept = load_config(args.preset, base).train.keep_freed_memory and keep_freed_memory()
    variants = ["plain", "fast"] + (["fast+bf16"] if args.bf16 else [])
    result = {
        "preset": args.preset,
        "overrides": base,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": kept,
        "compare": compare(base, args.preset, variants, args.updates, device, args.num_actions),
    }
    if not args.no_scaling:
        knobs = {
            "replay.batch_size": args.batch_sizes,
            "replay.sequence_length": args.sequence_lengths,
            "dynamics.memory_steps": args.memory_steps,
        }
        result["scaling"] = scaling(base, args.preset, knobs, args.scaling_updates, device, args.num_actions)
    if args.json:
        print(json.dumps(result, indent=1))
        return

    print(
        f"update speed, preset {' '.join([args.preset, *base])}, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; medians of {args.updates} interleaved updates"
    )
    print(f"  allocator (all variants): {'glibc keeps freed memory' if kept else 'default'}")
    header = f"  {'variant':<11}" + "".join(f"{p:>14}" for p in (*PARTS, "total")) + f"{'GFLOP':>9}"
    print(header)
    for name, r in result["compare"].items():
        cells = "".join(f"{r['seconds'][p]:>8.2f}s {r['speedup'][p]:>4.1f}x" for p in (*PARTS, "total"))
        print(f"  {name:<11}{cells}{1000 * r['tflop']:>9.1f}")
    print("  (seconds, then speed-up over plain)")
    if "scaling" in result:
        print("\nscaling (fast defaults, one knob at a time; seconds per update)")
        print(
            f"  {'knob':<24}{'value':>6}" + "".join(f"{p:>14}" for p in (*PARTS, "total")) + f"{'GFLOP':>9}"
        )
        for row in result["scaling"]:
            cells = "".join(f"{row[p]:>14.2f}" for p in (*PARTS, "total"))
            print(f"  {row['knob']:<24}{row['value']:>6}{cells}{1000 * row['tflop']:>9.1f}")


if __name__ == "__main__":
    main()
