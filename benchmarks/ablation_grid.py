"""Ablation grid: MinAtar game x seed x setting, run two at a time, one table and one figure of curves.

    python benchmarks/ablation_grid.py run --games space_invaders,breakout --seeds 0,1,2 \\
        --settings plus,plus-no-twohot-reward,dqn [--parallel 2] [--root runs/plus-grid] \\
        [--results benchmarks/results/plus-grid]
    python benchmarks/ablation_grid.py report [--results ...] [--out-md table.md] [--out-png curves.png]
    python benchmarks/ablation_grid.py settings          # the settings and what each changes

A setting is a twm preset plus ``--set`` overrides (``SETTINGS`` below: ``plus`` and ``plus`` with one
mechanism switched off at a time, the ``minatar`` and ``cpu`` presets), or ``dqn``: Stable-Baselines3
DQN through ``benchmarks/baseline_model_free.py`` with the MinAtar paper's settings. Every run uses
``minatar/<game>`` with sticky actions 0.1 and 100k interactions (the presets' run block: 30 final
evaluation episodes), one torch thread (OMP_NUM_THREADS=1), ``--parallel`` runs at a time.

Resuming. Each twm run has its folder ``ROOT/<game>/<setting>-s<seed>``; a run whose folder holds a
checkpoint continues with ``twm train --resume``, so stopping this script (or the machine) and
starting it again loses at most a checkpoint interval (10k interactions) per run. When a run
finishes its results are copied to ``RESULTS/<game>/<setting>-s<seed>/`` (``final.json``,
``metrics.jsonl``, ``config.yaml``), which is meant to be committed: a job whose results are there is
never run again, so a grid spread over several sessions (on machines that do not keep ``runs/``)
redoes only the runs that had not finished. DQN runs write their JSON straight into RESULTS.

``report`` reads RESULTS only: a markdown table of final scores (each seed, the seed mean, x random),
then, once ablation runs (``plus-no-*``, ``plus-paper-*``) are there, a table of each one against
`plus` on the same game and seed, and one panel per game with the evaluation curves (each seed
thin, the seed mean thick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / "runs" / "plus-grid"
DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "plus-grid"
GAMES = ["asterix", "breakout", "freeway", "seaquest", "space_invaders"]

# The paper's actor objective: the entropy hinge with its weight (with return_norm off, advantages
# are unscaled, as in the paper).
_PAPER_ACTOR = ["actor_critic.return_norm=none", "actor_critic.entropy=hinge", "actor_critic.entropy_coef=0.01"]

# name -> (preset, overrides). "dqn" is handled apart.
# Until 2026-12-06 (fourth session) the presets ran the update eagerly; runs made then are kept
# under names that say so. The same losses and update rule, another random draw (docs/speed.md).
_EAGER = ["train.capture=false", "actor_critic.fresh_pool=0", "train.optimizer_impl=fused"]
# The second `plus` (2026-12-06, second session): today's without the dynamics gradient into the
# encoder, eager. Its runs and the experiments made on it are kept under these names.
_PLUS_V2 = [*_EAGER, "dynamics.encoder_grad=0"]
# The first `plus` (2026-12-06, first session): the second with 1% uniform mixing in the latents
# and torch.multinomial drawing them.
_PLUS_V1 = [*_PLUS_V2, "obs_model.unimix=0.01", "obs_model.sampler=multinomial"]

SETTINGS: dict[str, tuple[str, list[str]]] = {
    "plus": ("plus", []),
    # The ablation: plus with each mechanism off in turn.
    "plus-no-encoder-grad": ("plus", ["dynamics.encoder_grad=0"]),
    "plus-no-twohot-reward": ("plus", ["dynamics.reward_head=gaussian"]),
    "plus-no-twohot-critic": ("plus", ["actor_critic.critic=gaussian"]),
    "plus-no-slow-critic": ("plus", ["actor_critic.slow_critic_rate=0"]),
    "plus-no-return-norm": ("plus", _PAPER_ACTOR),
    "plus-no-unimix": ("plus", ["actor_critic.unimix=0"]),
    "plus-paper-critic-lr": ("plus", ["actor_critic.critic_lr=1e-5"]),
    "plus-latent-unimix": ("plus", ["obs_model.unimix=0.01"]),
    # Candidate changes: the paper's entropy hinge in place of the bonus; twice the updates per
    # interaction over half the interactions (same minutes; compare with plus's first 50k).
    "plus-hinge-entropy": ("plus", ["actor_critic.entropy=hinge", "actor_critic.entropy_coef=0.01"]),
    "plus-2x-ratio-50k": ("plus", ["train.total_steps=50000"]),
    # Actor and critic reading the transformer's h_{t-1} beside z_t (STORM's inputs): acting in the
    # game then runs the transformer too (7.6 against 2.1 ms per real step, docs/speed.md).
    "plus-zh": ("plus", ["actor_critic.inputs=zh"]),
    # The game's 10x10 state instead of its 64x64 picture: grid nets and a Bernoulli decoder.
    "plus-grid": ("plus", ["env.observation=grid"]),
    # Advantages divided by max(0.01, S) instead of max(1, S): on Freeway the imagined returns spread
    # over about 0.01 before a run takes off, and the floor of 1 left advantages of 0.001 against a
    # 3e-4 entropy bonus (a near-uniform policy whose mode crossed the road; docs/results.md).
    "plus-return-floor-0.01": ("plus", ["actor_critic.return_norm_floor=0.01"]),
    # World-model sequences drawn by expected visits at the paper's 131.6 draws per interaction
    # (100 sequences every 0.76 interactions): at 8 per 10.6 the real visit counts stay near 0 and
    # the paper's rule samples uniformly, where the paper draws most sequences from the newest data.
    "plus-visit-rate": ("plus", ["replay.visit_rate=131.6"]),
    # A weaker preference for new data: late in a run 19 % of the sequences from the newest 5 % of
    # the steps instead of 63 % (benchmarks/replay_recency.py's buffer; uniform: 5 %). With 131.6
    # Breakout seed 0's world model lost the ball while its policy was still poor.
    "plus-visit-rate-40": ("plus", ["replay.visit_rate=40"]),
    # Twice the imagined rollouts per update (128 starts, every position of the world-model batch,
    # instead of 64), the budget raised to keep 9,000 updates: the paper imagines 400 x 15 steps
    # per update, DreamerV3 and STORM about 1,000 x 15; the CPU presets 64 x 10. 1.26x per update
    # (bench_variants, eager, beside two runs). Space Invaders seed 0: 12.17 in 52.2 min; dropped.
    "plus-starts-128": (
        "plus",
        ["actor_critic.num_starts=128", "actor_critic.fresh_pool=128", "train.budget=12772000"],
    ),
    # 1.5x the updates per interaction (13,500 instead of 9,000: one per 7.0 interactions; the
    # paper's is one per 0.76): a run on the AMD EPYC takes about 28 minutes with 9,000.
    "plus-updates-1.5x": ("plus", ["train.budget=10468000"]),
    # Ten times the reward loss's weight (dynamics.reward_coef 100 instead of the paper's 10): in
    # `plus` the two-hot reward term is under 1 % of Asterix's dynamics loss (0.04 x 10 against a
    # next-latent loss of 50), 6 % of Space Invaders', so the gradient the encoder gets from the
    # dynamics hardly asks it to keep what predicts rewards (benchmarks/reward_refit.py: Asterix's
    # states rank its rewarded steps with AUC 0.72, Space Invaders' 0.92). Space Invaders seed 0:
    # AUC 0.994, yet 7.97 (imagined latents, not the reward head, limit what the policy learns).
    "plus-reward-coef-100": ("plus", ["dynamics.reward_coef=100"]),
    # Reward head and critic read as the mean over bins at symexp of the points (DreamerV3's released
    # code): the symlog reading shrinks random rewards and returns (1 with chance 0.1 reads 0.072).
    "plus-symexp-bins": ("plus", ["dynamics.reward_bins=symexp", "actor_critic.critic_bins=symexp"]),
    # Half of the latents the dynamics model reads in training replaced by samples of its own one-step
    # prediction (scheduled sampling): imagination's shortfall on Space Invaders is there from the
    # first imagined latent (world_model_probe's per-step lines), which the teacher-forced model never reads.
    "plus-imagined-inputs-0.5": ("plus", ["dynamics.imagined_inputs=0.5"]),
    # Both fixes of imagination's shortfall on Space Invaders: the symexp reading (the teacher-forced
    # model's symlog shrinkage) and the imagined inputs (the drop at the first imagined latent).
    "plus-imagined-symexp": (
        "plus",
        ["dynamics.imagined_inputs=0.5", "dynamics.reward_bins=symexp", "actor_critic.critic_bins=symexp"],
    ),
    # The decoder's loss counted 10 times on the pixels that change within the frame stack: Space
    # Invaders' `plus` agents die by an alien's bullet in 28-30 games of 30, and their latents decode
    # 10 % of the bullets' cells (aliens 93-95 %, the cannon 90 %); the policy fires on while a
    # bullet falls onto it. Moved pixels are about 4 % of a frame (world_model_probe).
    "plus-moved-10": ("plus", ["obs_model.moved_weight=10"]),
    # With the bullets seen, seeds 0 and 1 of plus-moved-10 learned to step aside as a bullet falls,
    # but at 40k-50k both sat at the left wall and stepped "left" into it: RIGHT had fallen to the
    # policy mixing's floor (0.25 % of 4 actions), so it was neither played nor imagined. Five times
    # the policy mixing keeps every action at 1.25 % or more.
    "plus-moved-10-policy-mix-0.05": ("plus", ["obs_model.moved_weight=10", "actor_critic.unimix=0.05"]),
    # A quarter of each world-model batch (2 of 8 sequences) drawn among windows that hold a reward.
    "plus-rewarded-share": ("plus", ["replay.rewarded_share=0.25"]),
    # Actor and critic start again from new weights every 25k interactions, then 500 policy-only
    # updates (a policy refitted from scratch in Breakout's final world model passed the 3 bricks
    # its run's collapsed policy stopped at; docs/results.md).
    "plus-ac-reset": ("plus", ["actor_critic.reset_every=25000", "actor_critic.reset_updates=500"]),
    # plus as it ran before its update was captured (issue 28): the same method, another draw; the
    # runs of the first three games' seed 0 (the learning check of capture against today's plus).
    "plus-eager": ("plus", _EAGER),
    "plus-v2": ("plus", _PLUS_V2),
    # Experiments on the second plus (Space Invaders, where its policy plateaued at 10-12): ten
    # times the entropy bonus; the critic also learning the real returns of the world-model batch
    # (DreamerV3's replay value loss, its weight).
    "plus-v2-entropy-3e-3": ("plus", [*_PLUS_V2, "actor_critic.entropy_coef=3e-3"]),
    "plus-v2-replay-value": ("plus", [*_PLUS_V2, "actor_critic.replay_value_coef=0.3"]),
    # The first plus and its ablations (see _PLUS_V1). plus-v1-no-latent-unimix is plus-v2 but for
    # the latent sampler (another draw of the same distribution): the Breakout run.
    "plus-v1": ("plus", _PLUS_V1),
    "plus-v1-no-return-norm": ("plus", [*_PLUS_V1, *_PAPER_ACTOR]),
    "plus-v1-no-latent-unimix": ("plus", [*_PLUS_V2, "obs_model.sampler=multinomial"]),
    "plus-v1-2x-ratio-50k": ("plus", [*_PLUS_V1, "train.total_steps=50000"]),
    # The smaller presets, captured (their default) and as they ran before capture (issue 28's
    # before and after, and its learning check).
    "minatar": ("minatar", []),
    "cpu": ("cpu", []),
    "minatar-eager": ("minatar", _EAGER),
    "cpu-eager": ("cpu", _EAGER),
}
DQN = "dqn"


@dataclass(frozen=True)
class Job:
    game: str
    setting: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting}-s{self.seed}"

    def run_dir(self, root: Path) -> Path:
        return root / self.game / self.name

    def result_dir(self, results: Path) -> Path:
        return results / self.game / self.name

    def done(self, results: Path) -> bool:
        if self.setting == DQN:
            return (results / self.game / f"{self.name}.json").exists()
        return (self.result_dir(results) / "final.json").exists()


def twm_command(job: Job, root: Path) -> list[str]:
    """``twm train`` for a new run, or ``--resume`` for a folder that holds a checkpoint."""
    twm = [sys.executable, "-m", "twm.cli", "train"]
    run_dir = job.run_dir(root)
    if any((run_dir / "checkpoints").glob("step_*.pt")) or (run_dir / "checkpoints" / "final.pt").exists():
        return [*twm, "--resume", str(run_dir), "--no-progress"]
    preset, overrides = SETTINGS[job.setting]
    command = [*twm, "--game", f"minatar/{job.game}", "--preset", preset, "--seed", str(job.seed)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    return command


def dqn_command(job: Job, results: Path) -> list[str]:
    script = REPO / "benchmarks" / "baseline_model_free.py"
    out = results / job.game / f"{job.name}.json"
    return [
        sys.executable, str(script), "--game", job.game, "--algo", "dqn", "--steps", "100000",
        "--seed", str(job.seed), "--sticky", "0.1", "--eval-interval", "5000", "--eval-episodes", "10",
        "--final-episodes", "30", "--threads", "1", "--out", str(out),
    ]  # fmt: skip


def collect(job: Job, root: Path, results: Path) -> None:
    """Copy a finished run's final.json, metrics.jsonl and config.yaml into RESULTS."""
    run_dir, out = job.run_dir(root), job.result_dir(results)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "config.yaml"):
        shutil.copy2(run_dir / name, out / name)
    shutil.copy2(run_dir / "eval" / "final.json", out / "final.json")  # last: it marks the job done


