"""The latent-loss switch on catch: the paper's dynamics loss against the released code's.

    python benchmarks/learning/latent_loss_switch.py --root runs/latent            # 4 runs, 2 at a time, then the table
    python benchmarks/learning/latent_loss_switch.py --root runs/latent --summarize  # table (and plot) of finished runs

Trains ``catch`` with the ``quick`` preset, seeds 0 and 1, with ``dynamics.latent_loss`` true (the
paper, twm's default) and false (jrobine/twm's released code, whose dynamics loss never
contains the next-latent cross-entropy: its issue 4), through benchmarks/learning/learning_curve.py, one
torch thread per run. Prints the evaluation curves as a Markdown table and, with matplotlib, writes
``<root>/latent_loss.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from learning_curve import eval_curve  # noqa: E402


def run_name(latent_loss: bool, seed: int) -> str:
    return f"catch-ll{'true' if latent_loss else 'false'}-s{seed}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/latent"))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--summarize", action="store_true", help="only summarise runs already in --root")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(ll, s) for s in seeds for ll in (True, False)]
    if not args.summarize:
        args.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        pending = list(jobs)
        running: list[subprocess.Popen] = []
        while pending or running:
            while pending and len(running) < args.parallel:
                ll, s = pending.pop(0)
                name = run_name(ll, s)
                cmd = [sys.executable, str(HERE / "learning_curve.py"), "--game", "catch", "--preset", "quick"]
                cmd += ["--minutes", str(args.minutes), "--seed", str(s), "--threads", "1", "--json"]
                cmd += ["--run-dir", str(args.root / name), "--set", f"dynamics.latent_loss={str(ll).lower()}"]
                out = open(args.root / f"{name}.json", "w")  # noqa: SIM115 (closed with the process)
                running.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env))
            running[0].wait()
            running.pop(0)
    curves = {(ll, s): eval_curve(args.root / run_name(ll, s)) for ll, s in jobs}
    steps = sorted({p["step"] for c in curves.values() for p in c})
    header = "| latent loss | seed | " + " | ".join(f"{st // 1000}k" for st in steps) + " |"
    print(header)
    print("|---|---|" + "---|" * len(steps))
    for (ll, s), curve in curves.items():
        by_step = {p["step"]: p["score"] for p in curve}
        cells = " | ".join("" if st not in by_step else f"{by_step[st]:.1f}" for st in steps)
        print(f"| {'on (paper)' if ll else 'off (released code)'} | {s} | {cells} |")
    summary = {
        run_name(ll, s): {"final": c[-1]["score"] if c else None, "minutes": c[-1]["time"] / 60 if c else None}
        for (ll, s), c in curves.items()
    }
    print(json.dumps(summary, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (ll, s), curve in curves.items():
        ax.plot(
            [p["step"] for p in curve],
            [p["score"] for p in curve],
            color="tab:blue" if ll else "tab:red",
            linestyle="-" if s == seeds[0] else "--",
            label=f"latent loss {'on' if ll else 'off'}, seed {s}",
        )
    ax.axhline(-5, color="grey", lw=0.8, ls=":", label="random (-5)")
    ax.set_xlabel("interactions")
    ax.set_ylabel("eval return (10 episodes)")
    ax.set_title("catch, quick preset: dynamics.latent_loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.root / "latent_loss.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
