"""Resume checkpoints at the end of a 100k-step run: time and size, full rewrite vs incremental chunks.

    python benchmarks/speed/bench_checkpoint.py [--steps 100000] [--interval 10000] [--preset atari100k]
                                          [--dir DIR] [--repeats 3] [--json]

The agent is the preset's (paper size by default: 21.6M parameters, ~260 MB with the Adam moments);
the replay buffer holds ``--steps`` synthetic frames (random pixels, incompressible, as nothing here
compresses). Written to ``--dir`` (default: a temporary folder in the current directory, i.e. the
disk runs are written to, not a RAM disk). Variants, each the median of ``--repeats`` writes:

- ``agent only``: the networks and optimisers alone (the floor of any checkpoint);
- ``full, one file``: everything in one checkpoint file, the 410 MB of frames rewritten each time;
- ``full, ReplayBuffer.save``: the agent file plus ``ReplayBuffer.save`` (every chunk rewritten; note
  that ``ReplayBuffer.save`` does not fsync, so its time is mostly the page cache's);
- ``incremental (chunk C)``: ``CheckpointManager.save`` after an earlier checkpoint ``--interval``
  steps before: only the chunks completed since then are written, plus the checkpoint file (agent,
  small replay arrays, partial last chunk). Timed from the state right after that earlier checkpoint;
- ``first incremental (chunk C)``: the same with no earlier checkpoint (every chunk is new);
- ``load``: ``CheckpointManager.load_latest`` (read, verify checksums, rebuild the buffer).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twm.agent import Agent
from twm.config_files import load_config
from twm.replay import CHECKPOINT_CHUNK, ReplayBuffer
from twm.training.checkpoint import CheckpointManager, save_checkpoint
from twm.update import Optimizers

MB = 1e6


def fill(steps: int, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(steps, seed=seed)
    frames = rng.integers(0, 256, size=(1000, 64, 64), dtype=np.uint8)  # reused: generating 410 MB is slow
    actions = rng.integers(0, 18, size=steps)
    rewards = np.tanh(rng.normal(size=steps))
    dones = rng.random(steps) < 1 / 300
    for i in range(steps):
        # Shifted per block, so no two chunk files are byte-identical.
        buf.add(
            frames[i % 1000] + np.uint8(i // 1000), int(actions[i]), float(rewards[i]), bool(dones[i]), False
        )
    buf._visits[:steps] = rng.integers(0, 50, size=steps)  # visit counts as after many updates
    return buf


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(setup: Callable[[], Any], fn: Callable[[Any], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        arg = setup()
        start = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--interval", type=int, default=10_000, help="steps since the previous checkpoint")
    parser.add_argument("--preset", default="atari100k")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = load_config(args.preset, ["env.game=Pong"])
    agent = Agent(cfg, 6)
    optimizers = Optimizers(agent)
    # Adam moments exist only after a step; give every optimiser one so the state has its real size.
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
    replay = fill(args.steps)
    params = sum(p.numel() for p in agent.parameters())

    root = Path(tempfile.mkdtemp(prefix="bench_checkpoint-", dir=args.dir or Path.cwd()))
    rows: list[dict[str, Any]] = []
    extra = {"interactions": args.steps}

    def record(name: str, seconds: float, written: int, on_disk: int) -> None:
        rows.append(
            {"variant": name, "seconds": seconds, "written_mb": written / MB, "on_disk_mb": on_disk / MB}
        )

    try:
        # Agent only.
        path = root / "agent.pt"
        seconds, _ = timed(lambda: None, lambda _: save_checkpoint(path, agent, extra, optimizers=optimizers), args.repeats)
        record("agent only", seconds, path.stat().st_size, path.stat().st_size)

        # Full rewrite, one file: a chunk larger than the buffer puts every frame into the checkpoint.
        def fresh_full() -> CheckpointManager:
            shutil.rmtree(root / "full", ignore_errors=True)
            return CheckpointManager(root / "full", chunk=args.steps + 1)

        seconds, _ = timed(fresh_full, lambda m: m.save(agent, replay, args.steps, extra, optimizers=optimizers), args.repeats)
        size = folder_bytes(root / "full")
        record("full, one file", seconds, size, size)

        # Full rewrite with the existing directory format.
        def full_dir(_: Any) -> None:
            save_checkpoint(root / "dir" / "agent.pt", agent, extra, optimizers=optimizers)
            replay.save(root / "dir" / "replay")

        seconds, _ = timed(lambda: None, full_dir, args.repeats)
        size = folder_bytes(root / "dir")
        record("full, ReplayBuffer.save", seconds, size, size)

        previous = max(0, args.steps - args.interval)
        for chunk in sorted({CHECKPOINT_CHUNK, 10_000}):
            folder = root / f"inc{chunk}"

            def after_previous(folder: Path = folder, chunk: int = chunk) -> CheckpointManager:
                # The state right after the checkpoint `interval` steps earlier: its chunks are on disk.
                shutil.rmtree(folder, ignore_errors=True)
                manager = CheckpointManager(folder, chunk=chunk)
                manager._write_new_chunks(_prefix(replay, previous))
                return manager

            def save(manager: CheckpointManager) -> tuple[int, int]:
                before = folder_bytes(manager.dir)
                manager.save(agent, replay, args.steps, extra, optimizers=optimizers)
                return folder_bytes(manager.dir) - before, folder_bytes(manager.dir)

            seconds, (written, on_disk) = timed(after_previous, save, args.repeats)
            record(f"incremental (chunk {chunk})", seconds, written, on_disk)

            def first(folder: Path = folder, chunk: int = chunk) -> CheckpointManager:
                shutil.rmtree(folder, ignore_errors=True)
                return CheckpointManager(folder, chunk=chunk)

            seconds, (written, on_disk) = timed(first, save, args.repeats)
            record(f"first incremental (chunk {chunk})", seconds, written, on_disk)

            seconds, (_, loaded, _) = timed(
                lambda folder=folder: CheckpointManager(folder), lambda m: m.load_latest(), args.repeats
            )
            assert np.array_equal(loaded.frames, replay.frames) and np.array_equal(
                loaded.visits, replay.visits
            )
            record(f"load (chunk {chunk})", seconds, 0, folder_bytes(folder))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    info = {"steps": args.steps, "interval": args.interval, "preset": args.preset, "parameters": params}
    if args.json:
        print(json.dumps({**info, "results": rows}, indent=1))
        return
    print(
        f"{args.steps:,} replay steps, previous checkpoint {args.interval:,} steps earlier, "
        f"{args.preset} agent ({params / 1e6:.1f}M parameters); median of {args.repeats}"
    )
    print(f"{'variant':<32}{'seconds':>9}{'written MB':>12}{'on disk MB':>12}")
    for r in rows:
        print(f"{r['variant']:<32}{r['seconds']:>9.2f}{r['written_mb']:>12.1f}{r['on_disk_mb']:>12.1f}")


def _prefix(replay: ReplayBuffer, steps: int) -> ReplayBuffer:
    """A buffer holding the first ``steps`` steps of ``replay`` (for writing the earlier chunks)."""
    state = replay.checkpoint_state(frames_from=0)
    state["size"] = steps
    state["arrays"] = {k: a[:steps] for k, a in state["arrays"].items()}
    state["tail_frames"] = state["tail_frames"][:steps]
    return ReplayBuffer.from_checkpoint_state(state, [])


if __name__ == "__main__":
    main()
