"""``twm bench``: where the time of one update goes, how many FLOPs it does, and how close to the
machine's matrix-multiply peak it runs.

One update (``Learner.update``) is timed in its three parts on synthetic data (random frames, actions,
rewards and a few episode ends; the networks' arithmetic does not depend on the values):

- ``world_model``:  observation model + dynamics model, forward, backward, Adam;
- ``imagination``:  start pairs, ``horizon`` steps of actor + Transformer-XL with its memory, fresh
  starts after imagined episode ends;
- ``actor_critic``: λ-returns, critic and actor losses, backward and steps.

Each part is the median over ``updates`` timed updates after ``warmup`` untimed ones (on CUDA the
device is synchronised around each part); ``total`` is the median of the per-update sums. FLOPs are
counted analytically (``twm.perf.flops``), the peak is measured here with a short large-matmul loop in
float32 and bfloat16, and the environment's speed with a short run of the real game.
"""

from __future__ import annotations

import contextlib
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from twm.agent import Agent
from twm.allocator import keep_freed_memory
from twm.captured import COMPILING_UPDATES
from twm.config import Config
from twm.models.batch import TorchSequenceBatch
from twm.perf.flops import update_flops
from twm.perf.op_count import CountOps, OpCounts
from twm.replay import SequenceBatch
from twm.seeding import torch_generator
from twm.update import Learner

PARTS = ("world_model", "imagination", "actor_critic")


# --------------------------------------------------------------------------------------- data


def random_frames(rng: np.random.Generator, cfg: Config, lead: tuple[int, ...]) -> np.ndarray:
    """Random observations (*lead, S, H, W) as the run's env gives them: uint8 pictures or float32 vectors."""
    shape = (*lead, cfg.image_channels, cfg.frame_size, cfg.frame_size)
    if cfg.env.float_frames:
        return rng.normal(size=shape).astype(np.float32)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def synthetic_batch(
    cfg: Config, num_actions: int, device: torch.device | str, seed: int = 0
) -> TorchSequenceBatch:
    """A replay batch of random data with the config's shapes (2% of steps end an episode)."""
    rng = np.random.default_rng(seed)
    B, T = cfg.replay.batch_size, cfg.replay.sequence_length
    terminated = rng.random((B, T + 1)) < 0.02
    batch = SequenceBatch(
        obs=random_frames(rng, cfg, (B, T + 2)),
        actions=rng.integers(0, num_actions, size=(B, T + 1)),
        rewards=np.tanh(rng.normal(size=(B, T + 1))).astype(np.float32),
        terminated=terminated,
        truncated=np.zeros_like(terminated),
        starts=np.arange(B),
    )
    return TorchSequenceBatch.from_numpy(batch, device)


def synthetic_obs_sampler(cfg: Config, device: torch.device, seed: int = 1) -> Callable[[int], torch.Tensor]:
    """``sample_start_obs`` for fresh starts in imagination: random frames on the device."""
    gen = torch_generator(seed)

    def sample(n: int) -> torch.Tensor:
        shape = (n, cfg.image_channels, cfg.frame_size, cfg.frame_size)
        if cfg.env.float_frames:
            return torch.randn(shape, generator=gen).to(device)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(device)

    return sample


# --------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class UpdateTimes:
    """Seconds of each timed update, by part, and the fresh starts each rollout needed."""

    parts: dict[str, list[float]]
    fresh_starts: list[int]

    @property
    def totals(self) -> list[float]:
        return [sum(p) for p in zip(*(self.parts[k] for k in PARTS), strict=True)]

    def medians(self) -> dict[str, float]:
        out = {k: statistics.median(v) for k, v in self.parts.items()}
        out["total"] = statistics.median(self.totals)
        return out


def time_update(
    learner: Learner,
    batch: TorchSequenceBatch,
    sample_obs: Callable[[int], torch.Tensor],
    generator: torch.Generator | None,
) -> tuple[dict[str, float], torch.Tensor]:
    """One update, part by part: (seconds of each part, number of imagined episode ends)."""
    device = learner.agent.device
    ends: list[float] = []  # when each part ended, the device synchronised

    def part_ended(part: str, _: float) -> None:
        _sync(device)
        ends.append(time.perf_counter())

    _sync(device)
    start = time.perf_counter()
    metrics = learner.update(batch, sample_obs, generator, on_part=part_ended)
    seconds = [end - before for before, end in zip([start, *ends], ends, strict=False)]
    return dict(zip(PARTS, seconds, strict=True)), metrics["ac/imagined_dones"]


