"""The ``twm`` command line's arguments: one parser, its subcommands and their shared arguments.

``twm.cli`` runs the command named by ``args.command``. Nothing here imports torch, so ``twm --help``
and argument errors are instant.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from twm.config import EVAL_POLICIES
from twm.presets import PRESET_SUMMARIES, PRESETS
from twm.version import __version__

# --------------------------------------------------------------------------------------- shared arguments


def add_device(parser: argparse.ArgumentParser, *, overrides_config: bool = False) -> None:
    """--device: where the command runs (for train and sweep: an override of ``train.device``)."""
    if overrides_config:
        parser.add_argument("--device", help="auto, cpu or cuda (overrides train.device)")
    else:
        parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def add_json(parser: argparse.ArgumentParser, what: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def add_run_dir(parser: argparse.ArgumentParser, *, checkpoint_file: bool = False) -> None:
    """The positional RUN_DIR (for dream and play it may also be a checkpoint file)."""
    what = "a folder written by 'twm train'" + (" (or a checkpoint file)" if checkpoint_file else "")
    parser.add_argument("run_dir", metavar="RUN_DIR", help=what)


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", metavar="FILE", help="checkpoint (default: RUN_DIR/checkpoints/final.pt)"
    )


def add_config_args(
    parser: argparse.ArgumentParser,
    *,
    game: bool = True,
    set_help: str = "override one config value (repeatable), e.g. --set dynamics.attention=fused",
) -> None:
    """--game, --preset, --config and --set: what ``load_config`` builds a config from."""
    if game:
        parser.add_argument(
            "--game", help="Atari 100k game, catch, minatar/<game>, crafter or gym:<id> (see 'twm games')"
        )
    parser.add_argument("--preset", default="atari100k", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--config", dest="config_file", help="YAML file with config overrides")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=set_help,
    )


def add_viz_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dream",
        help="animate the policy acting inside the world model (GIF or MP4), from real starts",
        description="Start from real frames (the run's replay buffer if saved, else the game played by "
        "the agent's policy for --warmup steps from a seeded reset), let the policy act inside the world "
        "model and write the decoded frames, captioned with the action, predicted reward and discount.",
    )
    add_run_dir(p, checkpoint_file=True)
    p.add_argument("--out", required=True, metavar="FILE.gif|FILE.mp4", help="animation to write")
    add_checkpoint(p)
    p.add_argument(
        "--horizon",
        type=bounded_int(1, MAX_DREAM_STEPS),
        default=30,
        help="dream steps (frames: horizon + 1)",
    )
    p.add_argument("--starts", type=bounded_int(1, MAX_STARTS), default=4, help="dreams side by side")
    p.add_argument("--seed", type=int, default=0, help="seed of the real starts and the sampling")
    p.add_argument(
        "--fps", type=positive_float(MAX_FPS), default=8.0, help="frames per second of the animation"
    )
    p.add_argument(
        "--warmup",
        type=bounded_int(1, MAX_DREAM_STEPS),
        default=16,
        help="real steps before each dream (its context)",
    )
    p.add_argument("--scale", type=bounded_int(1, MAX_SCALE), default=3, help="upscaling of the 64x64 frames")
    p.add_argument(
        "--source", default="auto", choices=["auto", "env", "replay"], help="where starts come from"
    )
    p.add_argument("--attention", metavar="FILE.png", help="also write the attention heat map of dream 0")
    p.add_argument(
        "--attention-step",
        type=int,
        default=-1,
        help="dream step t of the heat map (the a_t query, which predicts frame t+1); default the last",
    )
    add_device(p)

    p = sub.add_parser(
        "play",
        help="play the game inside the world model (needs pygame; --record works headless)",
        description="Play inside the world model: arrows/WASD move, space fires, nothing pressed is NOOP, "
        "P hands control to the agent's policy and back (the window's title and captions say who is in "
        "control), R restarts from a new real start, Esc quits. With --record FILE the game is played "
        "without a window and the frames written (no pygame needed): the --actions SPEC if given, else "
        "the agent's policy for --steps steps, sampled with --seed (the same seed, the same file).",
    )
    add_run_dir(p, checkpoint_file=True)
    add_checkpoint(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the real start and the sampling (R: the next seeds)"
    )
    p.add_argument(
        "--warmup",
        type=bounded_int(1, MAX_DREAM_STEPS),
        default=8,
        help="real steps of the policy before the dream starts",
    )
    p.add_argument("--fps", type=positive_float(MAX_FPS), default=10.0, help="dream steps per second")
    p.add_argument(
        "--scale",
        type=bounded_int(1, MAX_SCALE),
        help="upscaling of the 64x64 frames (default 6 in the window, 4 recorded)",
    )
    p.add_argument(
        "--record",
        metavar="FILE.gif|FILE.mp4",
        help="play without a window (--actions, else the policy) and write the frames",
    )
    p.add_argument(
        "--actions",
        metavar="SPEC",
        help="with --record: comma-separated action names or indices, or random:N (default: the policy)",
    )
    p.add_argument(
        "--steps",
        type=bounded_int(1, MAX_DREAM_STEPS),
        metavar="N",
        help="with --record and no --actions: dream steps the policy plays (default 50)",
    )
    add_device(p)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time the parts of one update, count its FLOPs, measure the matmul peak and env speed",
        description="Time one update (world-model step, imagination rollout, actor-critic step and their "
        "sum) on synthetic data: medians over --updates updates after --warmup untimed ones. Also prints "
        "the update's FLOPs (counted from the layer shapes), this machine's float32/bfloat16 matmul peak "
        "and the fraction of it reached, the peak memory and the real game's agent steps per second. "
        "Speed switches are config keys: --set dynamics.kv_cache=false, --set train.precision=bfloat16, "
        "--set train.compile=true, --set dynamics.attention=fused; the captured update: --set "
        "train.capture=true --set train.optimizer_impl=foreach --set actor_critic.fresh_pool=400.",
    )
    add_config_args(p)
    p.add_argument("--updates", type=int, default=3, help="timed updates (the medians are over these)")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed updates first (at least 2 with train.capture, which compiles)",
    )
    add_device(p)
    p.add_argument("--env-steps", type=int, default=1000, help="agent steps of the env benchmark (0: skip)")
    p.add_argument(
        "--peak-seconds", type=float, default=1.0, help="seconds per dtype of the matmul peak loop (0: skip)"
    )
    add_json(p, "print one JSON object")


class ArgumentsError(Exception):
    """A command-line argument argparse refused; ``twm.cli.main`` prints it as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors become one ``twm: error: ...`` line (``ArgumentsError``) instead of the
    usage block; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentsError(f"{message} (see {self.prog} --help)")


