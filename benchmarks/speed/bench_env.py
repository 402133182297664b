"""Environment throughput: single AtariEnv (train mode) and vectorised evaluation, in agent steps/s.

Usage: python benchmarks/speed/bench_env.py [--game Pong] [--envs 8] [--repeats 3] [--json]

Each figure is the median of ``--repeats`` runs. Policies are uniformly random (drawn from a seeded
Generator), so the numbers measure the environment, not a network. Vectorised figures count every agent
step of every env (aggregated). ale-py's AtariVectorEnv is measured as a reference only: its
preprocessing differs from our protocol (see twm.envs.vector), so it is not an option we can use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

from twm.config import EnvConfig
from twm.envs.atari import AtariEnv, rom_name
from twm.envs.vector import evaluate_episodes


def bench_single(cfg: EnvConfig, steps: int, seed: int) -> float:
    env = AtariEnv(cfg, mode="train", seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(env.num_actions, size=steps)
    env.reset()
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()  # counted in the time: resets are part of collecting experience
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def bench_vector(
    cfg: EnvConfig, episodes: int, envs: int, seed: int, backend: str, workers: int | None
) -> float:
    rng = np.random.default_rng(seed)
    num_actions = AtariEnv(cfg, mode="eval", seed=0).num_actions
    counted = 0

    def policy(obs: np.ndarray) -> np.ndarray:
        nonlocal counted
        counted += len(obs)
        return rng.integers(num_actions, size=len(obs))

    start = time.perf_counter()
    evaluate_episodes(cfg, policy, episodes, envs, seed, backend=backend, num_workers=workers)  # type: ignore[arg-type]
    return counted / (time.perf_counter() - start)


def bench_ale_vector(cfg: EnvConfig, envs: int, steps: int, seed: int, threads: int) -> float:
    """ale-py's C++ vector env configured as close to our eval protocol as it allows (reference)."""
    from ale_py import AtariVectorEnv

    venv = AtariVectorEnv(
        rom_name(cfg.game),
        envs,
        num_threads=threads,
        img_height=64,
        img_width=64,
        grayscale=True,
        stack_num=cfg.frame_stack,
        frameskip=cfg.frame_skip,
        maxpool=True,
        noop_max=0,
        episodic_life=False,
        reward_clipping=False,
        use_fire_reset=True,
        max_num_frames_per_episode=cfg.time_limit * cfg.frame_skip,
    )
    rng = np.random.default_rng(seed)
    n = int(venv.single_action_space.n)
    venv.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps // envs):
        venv.step(rng.integers(n, size=envs).astype(np.int32))
    elapsed = time.perf_counter() - start
    venv.close()
    return (steps // envs) * envs / elapsed


def median_of(repeats: int, fn: Callable[[int], float]) -> float:
    return statistics.median(fn(r) for r in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--steps", type=int, default=4000, help="agent steps of the single-env run")
    parser.add_argument("--envs", type=int, default=8, help="env slots of the vectorised evaluation")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per vectorised evaluation")
    parser.add_argument("--time-limit", type=int, default=400, help="eval episode length cap (steps)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-async", action="store_true", help="skip the multi-process backends")
    parser.add_argument("--skip-ale", action="store_true", help="skip ale-py's AtariVectorEnv")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args()

    cfg = EnvConfig(game=args.game)
    eval_cfg = EnvConfig(game=args.game, time_limit=args.time_limit)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    results: dict[str, float | int | str] = {"game": args.game, "cpus": cpus or 1, "envs": args.envs}

    results["single_train_steps_per_s"] = median_of(args.repeats, lambda r: bench_single(cfg, args.steps, r))
    results["vector_sync_steps_per_s"] = median_of(
        args.repeats, lambda r: bench_vector(eval_cfg, args.episodes, args.envs, r, "sync", None)
    )
    if not args.skip_async:
        # Few processes, each stepping a group of slots (one per CPU) ...
        results["vector_async_grouped_steps_per_s"] = median_of(
            args.repeats, lambda r: bench_vector(eval_cfg, args.episodes, args.envs, r, "async", cpus)
        )
        # ... and plain AsyncVectorEnv style: one process per env.
        results["vector_async_per_env_steps_per_s"] = median_of(
            args.repeats, lambda r: bench_vector(eval_cfg, args.episodes, args.envs, r, "async", args.envs)
        )
    if not args.skip_ale:
        ale_steps = args.episodes * args.time_limit
        results["ale_vector_reference_steps_per_s"] = median_of(
            args.repeats, lambda r: bench_ale_vector(eval_cfg, args.envs, ale_steps, r, cpus or 1)
        )

    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:36s} {value:.0f}" if isinstance(value, float) else f"{key:36s} {value}")


if __name__ == "__main__":
    main()