def interleaved_medians(
    runs: dict[str, tuple[Learner, TorchSequenceBatch, Callable[[int], torch.Tensor], torch.Generator | None]],
    updates: int,
) -> dict[str, dict[str, float]]:
    """Median seconds per part and in total of several agents' updates, taken in turns (one update of
    each per round), so load from other processes hits all of them alike."""
    times: dict[str, dict[str, list[float]]] = {name: {p: [] for p in (*PARTS, "total")} for name in runs}
    for _ in range(updates):
        for name, run in runs.items():
            seconds, _ = time_update(*run)
            for part in PARTS:
                times[name][part].append(seconds[part])
            times[name]["total"].append(sum(seconds.values()))
    return {name: {p: statistics.median(v) for p, v in parts.items()} for name, parts in times.items()}


def update_generator(learner: Learner, seed: int) -> torch.Generator | None:
    """The update's generator: a seeded one, or None for a captured update (global generator)."""
    if learner.captured is not None:
        torch.manual_seed(seed)
        return None
    return torch_generator(seed, learner.agent.device)


def time_updates(
    learner: Learner,
    batch: TorchSequenceBatch,
    sample_obs: Callable[[int], torch.Tensor],
    updates: int,
    warmup: int = 1,
    seed: int = 0,
) -> UpdateTimes:
    """Run ``warmup`` + ``updates`` updates part by part; time the last ``updates``."""
    gen = update_generator(learner, seed)
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    dones = []
    for i in range(warmup + updates):
        seconds, ends = time_update(learner, batch, sample_obs, gen)
        if i >= warmup:
            for key in PARTS:
                parts[key].append(seconds[key])
            dones.append(ends)
    return UpdateTimes(parts, [int(d) for d in dones])


def count_update(
    learner: Learner,
    batch: TorchSequenceBatch,
    sample_obs: Callable[[int], torch.Tensor],
    generator: torch.Generator | None,
) -> dict[str, OpCounts]:
    """What one update dispatches, part by part (``twm.perf.op_count``), plus the total."""
    counts: dict[str, OpCounts] = {}
    with CountOps() as counter:

        def part_ended(part: str, _: float) -> None:  # the next part counts afresh
            counts[part], counter.counts = counter.counts, OpCounts()

        learner.update(batch, sample_obs, generator, on_part=part_ended)
    counts["total"] = counts["world_model"] + counts["imagination"] + counts["actor_critic"]
    return counts


# --------------------------------------------------------------------------------------- peak


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of square matrix products on this device (the best of ``a @ b`` and ``F.linear``).

    The size grows from 256 until one product takes 20 ms (at most 4096 on a CPU, 8192 on a GPU),
    then each variant runs for about ``seconds / 2``.
    """
    limit = 8192 if device.type == "cuda" else 4096
    gen = torch_generator(0, device)
    best = 0.0
    for variant in ("mm", "linear"):
        n = 256
        while True:
            a = torch.randn(n, n, device=device, generator=gen).to(dtype)
            b = torch.randn(n, n, device=device, generator=gen).to(dtype)

            def product(a: torch.Tensor = a, b: torch.Tensor = b, mm: bool = variant == "mm") -> torch.Tensor:
                return a @ b if mm else F.linear(a, b)

            product()
            _sync(device)
            t = time.perf_counter()
            product()
            _sync(device)
            once = time.perf_counter() - t
            if once >= 0.02 or n >= limit:
                break
            n *= 2
        count, start = 0, time.perf_counter()
        while True:
            product()
            count += 1
            if count % 4 == 0 or device.type != "cuda":
                _sync(device)
                if time.perf_counter() - start >= seconds / 2:
                    break
        _sync(device)
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * n**3 * count / elapsed)
    return best


# --------------------------------------------------------------------------------------- env


def env_steps_per_second(cfg: Config, steps: int, seed: int = 0) -> float:
    """Agent steps per second of the real game (train mode, random actions, resets included)."""
    from twm.envs import make_env

    env = make_env(cfg.env, mode="train", seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(env.num_actions, size=steps)
    try:
        env.reset()
        start = time.perf_counter()
        for a in actions:
            _, _, terminated, truncated, _ = env.step(int(a))
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


@torch.no_grad()
def acting_seconds_per_step(agent: Agent, cfg: Config, steps: int = 200, seed: int = 0) -> float:
    """Median seconds of ``Agent.act`` for one real game (what each interaction of a run costs on top
    of the env step): the encoder and the actor, and with ``actor_critic.inputs`` 'zh' also one
    step of the transformer with its memory (``twm.acting``)."""
    gen = np.random.default_rng(seed)
    obs = random_frames(gen, cfg, (steps, 1))
    memory = agent.acting_memory(1)
    act_gen = torch_generator(seed, agent.device)
    times = []
    for t in range(steps):
        start = time.perf_counter()
        agent.act(obs[t], act_gen, memory)
        times.append(time.perf_counter() - start)
        if memory is not None:
            memory.record([0.0], [t % 50 == 49])
    return statistics.median(times[steps // 10 :])


# --------------------------------------------------------------------------------------- memory


def _peak_rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if platform.system() == "Darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Peak memory of the code inside: CUDA max_memory_allocated, or the growth of the peak RSS."""
    info: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield info
        info["bytes"] = torch.cuda.max_memory_allocated(device)
        info["kind"] = "cuda max_memory_allocated"
    else:
        before = _peak_rss_bytes()
        yield info
        info["bytes"] = _peak_rss_bytes() - before
        info["kind"] = "growth of the process peak RSS (getrusage ru_maxrss)"
        info["process_peak_bytes"] = _peak_rss_bytes()


