"""Replay buffer at the scale of a full run (100k steps): memory, sampling and batch times, save/load.

    python benchmarks/speed/bench_replay.py [--steps 100000] [--batch 100] [--seq-len 16] [--json]

Frames are synthetic (random uint8, episodes of random length), which is the worst case for nothing
here: all costs are independent of the pixel values.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from twm.replay import ReplayBuffer


def fill(steps: int, seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(steps, seed=seed)
    frames = rng.integers(0, 256, size=(1000, 64, 64), dtype=np.uint8)  # reused: generating 410 MB is slow
    actions = rng.integers(0, 18, size=steps)
    rewards = np.tanh(rng.normal(size=steps))
    dones = rng.random(steps) < 1 / 300  # episodes of ~300 steps
    for i in range(steps):
        buf.add(frames[i % 1000], int(actions[i]), float(rewards[i]), bool(dones[i]), False)
    return buf


def per_call(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    start = time.perf_counter()
    buf = fill(args.steps, seed=0)
    fill_s = time.perf_counter() - start
    b, length, reps = args.batch, args.seq_len, args.repeats
    stacked_gb = args.steps * buf.frame_stack * 64 * 64 / 1e9
    results: dict[str, float | int] = {
        "steps": args.steps,
        "memory_gb": buf.memory_bytes() / 1e9,
        "memory_gb_if_stacks_were_stored": stacked_gb,
        "fill_s": fill_s,
        "draw_starts_ms": 1e3 * per_call(lambda: buf.draw_starts(b, length), reps),
        "sample_sequences_ms": 1e3 * per_call(lambda: buf.sample_sequences(b, length), reps),
        "sample_sequences_uniform_ms": 1e3 * per_call(lambda: buf.sample_sequences_uniform(b, length), reps),
        "sample_obs_1600_ms": 1e3 * per_call(lambda: buf.sample_obs(1600), reps),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay"
        start = time.perf_counter()
        buf.save(path)
        results["save_s"] = time.perf_counter() - start
        results["file_mb"] = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        start = time.perf_counter()
        loaded = ReplayBuffer.load(path)
        results["load_s"] = time.perf_counter() - start
        assert np.array_equal(loaded.frames, buf.frames) and np.array_equal(loaded.visits, buf.visits)

    if args.json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
