"""Which data the world model is trained on: the age of the sequences the replay draws.

    python benchmarks/replay_recency.py                 # a 10,000-step run, the three samplers
    python benchmarks/replay_recency.py --steps 20000 --json

A buffer grows one step per interaction (after a prefill) while world-model batches are drawn at a
preset's rate, as a run draws them (``ReplayBuffer.draw_starts``, visit counts updated). Over the last
fifth of the run it reports the share of drawn starts among the newest 5 %, 10 %, 25 % and 50 % of
the stored steps:

- the paper: 100 sequences every 0.76 interactions, visits counted from the real draws;
- the CPU presets: 8 sequences every 10.6 interactions, the same rule;
- the CPU presets with ``replay.visit_rate=131.6``: expected visits at the paper's rate.

Uniform sampling would give 5 / 10 / 25 / 50 %. The shares do not depend on the run's length much
(visits grow with the logarithm of a step's age), so 10,000 steps stand for 100,000.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from twm.replay import ReplayBuffer

AGES = (0.05, 0.10, 0.25, 0.50)
SAMPLERS = {  # name -> (interactions per draw, sequences per draw, visit_rate)
    "paper (100 every 0.76, real visits)": (0.76, 100, 0.0),
    "cpu presets (8 every 10.6, real visits)": (10.6, 8, 0.0),
    "cpu presets, replay.visit_rate=131.6": (10.6, 8, 100 / 0.76),
}


def newest_shares(
    steps: int, every: float, batch: int, visit_rate: float, prefill: int, seed: int
) -> list[float]:
    """Shares of the starts drawn over the last fifth of the run that are among the newest AGES."""
    buf = ReplayBuffer(steps, frame_stack=1, frame_shape=(1, 1), seed=seed, visit_rate=visit_rate)
    frame = np.zeros((1, 1), np.uint8)
    ages: list[np.ndarray] = []
    due = 0.0
    for size in range(1, steps + 1):
        buf.add(frame, 0, 0.0, False, False)
        if size <= prefill:
            continue
        due += 1
        while due >= every:
            due -= every
            starts = buf.draw_starts(batch, 1)
            if size > 0.8 * steps:
                ages.append((size - starts) / size)
    age = np.concatenate(ages)
    return [float((age < a).mean()) for a in AGES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--prefill", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = {
        name: newest_shares(args.steps, every, batch, rate, args.prefill, args.seed)
        for name, (every, batch, rate) in SAMPLERS.items()
    }
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| sampler | " + " | ".join(f"newest {a:.0%}" for a in AGES) + " |")
    print("|---|" + "---:|" * len(AGES))
    for name, shares in rows.items():
        print(f"| {name} | " + " | ".join(f"{s:.0%}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
