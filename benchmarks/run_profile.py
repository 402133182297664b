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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = ["prefill", "pretrain", "act", "env", "sample", "compile", "world_model", "imagination",
         "actor_critic", "eval", "final_eval", "checkpoint", "log"]  # fmt: skip


def profile(run: Path) -> tuple[dict[str, float], float, int]:
    """(seconds per phase, wall seconds, updates) of a run folder or a results folder."""
    final = run / "eval" / "final.json" if (run / "eval").is_dir() else run / "final.json"
    if final.exists():
        data = json.loads(final.read_text())
        if "phase_seconds" not in data:
            raise SystemExit(f"{final} has no phase_seconds (written before runs recorded them)")
        return dict(data["phase_seconds"]), float(data["wall_time_s"]), int(data["updates"])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in lines if any(k.startswith("time/") for k in r)]
    if not last:
        raise SystemExit(f"{run}: no time/<phase> fields in metrics.jsonl")
    r = last[-1]
    phases = {k[len("time/") :]: float(v) for k, v in r.items() if k.startswith("time/")}
    return phases, float(r["time"]), int(r.get("charts/updates", 0))


def table(run: Path) -> str:
    phases, wall, updates = profile(run)
    rows = [(name, phases[name]) for name in ORDER if name in phases]
    rows += [(name, s) for name, s in phases.items() if name not in ORDER]
    rows.append(("other", max(0.0, wall - sum(phases.values()))))
    out = [f"{run}: {wall / 60:.1f} min, {updates} updates", "", "| phase | minutes | share | per update |",
           "|---|---:|---:|---:|"]  # fmt: skip
    for name, seconds in rows:
        per = f"{1e3 * seconds / updates:.0f} ms" if updates and name in ("world_model", "imagination",
                                                                          "actor_critic", "sample") else ""  # fmt: skip
        out.append(f"| {name} | {seconds / 60:.1f} | {100 * seconds / wall:.0f}% | {per} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print("\n".join(table(run) for run in args.runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
