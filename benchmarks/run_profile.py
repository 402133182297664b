"""Where the minutes of a run went: its wall time split by phase, as a markdown table.

    python benchmarks/run_profile.py RUN_DIR [RUN_DIR ...]

Reads ``eval/final.json`` (``phase_seconds`` and ``wall_time_s``; a copy in benchmarks/results works
too: a folder holding ``final.json``) or, for an unfinished run, the ``time/<phase>`` fields of the
last line of ``metrics.jsonl``. Phases (``twm.training.state.PhaseTimes``): prefill (random steps),
pretrain, act (the agent choosing real actions), env (game steps and the replay buffer), sample (replay
batches), compile (the first two updates of a captured run in each process, which compile its
regions), world_model, imagination and actor_critic (the three parts of an update), eval (periodic
evaluations and their images), final_eval, checkpoint, log; "other" is the wall time none of
them covers (start-up, progress output).

The "per update" column is the phase's seconds over the run's updates; "median per update" is the
median over the intervals between metric lines (each ``log_interval`` steps) of the phase's seconds
per update in that interval, which a stretch of heavy load from other processes on the machine
moves less than it moves the mean.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

from twm.training.logger import read_metrics

ORDER = ["prefill", "pretrain", "act", "env", "sample", "compile", "world_model", "imagination",
         "actor_critic", "policy_reset", "eval", "final_eval", "checkpoint", "log"]  # fmt: skip


def profile(run: Path) -> tuple[dict[str, float], float, int]:
    """(seconds per phase, wall seconds, updates) of a run folder or a results folder."""
    final = run / "eval" / "final.json" if (run / "eval").is_dir() else run / "final.json"
    if final.exists():
        data = json.loads(final.read_text())
        if "phase_seconds" not in data:
            raise SystemExit(f"{final} has no phase_seconds (written before runs recorded them)")
        return dict(data["phase_seconds"]), float(data["wall_time_s"]), int(data["updates"])
    last = [r for r in read_metrics(run / "metrics.jsonl") if any(k.startswith("time/") for k in r)]
    if not last:
        raise SystemExit(f"{run}: no time/<phase> fields in metrics.jsonl")
    r = last[-1]
    phases = {k[len("time/") :]: float(v) for k, v in r.items() if k.startswith("time/")}
    return phases, float(r["time"]), int(r.get("charts/updates", 0))


UPDATE_PARTS = ("sample", "world_model", "imagination", "actor_critic")


def window_medians(run: Path) -> dict[str, float]:
    """Median seconds per update of each update part over the intervals between metric lines."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [r for r in read_metrics(path) if "charts/updates" in r and "time/world_model" in r]
    per: dict[str, list[float]] = {part: [] for part in UPDATE_PARTS}
    for a, b in itertools.pairwise(rows):
        updates = b["charts/updates"] - a["charts/updates"]
        if updates <= 0:
            continue
        for part in UPDATE_PARTS:
            if f"time/{part}" in a and f"time/{part}" in b:
                per[part].append((b[f"time/{part}"] - a[f"time/{part}"]) / updates)
    return {part: statistics.median(values) for part, values in per.items() if values}


def table(run: Path) -> str:
    phases, wall, updates = profile(run)
    rows = [(name, phases[name]) for name in ORDER if name in phases]
    rows += [(name, s) for name, s in phases.items() if name not in ORDER]
    rows.append(("other", max(0.0, wall - sum(phases.values()))))
    medians = window_medians(run)
    out = [f"{run}: {wall / 60:.1f} min, {updates} updates", "",
           "| phase | minutes | share | per update | median per update |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for name, seconds in rows:
        per = f"{1e3 * seconds / updates:.0f} ms" if updates and name in UPDATE_PARTS else ""
        median = f"{1e3 * medians[name]:.0f} ms" if name in medians else ""
        out.append(f"| {name} | {seconds / 60:.1f} | {100 * seconds / wall:.0f}% | {per} | {median} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("\n".join(table(run) for run in args.runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