# Documented limits of sizes the libraries underneath do not bound (a dream of a million steps, a
# recording of 10^8 actions: hours and out of memory instead of an error).
MAX_EPISODES = 100_000
MAX_DREAM_STEPS = 10_000
MAX_STARTS = 256
MAX_SCALE = 32
MAX_FPS = 240.0


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}]; got {value}")
        return value

    return parse


def positive_float(hi: float) -> Callable[[str], float]:
    """An argparse type: a finite number in (0, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= hi):
            raise argparse.ArgumentTypeError(f"must be a number in (0, {hi:g}]; got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="twm",
        description="Transformer-based World Models (TWM) for sample-efficient RL on Atari 100k.",
    )
    parser.add_argument("--version", action="version", version=f"twm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("games", help="list the 26 Atari 100k games with human and random scores")
    add_json(p)

    p = sub.add_parser(
        "config",
        help="print the resolved configuration as YAML",
        epilog="presets:\n" + "\n".join(f"  {name:10s} {text}" for name, text in PRESET_SUMMARIES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--keys", action="store_true", help="list every config key with its paper default")

    p = sub.add_parser("info", help="parameter counts of the networks for a game and preset")
    add_config_args(p)
    add_json(p)

    p = sub.add_parser("train", help="train an agent: prefill, pretraining, training, evaluations")
    add_config_args(p)
    p.set_defaults(preset=None)  # default atari100k, applied in cmd_train; None lets --resume see a --preset
    p.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    add_device(p, overrides_config=True)
    p.add_argument(
        "--run-dir", help="run folder (default: runs/GAME-PRESET-sSEED-TIMESTAMP); never overwritten"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest good checkpoint, with its config.yaml",
    )

    p = sub.add_parser(
        "sweep",
        help="train one run per (game, seed), locally or on a Ray cluster; resumes crashed runs",
        description="One 'twm train' subprocess per (game, seed) in ROOT/<Game>/seed_<N>. Finished runs "
        "(eval/final.json) are skipped, runs that died are resumed from their newest checkpoint (a run "
        "without one is moved aside and started again), failed attempts are retried. Start the same "
        "sweep again to finish what is left. Writes ROOT/sweep.json; exit code 1 if a run failed.",
    )
    p.add_argument("--games", required=True, help="comma-separated games (case-insensitive), or 'all' (26)")
    p.add_argument(
        "--seeds", default="0", help="comma-separated seeds or ranges, e.g. 0,1,2 or 0-4 (default 0)"
    )
    add_config_args(p, game=False, set_help="override one config value for every run (repeatable)")
    p.add_argument("--root", help="sweep folder (default: runs/sweep-PRESET)")
    p.add_argument(
        "--parallel",
        type=int,
        help="runs at a time (local default 1; with Ray default: all, as resources allow)",
    )
    p.add_argument(
        "--retries", type=int, default=2, help="resume attempts after a failed attempt (default 2)"
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the runs as Ray tasks: 'local' (a new local Ray instance), 'auto', or a cluster address",
    )
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per Ray task (fractions allowed)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs per Ray task (default 1)")
    add_device(p, overrides_config=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (event lines still printed)")

    p = sub.add_parser("eval", help="evaluate the final checkpoint of a run folder (or another checkpoint)")
    add_run_dir(p)
    p.add_argument(
        "--episodes",
        type=bounded_int(1, MAX_EPISODES),
        help="episodes (default: the run's train.final_eval_episodes)",
    )
    p.add_argument("--seed", type=int, help="evaluation seed (default: that of the run's final evaluation)")
    p.add_argument(
        "--checkpoint",
        metavar="FILE|latest",
        help="evaluate this checkpoint file instead of checkpoints/final.pt; 'latest' is the newest resume "
        "checkpoint (a run that has not finished, or is still running)",
    )
    p.add_argument(
        "--video",
        metavar="FILE",
        help="also write one more eval episode (seeded with --seed) as FILE.mp4 (needs twm[viz]) or FILE.gif",
    )
    p.add_argument(
        "--trace",
        metavar="FILE.csv",
        help="also write one more eval episode (the --video one) step by step as CSV: the action, the "
        "policy's probability of every action, the critic's value, rewards, the running score",
    )
    p.add_argument(
        "--policy",
        choices=EVAL_POLICIES,
        help="'sample' draws each action from the policy (the paper), 'mode' takes its most likely "
        "action (greedy, as DQN evaluations); default: the run's train.eval_policy",
    )
    add_device(p)
    add_json(p)

    p = sub.add_parser(
        "report",
        help="per-game scores and human-normalized aggregates (with CIs) beside published methods",
        description="Report final scores of run folders, sweep roots (searched for eval/final.json) "
        'and score files {"Game": [run score, ...]}: per-game table, mean/median/IQM/optimality gap '
        "with stratified bootstrap confidence intervals, and published methods for comparison.",
    )
    p.add_argument("inputs", nargs="+", metavar="PATH", help="run folder, sweep root or score file (JSON)")
    p.add_argument(
        "--compare",
        default="TWM,STORM,IRIS,SPR,SimPLe",
        help="published methods to list beside ours (also DrQ(eps), EfficientZero; 'none' for none)",
    )
    p.add_argument("--out", metavar="FILE.md", help="also write the Markdown report to this file")
    p.add_argument("--plot", metavar="FILE.png", help="plot the aggregates with their intervals")
    p.add_argument("--curves", metavar="FILE.png", help="plot learning curves from the runs' metrics.jsonl")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (0: no intervals)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--label", help="name of our row (default: the score file's name, or 'ours')")
    add_json(p, "print one JSON object instead of Markdown")
    add_viz_parsers(sub)
    add_bench_parser(sub)
    return parser