# --------------------------------------------------------------------------------------- bench


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):  # noqa: SIM115
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def switches(cfg: Config) -> dict[str, Any]:
    """The speed switches of a config (what ``twm bench`` compares)."""
    return {
        "obs_model.fast_convs": cfg.obs_model.fast_convs,
        "dynamics.kv_cache": cfg.dynamics.kv_cache,
        "dynamics.attention": cfg.dynamics.attention,
        "train.precision": cfg.train.precision,
        "train.compile": cfg.train.compile,
        "train.capture": cfg.train.capture,
        "train.keep_freed_memory": cfg.train.keep_freed_memory,
        # Not a speed switch, but what acting in the real game costs depends on it.
        "actor_critic.inputs": cfg.actor_critic.inputs,
    }


def run_bench(
    cfg: Config,
    device: torch.device,
    updates: int = 3,
    warmup: int = 1,
    env_steps: int = 1000,
    peak_seconds: float = 1.0,
    num_actions: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything ``twm bench`` prints, as one JSON-serialisable dict."""
    if num_actions is None:
        from twm.perf.info import num_actions_of

        num_actions = num_actions_of(cfg)
    if cfg.train.capture:
        warmup = max(warmup, COMPILING_UPDATES)  # the untimed updates compile
    if cfg.train.keep_freed_memory:
        keep_freed_memory()
    with peak_memory(device) as memory:
        torch.manual_seed(seed)
        learner = Learner(Agent(cfg, num_actions).to(device))
        batch = synthetic_batch(cfg, num_actions, device, seed)
        sample_obs = synthetic_obs_sampler(cfg, device)
        times = time_updates(learner, batch, sample_obs, updates, warmup, seed)
        # One more update under the dispatch counter (after the timed ones: counting slows it down).
        # Compiled code cannot run under a dispatch mode: a captured update counts its regions.
        dispatch: dict[str, Any] | None = None
        regions: int | None = None
        if learner.captured is None:
            op_counts = count_update(learner, batch, sample_obs, update_generator(learner, seed + 1))
            dispatch = {k: c.summary(top=8 if k == "total" else 0) for k, c in op_counts.items()}
        else:
            before = learner.captured.region_calls
            learner.update(batch, sample_obs, update_generator(learner, seed + 1))
            regions = learner.captured.region_calls - before
    medians = times.medians()
    fresh = round(statistics.mean(times.fresh_starts))
    flops = update_flops(cfg, num_actions, fresh_starts=fresh)
    flop_parts = {k: t.total for k, t in flops.items()}
    flop_parts["total"] = sum(flop_parts.values())
    by_layer: dict[str, float] = {}
    for tally in flops.values():
        for name, value in tally.items.items():
            by_layer[name] = by_layer.get(name, 0.0) + value

    peaks = {}
    if peak_seconds > 0:
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            peaks[name] = matmul_peak(device, dtype, peak_seconds)
    achieved = flop_parts["total"] / medians["total"]
    result: dict[str, Any] = {
        "game": cfg.env.game,
        "num_actions": num_actions,
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "switches": switches(cfg),
        "shapes": {
            "batch": [cfg.replay.batch_size, cfg.replay.sequence_length],
            "imagination": [cfg.actor_critic.num_starts, cfg.actor_critic.horizon],
            "memory_steps": cfg.dynamics.memory_steps,
        },
        "updates": updates,
        "warmup": warmup,
        "seconds": medians,
        "seconds_all": {**{k: [round(s, 4) for s in v] for k, v in times.parts.items()}},
        "fresh_starts": fresh,
        "dispatch": dispatch,
        "captured_regions_per_update": regions,
        "flops": flop_parts,
        "flops_by_layer": by_layer,
        "achieved_flops_per_second": achieved,
        "memory": memory,
    }
    if peaks:
        result["matmul_peak_flops_per_second"] = peaks
        result["fraction_of_peak"] = achieved / peaks[cfg.train.precision]
    result["acting_seconds_per_step"] = acting_seconds_per_step(learner.agent, cfg, seed=seed)
    if env_steps > 0:
        result["env_steps_per_second"] = env_steps_per_second(cfg, env_steps, seed)
    return result


# --------------------------------------------------------------------------------------- report


def format_report(r: dict[str, Any]) -> str:
    """The human-readable form of ``run_bench``'s result."""
    sw = ", ".join(f"{k}={v}" for k, v in r["switches"].items())
    B, T = r["shapes"]["batch"]
    S, H = r["shapes"]["imagination"]
    lines = [
        f"twm bench: {r['game']} ({r['num_actions']} actions) on {r['device']} ({r['device_name']}), "
        f"torch {r['torch']}, {r['threads']} threads",
        f"  switches: {sw}",
        f"  one update = world model on {B} x {T} steps + imagination {S} x {H} steps + actor-critic; "
        f"median of {r['updates']} updates after {r['warmup']} warm-up",
        "",
        f"  {'part':<14}{'seconds':>10}{'GFLOP':>12}{'GFLOP/s':>10}"
        + ("" if r["dispatch"] is None else f"{'ops':>9}{'launching':>11}{'syncs':>7}"),
    ]
    dispatch = r["dispatch"]
    for part in (*PARTS, "total"):
        s, f = r["seconds"][part], r["flops"][part]
        counts = "" if dispatch is None else (
            f"{dispatch[part]['ops']:>9}{dispatch[part]['launching']:>11}{dispatch[part]['syncs']:>7}"
        )
        lines.append(f"  {part:<14}{s:>10.3f}{f / 1e9:>12.1f}{f / 1e9 / s:>10.1f}{counts}")
    lines.append(
        f"  (FLOPs counted analytically, forward + backward; imagination includes {r['fresh_starts']} "
        "fresh-start encodings)"
    )
    if dispatch is None:
        lines.append(
            f"  (captured update: {r['captured_regions_per_update']} compiled regions per update, backward "
            "passes included; ATen operators are not counted, since compiled code cannot run under a "
            "dispatch counter)"
        )
    else:
        lines.append(
            "  (ops: ATen operators dispatched in one more update, forward and backward; launching: all "
            "but views and allocations; syncs: host waits such as .item())"
        )
        top = dispatch["total"].get("top_launching", {})
        if top:
            lines.append("  most launched: " + ", ".join(f"{k} {v}" for k, v in top.items()))
        syncs = dispatch["total"].get("sync_ops", {})
        if syncs:
            lines.append("  host syncs by operator: " + ", ".join(f"{k} {v}" for k, v in syncs.items()))
    layer = sorted(r["flops_by_layer"].items(), key=lambda kv: -kv[1])
    lines.append("  FLOPs by layer kind: " + ", ".join(f"{k} {v / 1e9:.1f}G" for k, v in layer))
    peaks = r.get("matmul_peak_flops_per_second")
    if peaks:
        lines.append(
            f"  matmul peak of this machine: float32 {peaks['float32'] / 1e9:.1f} GFLOP/s, "
            f"bfloat16 {peaks['bfloat16'] / 1e9:.1f} GFLOP/s; the update reaches "
            f"{100 * r['fraction_of_peak']:.1f}% of the {r['switches']['train.precision']} peak"
        )
    mem = r["memory"]
    lines.append(f"  peak memory: {mem['bytes'] / 2**20:.0f} MiB, {mem['kind']}")
    if "acting_seconds_per_step" in r:
        reads = "z and h, so the transformer steps too" if r["switches"].get("actor_critic.inputs") == "zh" else "z"
        lines.append(
            f"  acting: {1e3 * r['acting_seconds_per_step']:.2f} ms per real step for one game (the policy reads {reads})"
        )
    if "env_steps_per_second" in r:
        lines.append(
            f"  environment: {r['env_steps_per_second']:.0f} agent steps/s ({r['game']}, random actions)"
        )
    return "\n".join(lines)
