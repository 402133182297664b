"""Operators dispatched by one update, per part, at a preset (default: the paper's), as JSON.

    python benchmarks/speed/dispatch_counts.py [--preset atari100k] [--game Pong] [--set KEY=VALUE ...]
    PYTHONPATH=/path/to/older/checkout/src python benchmarks/speed/dispatch_counts.py   # another version

Counts the second update on synthetic data (the first creates the optimisers' state) with the
dispatch counter of ``twm bench`` (``twm/op_count.py``): operators, launching operators (not views
or bare allocations) and host syncs, for the world-model step, imagination and the actor-critic
step. The counter is loaded from this checkout's ``src/twm/perf/op_count.py`` by path, so an older twm
on ``PYTHONPATH`` (one without the counter) is counted the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import torch

import twm
from twm.agent import Agent
from twm.config_files import load_config

try:
    from twm.perf.info import num_actions_of
except ImportError:  # a twm before twm.perf
    from twm.info import num_actions_of  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent


def load_counter() -> type:
    path = HERE.parents[1] / "src" / "twm" / "perf" / "op_count.py"
    spec = importlib.util.spec_from_file_location("twm_op_count_of_this_checkout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.CountOps


def synthetic(cfg: object, num_actions: int) -> tuple[object, object]:
    # twm.perf.bench (twm.bench before) has both helpers in every version this script compares.
    try:
        from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
    except ImportError:
        from twm.bench import synthetic_batch, synthetic_obs_sampler  # type: ignore[no-redef]

    return synthetic_batch(cfg, num_actions, "cpu", 0), synthetic_obs_sampler(cfg, torch.device("cpu"))


def count_parts(CountOps: type, agent: Any, batch: Any, sample_obs: Any, gen: torch.Generator) -> tuple[dict, int]:
    """The counts of the second update's parts, and its imagined episode ends."""
    try:
        from twm.update import Learner
    except ImportError:  # a twm before twm.update: the agent updated itself, part by part
        agent.update(batch, sample_obs, gen)  # creates the optimiser state
        parts = {}
        with CountOps() as counter:
            wm_out = agent.world_model.update(batch, gen)
        parts["world_model"] = counter.counts
        with CountOps() as counter:
            rollout = agent.imagine(wm_out, sample_obs, gen)
        parts["imagination"] = counter.counts
        with CountOps() as counter:
            agent.actor_critic_step(rollout)
        parts["actor_critic"] = counter.counts
        return parts, int(rollout.dones.sum())
    learner = Learner(agent)
    learner.update(batch, sample_obs, gen)  # creates the optimiser state
    parts = {}
    with CountOps() as counter:

        def part_ended(part: str, _: float) -> None:  # the next part counts afresh
            parts[part], counter.counts = counter.counts, type(counter.counts)()

        metrics = learner.update(batch, sample_obs, gen, on_part=part_ended)
    return parts, int(metrics["ac/imagined_dones"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--top", type=int, default=0, help="also list the N most frequent launching operators")
    args = parser.parse_args()
    CountOps = load_counter()
    cfg = load_config(args.preset, [f"env.game={args.game}", *args.overrides])
    num_actions = num_actions_of(cfg)
    torch.manual_seed(0)
    agent = Agent(cfg, num_actions)
    batch, sample_obs = synthetic(cfg, num_actions)
    gen = torch.Generator().manual_seed(0)
    parts, imagined_ends = count_parts(CountOps, agent, batch, sample_obs, gen)
    out = {k: c.summary(args.top) for k, c in parts.items()}
    out["total"] = {key: sum(v[key] for v in out.values()) for key in ("ops", "launching", "syncs")}
    print(
        json.dumps(
            {
                "twm": str(Path(twm.__file__).parent),
                "preset": args.preset,
                "game": args.game,
                "overrides": args.overrides,
                "imagined_ends": imagined_ends,
                "counts": out,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
