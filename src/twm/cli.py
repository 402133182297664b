"""The ``twm`` command line: one entry point, one subcommand per job.

Every user-facing failure (bad game, preset, config key or value, missing file) is reported as a
single ``twm: error: ...`` line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from twm import __version__
from twm.config import PRESETS, Config, ConfigError, describe_keys, load_config
from twm.envs.games import ATARI100K_GAMES, BUILTIN_GAME, UnknownGameError

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


# --------------------------------------------------------------------------------------- helpers


def _add_config_args(parser: argparse.ArgumentParser, *, game: bool = True) -> None:
    if game:
        parser.add_argument("--game", help="Atari 100k game (see 'twm games') or 'catch'")
    parser.add_argument("--preset", default="atari100k", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--config", dest="config_file", help="YAML file with config overrides")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set dynamics.attention=fused",
    )


def _config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if getattr(args, "game", None):
        overrides.insert(0, f"env.game={args.game}")
    return load_config(args.preset, overrides, args.config_file)


# --------------------------------------------------------------------------------------- commands


def cmd_games(args: argparse.Namespace) -> int:
    games = list(ATARI100K_GAMES.values())
    if args.json:
        print(json.dumps({g.name: {"human": g.human, "random": g.random} for g in games}, indent=1))
        return 0
    print(f"{'game':<16}{'human':>10}{'random':>10}")
    for g in games:
        print(f"{g.name:<16}{g.human:>10.1f}{g.random:>10.1f}")
    print(f"\n{len(games)} Atari 100k games; '{BUILTIN_GAME}' is a built-in test game (no reference scores).")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        for key, default, help_text in describe_keys():
            print(f"{key:<40} {default!s:<12} {help_text}")
        return 0
    cfg = _config_from_args(args)
    print(cfg.to_yaml(), end="")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from twm.info import num_actions_of, parameter_counts

    cfg = _config_from_args(args)
    num_actions = num_actions_of(cfg)
    counts = parameter_counts(cfg, num_actions)
    if args.json:
        info = {"game": cfg.env.game, "preset": args.preset, "num_actions": num_actions, "parameters": counts}
        print(json.dumps(info, indent=1))
        return 0
    print(f"{cfg.env.game} ({args.preset}, {num_actions} actions): parameters")
    for name, n in counts.items():
        print(f"  {name:<22}{n:>14,}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # Imported here: the report pulls in numpy (and matplotlib for plots), which other commands skip.
    from twm.analysis.report import ReportError, run_report
    from twm.analysis.scores import ReportInputError

    try:
        return run_report(
            args.inputs,
            compare=args.compare,
            out=args.out,
            plot=args.plot,
            curves=args.curves,
            reps=args.reps,
            seed=args.seed,
            as_json=args.json,
            label=args.label,
        )
    except (ReportError, ReportInputError) as exc:
        raise UsageError(str(exc)) from exc


def _checked_device(name: str) -> str:
    """Fail early, as one line, on a device this machine does not have (before any run folder exists)."""
    from twm.training.trainer import DeviceUnavailableError, resolve_device

    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be one of auto, cpu, cuda; got {name!r}")
    try:
        resolve_device(name)
    except DeviceUnavailableError as exc:
        raise UsageError(str(exc)) from None
    return name


def cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from twm.training.logger import RunDirExistsError
    from twm.training.trainer import Trainer

    given_game = args.game or args.config_file or any(o.startswith("env.game=") for o in args.overrides)
    if not given_game:
        raise UsageError(
            "twm train needs --game GAME (see 'twm games'), or a --config file that sets env.game"
        )
    # --seed and --device win over the preset, the config file and --set.
    if args.seed is not None:
        args.overrides.append(f"train.seed={args.seed}")
    if args.device is not None:
        args.overrides.append(f"train.device={_checked_device(args.device)}")
    cfg = _config_from_args(args)
    _checked_device(cfg.train.device)  # the config file may name a device too
    run_dir = args.run_dir
    if run_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.env.game}-{args.preset}-s{cfg.train.seed}-{stamp}"
    try:
        trainer = Trainer(cfg, run_dir, progress=not args.no_progress, preset=args.preset)
    except RunDirExistsError as exc:
        raise UsageError(str(exc)) from None
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        print(
            f"twm: interrupted at {trainer.interactions}/{cfg.train.total_steps} interactions; "
            f"the partial run (no final checkpoint) is in {trainer.run_dir}",
            file=sys.stderr,
        )
        return 130
    hns = "" if summary["hns"] is None else f", hns {summary['hns']:.3f}"
    print(
        f"{summary['game']}: final mean score {summary['mean']:.2f} ± {summary['std']:.2f} over "
        f"{len(summary['scores'])} episodes{hns}; run folder {summary['run_dir']}"
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from twm.training.checkpoint import (
        CHECKPOINT_DIR,
        FINAL_CHECKPOINT,
        CheckpointError,
        agent_from_checkpoint,
        load_checkpoint,
    )
    from twm.training.evaluation import evaluate_agent
    from twm.training.trainer import final_eval_seed, resolve_device

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UsageError(f"{config_path} not found: {run_dir} is not a twm run folder")
    checkpoint = run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT
    if not checkpoint.is_file():
        raise UsageError(f"{checkpoint} not found: the run has not finished (no final checkpoint)")
    if args.episodes is not None and args.episodes < 1:
        raise UsageError(f"--episodes must be at least 1; got {args.episodes}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be non-negative; got {args.seed}")
    cfg = Config.from_yaml(config_path)
    device = resolve_device(_checked_device(args.device))
    try:
        agent = agent_from_checkpoint(load_checkpoint(checkpoint, device), device, cfg, optimizers=False)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    episodes = args.episodes if args.episodes is not None else cfg.train.final_eval_episodes
    # By default the seed of the run's own final evaluation, so this reproduces eval/final.json.
    seed = args.seed if args.seed is not None else final_eval_seed(cfg.train.seed)
    result = evaluate_agent(agent, cfg.env, episodes, seed)
    if args.json:
        out = {"run_dir": str(run_dir), "game": cfg.env.game, "episodes": episodes, "seed": seed}
        print(json.dumps({**out, **result.to_dict()}, indent=1))
        return 0
    hns = "" if result.hns is None else f"  hns {result.hns:.3f}"
    print(
        f"{cfg.env.game}: mean {result.mean:.2f}  std {result.std:.2f}  min {result.min:.2f}  "
        f"max {result.max:.2f}{hns}  ({episodes} episodes, seed {seed})"
    )
    return 0


# --------------------------------------------------------------------------------------- parser

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twm",
        description="Transformer-based World Models (TWM) for sample-efficient RL on Atari 100k.",
    )
    parser.add_argument("--version", action="version", version=f"twm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("games", help="list the 26 Atari 100k games with human and random scores")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_games)

    p = sub.add_parser("config", help="print the resolved configuration as YAML")
    _add_config_args(p)
    p.add_argument("--keys", action="store_true", help="list every config key with its paper default")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("info", help="parameter counts of the networks for a game and preset")
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train an agent: prefill, pretraining, training, evaluations")
    _add_config_args(p)
    p.add_argument("--seed", type=int, help="random seed (overrides train.seed)")
    p.add_argument("--device", help="auto, cpu or cuda (overrides train.device)")
    p.add_argument(
        "--run-dir", help="run folder (default: runs/GAME-PRESET-sSEED-TIMESTAMP); never overwritten"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate the final checkpoint of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'twm train'")
    p.add_argument("--episodes", type=int, help="episodes (default: the run's train.final_eval_episodes)")
    p.add_argument("--seed", type=int, help="evaluation seed (default: that of the run's final evaluation)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_eval)

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
    p.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except (ConfigError, UnknownGameError, UsageError) as exc:
        print(f"twm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("twm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
