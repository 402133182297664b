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