def run_job(job: Job, root: Path, results: Path) -> str:
    log = root / job.game / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    run_dir = job.run_dir(root)
    start = time.time()
    if job.setting == DQN:
        command = dqn_command(job, results)
    elif (run_dir / "eval" / "final.json").exists():  # finished, not yet collected
        command = []
    else:
        command = twm_command(job, root)
    if command:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        if code != 0:
            return f"{job.game} {job.name}: exit {code} after {(time.time() - start) / 60:.1f} min (log {log})"
    if job.setting != DQN:
        collect(job, root, results)
    return f"{job.game} {job.name}: done in {(time.time() - start) / 60:.1f} min"


def jobs(games: list[str], seeds: list[int], settings: list[str]) -> Iterator[Job]:
    # Seeds outermost, so that a grid stopped half-way has whole seeds of every setting.
    for seed in seeds:
        for game in games:
            for setting in settings:
                yield Job(game, setting, seed)


# --------------------------------------------------------------------------------------- report


def twm_curve(result_dir: Path) -> tuple[list[tuple[int, float]], dict]:
    points = []
    for line in (result_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval/mean_score" in record:
            points.append((int(record["step"]), float(record["eval/mean_score"])))
    final = json.loads((result_dir / "final.json").read_text())
    return points, final


def load_results(results: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """game -> setting -> seed -> {"final": mean, "std", "curve": [(step, score)], "minutes"}."""
    table: dict[str, dict[str, dict[int, dict]]] = {}
    for game_dir in sorted(p for p in results.iterdir() if p.is_dir()):
        for entry in sorted(game_dir.iterdir()):
            stem = entry.name[: -len(".json")] if entry.suffix == ".json" else entry.name
            setting, _, seed = stem.rpartition("-s")
            if entry.is_dir() and (entry / "final.json").exists():
                curve, final = twm_curve(entry)
                row = {
                    "final": final["mean"],
                    "std": final["std"],
                    "curve": curve,
                    "minutes": final.get("wall_time_s", 0) / 60,
                }
            elif entry.suffix == ".json":
                data = json.loads(entry.read_text())
                curve = [(p["step"], p["score"]) for p in data["curve"] if not p.get("final")]
                curve.append((data["steps_done"], data["final"]["mean"]))
                row = {"final": data["final"]["mean"], "std": data["final"]["std"], "curve": curve,
                       "minutes": data["minutes"]}  # fmt: skip
            else:
                continue
            table.setdefault(game_dir.name, {}).setdefault(setting, {})[int(seed)] = row
    return table


def markdown(table: dict[str, dict[str, dict[int, dict]]]) -> str:
    from twm.games import random_score

    lines = [
        "| game | setting | seeds | final score per seed (30 ep.) | seed mean | x random | minutes per run (fastest-slowest) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for game, settings in table.items():
        rand = random_score(f"minatar/{game}")
        for setting, seeds in sorted(settings.items(), key=lambda kv: (kv[0] != "plus", kv[0])):
            finals = [seeds[s]["final"] for s in sorted(seeds)]
            mean = sum(finals) / len(finals)
            per_seed = ", ".join(f"s{s}: {seeds[s]['final']:.2f}" for s in sorted(seeds))
            minutes = sorted(seeds[s]["minutes"] for s in seeds)
            # The fewest and the most (the limit is per run; the machines differ).
            span = f"{minutes[0]:.1f}" if len(minutes) == 1 else f"{minutes[0]:.1f}-{minutes[-1]:.1f}"
            ratio = f"{mean / rand:.2f}" if rand and rand > 0 else "-"
            lines.append(
                f"| {game} | {setting} | {len(finals)} | {per_seed} | {mean:.2f} | {ratio} | "
                f"{span} |"
            )
    return "\n".join(lines) + "\n"


# The ablation: plus with one mechanism off (or back to the paper's value), compared on the same seed.
ABLATION_PREFIXES = ("plus-no-", "plus-paper-")


def ablation_markdown(table: dict[str, dict[str, dict[int, dict]]]) -> str:
    """One row per game, seed and ablated setting that has a `plus` run of the same seed: its score,
    the change from `plus` (negative: the mechanism helped there) and what the setting changes.
    Empty when no ablation run is in RESULTS."""
    lines = []
    for game, settings in table.items():
        plus = settings.get("plus", {})
        for setting in sorted(s for s in settings if s.startswith(ABLATION_PREFIXES)):
            for seed in sorted(set(settings[setting]) & set(plus)):
                score, base = settings[setting][seed]["final"], plus[seed]["final"]
                change = " ".join(f"`{o}`" for o in SETTINGS[setting][1]) if setting in SETTINGS else "?"
                lines.append(f"| {game} | {seed} | {setting} | {score:.2f} | {base:.2f} | {score - base:+.2f} | {change} |")
    if not lines:
        return ""
    head = [
        "| game | seed | setting | score | `plus`, same seed | change | what it sets |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    return "\n".join(head + lines) + "\n"


def plot(table: dict[str, dict[str, dict[int, dict]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from twm.games import random_score

    games = list(table)
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.6), squeeze=False)
    colours: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, game in zip(axes[0], games, strict=True):
        for setting, seeds in sorted(table[game].items()):
            colour = colours.setdefault(setting, palette[len(colours) % len(palette)])
            curves = [seeds[s]["curve"] for s in sorted(seeds)]
            for curve in curves:
                ax.plot(*zip(*curve, strict=True), color=colour, alpha=0.3, lw=0.8)
            steps = sorted(set.intersection(*(set(x for x, _ in c) for c in curves)))
            means = [sum(dict(c)[x] for c in curves) / len(curves) for x in steps]
            ax.plot(steps, means, color=colour, lw=2, label=f"{setting} ({len(curves)})")
        rand = random_score(f"minatar/{game}")
        if rand is not None:
            ax.axhline(rand, color="grey", ls=":", lw=1, label="random")
        ax.set_title(f"minatar/{game}")
        ax.set_xlabel("interactions")
        ax.set_ylabel("evaluation return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


# --------------------------------------------------------------------------------------- main


def split(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) every job of the grid not yet in RESULTS")
    run.add_argument("--games", default="space_invaders", help=f"comma-separated, of {', '.join(GAMES)}")
    run.add_argument("--seeds", default="0", help="comma-separated seeds")
    run.add_argument("--settings", default="plus", help="comma-separated, of the 'settings' command and dqn")
    run.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    run.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="run folders")
    run.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="finished runs (commit these)")
    report = sub.add_parser("report", help="table and curves of RESULTS")
    report.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    report.add_argument("--out-md", type=Path, default=None, help="also write the table here")
    report.add_argument("--out-png", type=Path, default=None, help="the figure of curves")
    sub.add_parser("settings", help="list the settings")
    args = parser.parse_args(argv)

    if args.command == "settings":
        for name, (preset, overrides) in SETTINGS.items():
            print(f"{name:24s} --preset {preset} {' '.join('--set ' + o for o in overrides)}")
        print(f"{DQN:24s} benchmarks/baseline_model_free.py --algo dqn (SB3, the MinAtar paper's DQN)")
        return 0
    if args.command == "report":
        table = load_results(args.results)
        text = markdown(table)
        if ablation := ablation_markdown(table):
            text += "\n" + ablation
        print(text, end="")
        if args.out_md:
            args.out_md.write_text(text)
        if args.out_png:
            plot(table, args.out_png)
        return 0

    games, settings = split(args.games), split(args.settings)
    unknown = [g for g in games if g not in GAMES] + [s for s in settings if s not in SETTINGS and s != DQN]
    if unknown:
        parser.error(f"unknown game or setting: {', '.join(unknown)} (see the 'settings' command)")
    try:
        seeds = [int(s) for s in split(args.seeds)]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    todo = [job for job in jobs(games, seeds, settings) if not job.done(args.results)]
    print(f"{len(todo)} runs to do, {args.parallel} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for message in pool.map(lambda job: run_job(job, args.root, args.results), todo):
            print(message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
