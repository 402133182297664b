"""The ``twm`` command line: one entry point, one subcommand per job.

Every user-facing failure (bad game, preset, config key or value, missing file) is reported as a
single ``twm: error: ...`` line with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from twm.cli_parser import ArgumentsError, build_parser
from twm.config import Config, ConfigError
from twm.config_files import describe_keys, load_config
from twm.envs import EnvError, check_env
from twm.games import (
    ATARI100K_GAMES,
    BUILTIN_GAME,
    CRAFTER_GAME,
    FAMILY_REQUIREMENTS,
    MINATAR_GAMES,
    MINATAR_PREFIX,
    UnknownGameError,
    ale_games,
    game_family,
    measured_random_scores,
    run_name,
)

if TYPE_CHECKING:  # the trainer imports torch; commands import it only when they run
    from twm.training.trainer import Trainer

EXIT_USAGE = 2
EXIT_FAILURE = 1  # the run itself failed (non-finite loss, disk full): not a usage problem


class UsageError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


class RunFailure(Exception):
    """Something outside the user's request failed (a full disk); printed as one line, exit code 1."""


# --------------------------------------------------------------------------------------- helpers


def _config_from_args(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if getattr(args, "game", None):
        overrides.insert(0, f"env.game={args.game}")
    return load_config(args.preset, overrides, args.config_file)


# --------------------------------------------------------------------------------------- commands


def cmd_games(args: argparse.Namespace) -> int:
    games = list(ATARI100K_GAMES.values())
    measured = measured_random_scores()
    others = [*(MINATAR_PREFIX + g for g in MINATAR_GAMES), CRAFTER_GAME]
    if args.json:
        table: dict[str, dict[str, object]] = {
            g.name: {"family": "atari", "human": g.human, "random": g.random} for g in games
        }
        table[BUILTIN_GAME] = {"family": "catch", "human": None, "random": None}
        for name in others:
            rnd = measured.get(name, {}).get("mean")
            table[name] = {"family": game_family(name), "human": None, "random": rnd}
        extra = [g for g in ale_games() if g not in ATARI100K_GAMES]
        print(json.dumps({"games": table, "other_ale_games": extra, "requirements": FAMILY_REQUIREMENTS}, indent=1))
        return 0
    print(f"{'game':<24}{'human':>10}{'random':>10}")
    for g in games:
        print(f"{g.name:<24}{g.human:>10.1f}{g.random:>10.1f}")
    print(f"{BUILTIN_GAME:<24}{'-':>10}{'-':>10}")
    for name in others:
        rnd = measured.get(name, {}).get("mean")
        print(f"{name:<24}{'-':>10}{'-' if rnd is None else f'{rnd:.2f}':>10}")
    print(
        f"\n{len(games)} Atari 100k games (standard human/random scores), '{BUILTIN_GAME}' (built in), "
        f"{len(MINATAR_GAMES)} MinAtar games and Crafter (random: measured by scripts/random_scores.py), "
        "and gym:<id> for any installed Gymnasium environment with image observations and discrete actions."
    )
    extra = [g for g in ale_games() if g not in ATARI100K_GAMES]
    if extra:
        print(
            f"Any of the {len(extra)} other ALE ROMs ({', '.join(extra[:4])}, ...) runs under the same Atari 100k "
            "protocol, without human scores; gym:ALE/<Game>-v5 ids map to it too."
        )
    print("needs installed:")
    for family, need in FAMILY_REQUIREMENTS.items():
        print(f"  {family:<8} {need}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.keys:
        if args.overrides or args.config_file or args.game:  # checked, not silently ignored
            raise UsageError("--keys lists every key with its paper default; it takes no --set, --config or --game")
        for key, default, help_text in describe_keys():
            print(f"{key:<40} {default!s:<12} {help_text}")
        return 0
    cfg = _config_from_args(args)
    print(cfg.to_yaml(), end="")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from twm.perf.info import num_actions_of, parameter_counts

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


def _check_loggers(cfg: Config) -> None:
    """The packages of ``train.loggers`` are installed (one line, before any run folder)."""
    from twm.training.logger import LoggerUnavailableError, check_loggers

    try:
        check_loggers(cfg.train.loggers)
    except LoggerUnavailableError as exc:
        raise UsageError(str(exc)) from None


def _checked_device(name: str) -> str:
    """Fail early, as one line, on a device this machine does not have (before any run folder exists)."""
    from twm.device import DeviceUnavailableError, resolve_device

    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be one of auto, cpu, cuda; got {name!r}")
    try:
        resolve_device(name)
    except DeviceUnavailableError as exc:
        raise UsageError(str(exc)) from None
    return name


# A run folder that cannot be made where it was asked for: the user's to fix (exit 2), not a failure
# of the run a sweep would retry.
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EEXIST}


def _run_dir_os_error(exc: OSError, run_dir: str | Path) -> int:
    """One line for an OSError while setting up a run folder; exit 2 for a path problem, else 1."""
    where = exc.filename or run_dir
    print(f"twm: error: cannot use run folder {run_dir}: {exc.strerror or exc} ({where})", file=sys.stderr)
    return EXIT_USAGE if exc.errno in _PATH_ERRNOS else EXIT_FAILURE


def cmd_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from twm.files import CheckpointWriteError
    from twm.run_dir import RunDirExistsError
    from twm.training.finite import NonFiniteLossError
    from twm.training.stops import Interrupted, TrainingStopped
    from twm.training.trainer import Trainer
    from twm.viz.eval_images import eval_images_hook

    if args.resume is not None:
        trainer = _resumed_trainer(args)
    else:
        given_game = args.game or args.config_file or any(o.startswith("env.game=") for o in args.overrides)
        if not given_game:
            raise UsageError(
                "twm train needs --game GAME (see 'twm games'), or a --config file that sets env.game"
            )
        args.preset = args.preset or "atari100k"  # None only tells --resume whether --preset was given
        # --seed and --device win over the preset, the config file and --set.
        if args.seed is not None:
            args.overrides.append(f"train.seed={args.seed}")
        if args.device is not None:
            args.overrides.append(f"train.device={_checked_device(args.device)}")
        cfg = _config_from_args(args)
        _checked_device(cfg.train.device)  # the config file may name a device too
        check_env(cfg.env)  # a missing package or an unsuitable gym id: one line, before any folder
        _check_loggers(cfg)
        run_dir = args.run_dir
        if run_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path("runs") / f"{run_name(cfg.env.game)}-{args.preset}-s{cfg.train.seed}-{stamp}"
        try:
            trainer = Trainer(
                cfg, run_dir, progress=not args.no_progress, preset=args.preset, on_eval=eval_images_hook
            )
        except RunDirExistsError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            return _run_dir_os_error(exc, run_dir)
    if trainer.cfg.train.keep_freed_memory:  # process-wide: the command line's choice, not the library's
        from twm.allocator import keep_freed_memory

        keep_freed_memory()
    total = trainer.cfg.train.total_steps
    try:
        summary = trainer.run()
    except TrainingStopped as exc:
        print(f"twm: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:
        last = f"the last complete checkpoint {exc.checkpoint}" if exc.checkpoint else "no checkpoint"
        print(
            f"twm: interrupted again at {trainer.interactions}/{total} interactions; exited without a new "
            f"checkpoint; --resume continues from {last}",
            file=sys.stderr,
        )
        # Leave at once: no interpreter shutdown, whose joins of background threads (TensorBoard's
        # writer, torch's pools) can abort a process stopped mid-write. Every file is atomic.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.exit_code)
    except KeyboardInterrupt:  # before the signal handlers are installed (building, loading)
        print(f"twm: interrupted while starting the run in {trainer.run_dir}", file=sys.stderr)
        return 130
    except (NonFiniteLossError, CheckpointWriteError) as exc:
        print(f"twm: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # e.g. the disk filled up while logging metrics
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"twm: error: {exc.strerror or exc}{where}; run folder {trainer.run_dir}", file=sys.stderr)
        return EXIT_FAILURE
    hns = "" if summary["hns"] is None else f", hns {summary['hns']:.3f}"
    if summary.get("random_ratio") is not None:
        hns += f", {summary['random_ratio']:.2f} x random"
    if "crafter" in summary:
        hns += f", Crafter score {summary['crafter']['score']:.2f}%"
    print(
        f"{summary['game']}: final mean score {summary['mean']:.2f} ± {summary['std']:.2f} over "
        f"{len(summary['scores'])} episodes{hns}; run folder {summary['run_dir']}"
    )
    return 0


def _resumed_trainer(args: argparse.Namespace) -> Trainer:
    """The trainer of ``twm train --resume RUN_DIR``: the run's own config.yaml, nothing else."""
    from twm.device import DeviceUnavailableError
    from twm.run_dir import ResumeError, RunLockedError
    from twm.training.trainer import Trainer
    from twm.viz.eval_images import eval_images_hook

    given = {
        "--game": args.game,
        "--preset": args.preset,
        "--config": args.config_file,
        "--set": args.overrides,
        "--seed": args.seed is not None,
        "--run-dir": args.run_dir,
    }
    conflicts = [flag for flag, value in given.items() if value]
    if conflicts:
        raise UsageError(
            f"--resume continues a run with its saved config.yaml; it cannot be combined with "
            f"{', '.join(conflicts)}"
        )
    device = _checked_device(args.device) if args.device is not None else None
    try:
        return Trainer.resume(args.resume, device=device, progress=not args.no_progress, on_eval=eval_images_hook)
    except (ResumeError, DeviceUnavailableError, RunLockedError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # a read-only folder, a full disk: one line
        where = exc.filename or args.resume
        message = f"cannot resume {args.resume}: {exc.strerror or exc} ({where})"
        if exc.errno in _PATH_ERRNOS:
            raise UsageError(message) from None
        raise RunFailure(message) from None


def cmd_sweep(args: argparse.Namespace) -> int:
    # Imported here: only the sweep needs it (and Ray, imported by it only with --ray-address).
    from twm.launch.plan import SweepError, SweepOptions, TrainOptions, parse_games, parse_seeds
    from twm.launch.sweep import run_sweep

    try:
        games = parse_games(args.games)
        # Each non-Atari game's env must build (packages, spaces) before any run starts.
        for game in (g for g in games if game_family(g) not in ("atari", "catch")):
            check_env(load_config(args.preset, [*args.overrides, f"env.game={game}"], args.config_file).env)
        opts = SweepOptions(
            games=games,
            seeds=parse_seeds(args.seeds),
            root=args.root or f"runs/sweep-{args.preset}",
            options=TrainOptions(
                preset=args.preset,
                overrides=tuple(args.overrides),
                config_file=args.config_file,
                device=_checked_device(args.device) if args.device is not None else None,
            ),
            parallel=args.parallel,
            retries=args.retries,
            ray_address=args.ray_address,
            gpus_per_run=args.gpus_per_run,
            cpus_per_run=args.cpus_per_run,
            progress=not args.no_progress,
        )
        return run_sweep(opts)
    except SweepError as exc:
        raise UsageError(str(exc)) from None


def _eval_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    """The checkpoint ``twm eval`` reads: final.pt, a given file, or with 'latest' the newest resume checkpoint."""
    from twm.run_dir import RunDir, RunDirError

    folder = RunDir(run_dir)
    if checkpoint is None:
        try:
            return folder.require_final_checkpoint("evaluate an unfinished run with --checkpoint latest")
        except RunDirError as exc:
            raise UsageError(str(exc)) from None
    if not run_dir.is_dir():
        raise UsageError(f"run folder {run_dir} does not exist")
    if checkpoint != "latest":
        path = Path(checkpoint)
        if not path.is_file():
            raise UsageError(f"checkpoint {checkpoint} does not exist")
        return path
    name = folder.latest_checkpoint_name()
    newest = folder.checkpoints / name if name else None
    if newest is None or not newest.is_file():
        candidates = sorted(folder.resume_checkpoints(), key=lambda p: p.name)
        newest = candidates[-1] if candidates else None
    if newest is None:
        raise UsageError(f"{run_dir} has no resume checkpoint yet (one is written every train.checkpoint_interval steps)")
    return newest


def cmd_eval(args: argparse.Namespace) -> int:
    from twm.device import resolve_device
    from twm.run_dir import RunDir
    from twm.seeding import final_eval_seed
    from twm.training.checkpoint import CheckpointError, agent_from_checkpoint, load_checkpoint
    from twm.training.evaluation import evaluate_agent

    run_dir = Path(args.run_dir)
    checkpoint = _eval_checkpoint(run_dir, args.checkpoint)
    config_path = RunDir(run_dir).config
    if args.episodes is not None and args.episodes < 1:
        raise UsageError(f"--episodes must be at least 1; got {args.episodes}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be non-negative; got {args.seed}")
    if args.video is not None:
        from twm.viz.render import VizError, check_animation_path

        try:
            check_animation_path(args.video)  # a bad suffix or MP4 without ffmpeg: before any work
        except VizError as exc:
            raise UsageError(str(exc)) from None
    if args.trace is not None:
        trace_path = Path(args.trace)
        if trace_path.suffix.lower() != ".csv" or not trace_path.parent.is_dir():
            raise UsageError(f"--trace {args.trace}: give a .csv file in an existing folder")
    cfg = Config.from_yaml(config_path)
    device = resolve_device(_checked_device(args.device))
    try:
        state = load_checkpoint(checkpoint, device)
        agent = agent_from_checkpoint(state, device, cfg)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    episodes = args.episodes if args.episodes is not None else cfg.train.final_eval_episodes
    # By default the seed of the run's own final evaluation, so this reproduces eval/final.json.
    seed = args.seed if args.seed is not None else final_eval_seed(cfg.train.seed)
    policy = args.policy or cfg.train.eval_policy
    result = evaluate_agent(agent, cfg.env, episodes, seed, policy=policy)
    video = None
    if args.video is not None:
        from twm.viz.video import record_episode

        video = record_episode(agent, cfg.env, args.video, seed, policy=policy)
    trace = None
    if args.trace is not None:
        from twm.analysis.trace import trace_episode, write_trace

        rows = trace_episode(agent, cfg.env, seed, policy=policy)
        trace = {"out": str(write_trace(rows, args.trace)), "steps": len(rows), "score": rows[-1]["score"]}
    if args.json:
        out = {"run_dir": str(run_dir), "game": cfg.env.game, "episodes": episodes, "seed": seed, "policy": policy}
        if args.checkpoint is not None:
            out["checkpoint"] = str(checkpoint)
            out["interactions"] = int(state.get("interactions", -1))
        if video is not None:
            out["video"] = video
        if trace is not None:
            out["trace"] = trace
        print(json.dumps({**out, **result.to_dict()}, indent=1))
        return 0
    hns = "" if result.hns is None else f"  hns {result.hns:.3f}"
    if result.random_ratio is not None:
        hns += f"  x random {result.random_ratio:.2f}"
    if result.crafter_score is not None:
        hns += f"  Crafter score {result.crafter_score:.2f}%"
    where = "" if args.checkpoint is None else f", {checkpoint.name}"
    where += ", the policy's most likely actions" if policy == "mode" else ""
    print(
        f"{cfg.env.game}: mean {result.mean:.2f}  std {result.std:.2f}  min {result.min:.2f}  "
        f"max {result.max:.2f}{hns}  ({episodes} episodes, seed {seed}{where})"
    )
    if video is not None:
        print(f"wrote {video['out']}: one eval episode of {video['steps']} steps, score {video['score']:g}")
    if trace is not None:
        print(f"wrote {trace['out']}: the same episode step by step ({trace['steps']} steps, score {trace['score']:g})")
    return 0


# --------------------------------------------------------------------------------------- dream, play


def cmd_dream(args: argparse.Namespace) -> int:
    # Imported here: the viz package pulls in the agent and Pillow, which other commands skip.
    from twm.device import resolve_device
    from twm.viz import VizError, run_dream

    device = resolve_device(_checked_device(args.device))
    try:
        done = run_dream(
            args.run_dir,
            args.out,
            checkpoint=args.checkpoint,
            horizon=args.horizon,
            starts=args.starts,
            seed=args.seed,
            fps=args.fps,
            warmup=args.warmup,
            scale=args.scale,
            source=args.source,
            attention=args.attention,
            attention_step=args.attention_step,
            device=device,
        )
    except VizError as exc:
        raise UsageError(str(exc)) from None
    width, height = done["size"]
    print(
        f"wrote {done['out']}: {done['frames']} frames of {width}x{height} px, {args.starts} dreams of "
        f"{args.horizon} steps starting from {done['starts_from']}"
    )
    if "attention" in done:
        print(f"wrote {done['attention']}: attention of dream 0 at step {done['attention_step']}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from twm.device import resolve_device
    from twm.viz import VizError, run_play
    from twm.viz.play import POLICY_STEPS, run_play_policy

    if args.actions is not None and args.record is None:
        raise UsageError("--actions SPEC goes with --record FILE (it plays without a window)")
    by_policy = args.record is not None and args.actions is None
    if args.steps is not None and not by_policy:
        raise UsageError("--steps N goes with --record FILE without --actions (the policy plays N steps)")
    device = resolve_device(_checked_device(args.device))
    try:
        if by_policy:
            done = run_play_policy(
                args.run_dir,
                args.record,
                checkpoint=args.checkpoint,
                seed=args.seed,
                warmup=args.warmup,
                fps=args.fps,
                scale=args.scale,
                steps=POLICY_STEPS if args.steps is None else args.steps,
                device=device,
            )
        else:
            done = run_play(
                args.run_dir,
                checkpoint=args.checkpoint,
                seed=args.seed,
                warmup=args.warmup,
                fps=args.fps,
                scale=args.scale,
                record=args.record,
                actions=args.actions,
                device=device,
            )
    except VizError as exc:
        raise UsageError(str(exc)) from None
    if args.record is not None:
        what = "the start + one per policy step" if by_policy else "the start + one per action"
        print(f"wrote {done['out']}: {done['frames']} frames ({what}), predicted score {done['score']:+.2f}")
    else:
        print(f"played {done['steps']} steps in the dream; predicted score {done['score']:+.2f}")
    return 0


# --------------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from twm.device import resolve_device
    from twm.perf.bench import format_report, run_bench

    for flag, value, low in (("--updates", args.updates, 1), ("--warmup", args.warmup, 0)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}; got {value}")
    if args.env_steps < 0 or args.peak_seconds < 0:
        raise UsageError("--env-steps and --peak-seconds must not be negative")
    cfg = _config_from_args(args)
    device = resolve_device(_checked_device(args.device))
    if device.type == "cpu" and cfg.train.precision == "bfloat16" and not args.json:
        print("twm bench: note: bfloat16 on a CPU without bf16 units is emulated and slow", file=sys.stderr)
    result = run_bench(
        cfg,
        device,
        updates=args.updates,
        warmup=args.warmup,
        env_steps=args.env_steps,
        peak_seconds=args.peak_seconds,
    )
    result["preset"] = args.preset
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "games": cmd_games,
    "config": cmd_config,
    "info": cmd_info,
    "train": cmd_train,
    "sweep": cmd_sweep,
    "eval": cmd_eval,
    "report": cmd_report,
    "dream": cmd_dream,
    "play": cmd_play,
    "bench": cmd_bench,
}


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
    line: str | None = None,
) -> None:
    """A Python warning as one ``twm: warning: ...`` line (its first line; no source location)."""
    text = (str(message).strip().splitlines() or [category.__name__])[0]
    print(f"twm: warning: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ArgumentsError as exc:
        print(f"twm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(COMMANDS[args.command](args))
    except (ConfigError, UnknownGameError, UsageError, EnvError) as exc:
        print(f"twm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailure as exc:
        print(f"twm: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print("twm: error: out of memory (a size in the config or the arguments is too large for this machine)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc).lower():
            raise
        print("twm: error: out of memory (a size in the config or the arguments is too large for this machine): "
              f"{str(exc).splitlines()[0][:200]}", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("twm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
