"""Plot twm's evaluation curves beside model-free baselines and the random policy, one panel per game.

    python benchmarks/learning/plot_learning.py --out docs/images/minatar_curves.png \\
        --run breakout=runs/minatar/breakout-cpu-s0 --baseline breakout=runs/baseline/breakout-dqn-s0.json \\
        --baseline breakout=runs/baseline/breakout-ppo-s0.json ...

``--run GAME=RUN_DIR`` reads a twm run folder's metrics.jsonl (eval/mean_score lines), labelled
with the folder's name (repeat it to put several twm runs of one game in a panel);
``--baseline GAME=FILE`` a JSON of benchmarks/baseline_model_free.py. GAME is the MinAtar name
(``breakout``); the random-policy score comes from twm's measured table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from twm.games import MINATAR_PREFIX, random_score, resolve_game  # noqa: E402
from twm.training.logger import read_metrics  # noqa: E402


def pairs(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        game, _, path = item.partition("=")
        out.append((game, path))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[])
    parser.add_argument("--baseline", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs, baselines = pairs(args.run), pairs(args.baseline)
    games = list(dict.fromkeys(g for g, _ in runs + baselines))
    fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.2), squeeze=False)
    for ax, game in zip(axes[0], games, strict=True):
        name = game if "/" in game or game == "crafter" else MINATAR_PREFIX + game
        for g, path in runs:
            if g == game:
                rows = [r for r in read_metrics(Path(path) / "metrics.jsonl") if "eval/mean_score" in r]
                ax.plot([r["step"] for r in rows], [r["eval/mean_score"] for r in rows], "o-", ms=3, label=f"twm {Path(path).name}")
        for g, path in baselines:
            if g == game:
                data = json.loads(Path(path).read_text())
                curve = data["curve"]
                ax.plot([c["step"] for c in curve], [c["score"] for c in curve], ".--", label=f"SB3 {data['algo'].upper()}")
        rnd = random_score(resolve_game(name))
        if rnd is not None:
            ax.axhline(rnd, color="grey", lw=0.8, ls=":", label=f"random ({rnd:.2f})")
            ax.axhline(3 * rnd, color="grey", lw=0.8, ls="-.", label="3x random")
        ax.set_title(name)
        ax.set_xlabel("interactions")
        ax.set_ylabel("eval return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
