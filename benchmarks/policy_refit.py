"""Go on training a run's actor and critic alone, in its frozen world model: is the policy the limit?

    python benchmarks/policy_refit.py runs/plus-grid/breakout/plus-s0 --updates 3000
    python benchmarks/policy_refit.py runs/plus-grid/breakout/plus-s0 --updates 3000 \\
        --set actor_critic.entropy_coef=3e-3 --json out.json

Loads the newest resume checkpoint of a run folder (weights, optimiser states, replay buffer) and
repeats only the policy half of an update (``Learner.policy_update``): a replay batch as the run
draws it, its latents from the world model (no world-model step), imagination from them, the
critic's and the actor's steps, the slow critic. The world model never changes, so what the policy reaches here is what the run's world model
allows: if a setting lifts the score above the run's own final one in a few thousand of these cheap
updates (imagination and actor-critic are about a quarter of an update on a CPU), the run was held
back by how its policy learned, not by its world model.

``--set`` changes settings of the policy's learning (``actor_critic.*`` keys that are read at update
time: the entropy term, uniform mixing, starts, horizon, λ, return normalisation, slow critic,
learning rates); keys that change the networks' shapes are refused. ``--fresh`` starts actor and
critic from new weights and fresh Adam states, as ``actor_critic.reset_every`` does in a run. Every ``--eval-every`` updates, ``--episodes`` eval-mode games (sampled
actions, the evaluation seed fixed) give the mean score, printed with the policy's normalised entropy.
The update is eager (``train.capture`` off): the same losses, another random draw.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from twm.config import Config, ConfigError
from twm.config_files import apply_overrides
from twm.models.batch import TorchSequenceBatch
from twm.seeding import final_eval_seed
from twm.training.checkpoint import CheckpointError, CheckpointManager, agent_from_checkpoint
from twm.training.evaluation import evaluate_agent
from twm.update import Learner

# actor_critic keys an update reads as it runs; the others shape the networks.
REFIT_KEYS = {
    "num_starts", "horizon", "lam", "discount_threshold", "entropy_coef", "entropy_threshold", "entropy",
    "unimix", "slow_critic_rate", "slow_critic_coef", "return_norm", "return_norm_decay", "actor_lr",
    "critic_lr", "replay_value_coef",
}  # fmt: skip


def refit_config(saved: Config, overrides: Sequence[str]) -> Config:
    """The run's config with ``overrides`` (actor_critic update settings only), eager."""
    for item in overrides:
        section, _, key = item.split("=", 1)[0].partition(".")
        if section != "actor_critic" or key not in REFIT_KEYS:
            raise ConfigError(
                f"--set {item}: only actor_critic.{{{', '.join(sorted(REFIT_KEYS))}}} can change"
            )
    return apply_overrides(saved, [*overrides, "train.capture=false"])


def refit(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    updates: int = 3000,
    eval_every: int = 500,
    episodes: int = 10,
    seed: int = 0,
    fresh: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Train the actor and critic of ``run_dir``'s newest checkpoint ``updates`` times; the curve."""
    state, replay, path = CheckpointManager(run_dir).load_latest()
    agent = agent_from_checkpoint(state)
    saved_cfg = agent.cfg
    cfg = refit_config(saved_cfg, overrides)
    agent.cfg = cfg
    torch.manual_seed(seed)
    ac = cfg.actor_critic
    agent.actor.unimix = ac.unimix
    learner = Learner(agent)
    learner.optimizers.load_state_dict(state["optimizers"])
    if fresh:  # as actor_critic.reset_every resets a run's policy
        learner.reset_policy(seed)
    for name, lr in (("actor", ac.actor_lr), ("critic", ac.critic_lr)):
        for group in learner.optimizers[name].param_groups:
            group["lr"] = lr
    eval_seed = final_eval_seed(saved_cfg.train.seed)
    r = cfg.replay

    def evaluate(done: int, metrics: list[dict[str, float]], seconds: float) -> dict[str, Any]:
        result = evaluate_agent(agent, cfg.env, episodes, eval_seed)
        point = {
            "updates": done,
            "mean_score": result.mean,
            "std_score": result.std,
            "seconds": round(seconds, 1),
        }
        for key in ("ac/norm_entropy", "ac/return_scale", "ac/advantage_abs", "ac/value"):
            values = [m[key] for m in metrics if key in m]
            if values:
                point[key] = statistics.fmean(values)
        if log is not None:
            shown = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in point.items()
            )
            print(shown, file=log, flush=True)
        return point

    curve = [evaluate(0, [], 0.0)]
    start, window = time.perf_counter(), []
    sample_start_obs = lambda n: torch.from_numpy(replay.sample_obs(n)).to(agent.device)  # noqa: E731
    for done in range(1, updates + 1):
        sequences = replay.sample_sequences(r.batch_size, r.sequence_length)
        metrics = learner.policy_update(
            TorchSequenceBatch.from_numpy(sequences, agent.device), sample_start_obs
        )
        window.append({k: float(v) for k, v in metrics.items()})
        if done % eval_every == 0 or done == updates:
            curve.append(evaluate(done, window, time.perf_counter() - start))
            window = []
    return {
        "run_dir": str(run_dir),
        "checkpoint": str(path),
        "overrides": list(overrides),
        "fresh": fresh,
        "seed": seed,
        "episodes": episodes,
        "curve": curve,
        "settings": dataclasses.asdict(ac),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="new actor and critic weights")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="actor_critic.KEY=VALUE"
    )
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    if args.updates < 1 or args.eval_every < 1 or args.episodes < 1:
        print("policy_refit: --updates, --eval-every and --episodes must be positive", file=sys.stderr)
        return 2
    try:
        result = refit(
            args.run_dir,
            args.overrides,
            args.updates,
            args.eval_every,
            args.episodes,
            args.seed,
            args.fresh,
            sys.stdout,
        )
    except (CheckpointError, ConfigError, FileNotFoundError) as exc:
        print(f"policy_refit: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
