"""How well a run's world model predicts rewards and decodes what moves, on its own replay data.

    python benchmarks/world_model_probe.py runs/si-s0                 # the newest resume checkpoint
    python benchmarks/world_model_probe.py runs/si-s0 --batches 40 --json

Loads the newest resume checkpoint of a run folder (weights and replay buffer), draws sequences
uniformly from the replay (visit counts untouched), and runs the world model as an update does but
in eval mode (no dropout, no gradient): the encoder samples z_1..z_T, the dynamics model reads them
with the real actions and rewards. It reports

- reward: the share of steps with a reward; the mean predicted reward on steps with and without
  one; the correlation of prediction and target; and the share of the reward variance explained,
  1 - MSE(prediction) / MSE(predicting the mean). ``dyn/reward_loss`` alone hides this: a
  unit-variance Gaussian NLL is 0.919 + MSE / 2, so on sparse rewards its whole range is a few
  hundredths;
- episode ends: the mean predicted chance of an end after a step (1 - the discount head's
  probability over gamma) against the share of those steps that terminated; the mean chance on
  the steps that terminated and on the rest; and how well the chance ranks them (``end_auc``: the
  probability that a terminating step gets a higher chance than a step that does not, 0.5 for a
  head that cannot tell them apart). An average that matches the game's says nothing about
  whether the model sees which steps end an episode: the ranking does;
- reconstruction: the mean absolute pixel error of the decoded newest frame, on pixels that changed
  since the previous frame (what moves: bullets, a ball) and on the rest;
- imagination against the game: from ``--starts`` real steps among the newest ``--recent`` of the
  replay (or the ``--recent`` from step ``--at``), the world model imagines ``--horizon`` steps
  (default: the run's imagination horizon), once with the actions the agent really took next
  ("replayed") and once with the run's final policy ("policy"), and the expected imagined reward
  over those steps,
  sum_t P(no imagined end before t) * r_hat_t, is set beside the rewards the game really paid over
  the same steps. Both are cut at the real episode's end. The replayed actions make it a test of
  the world model alone (the same actions, so a faithful model pays the same on average); the
  policy's line compares imagination with what a slightly older policy earned (the newest steps
  of the replay were played by the policies of the last few thousand interactions). Imagined ends
  are compared the same way: the probability that the imagined episode ends within the window
  (1 - product of the predicted continuation probabilities, the discount head over gamma)
  against the share of windows whose real episode terminated. "teacher" is the same sum with the
  real latents, actions and rewards fed in (the world model's loss reads them so): the gap between
  it and the replayed line is what imagining the latents costs. ``replayed_gap`` is the mean of
  imagined minus real over the windows, with its standard error. ``per_step_*`` break the three
  down by step of the window (the mean reward at step j over the windows whose real episode is
  still going there): a shortfall that grows with j is latents drifting as imagination goes on.
  ``--read-mean`` reads a two-hot reward head as its distribution's mean (``TwoHotSymlog.mean``)
  instead of symexp of its expected bin, which reads a reward paid at random low.

It answers "does the model see the events that pay?" and "does its imagination pay what the game
pays?" (on MinAtar Space Invaders: see docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from twm.agent import Agent
from twm.imagination import ImaginationStart, imagine
from twm.models.actor_critic import Actor
from twm.models.batch import TorchSequenceBatch
from twm.models.dynamics import DynamicsOutput
from twm.models.observation import frames_to_float
from twm.models.world_model import WorldModel
from twm.replay import ReplayBuffer
from twm.training.checkpoint import CheckpointError, CheckpointManager, agent_from_checkpoint


def reward_stats(pred: np.ndarray, target: np.ndarray) -> dict[str, float | int]:
    """Predicted against real rewards of the same steps (see the module docstring)."""
    rewarded = target != 0
    mse, mse_mean = float(((pred - target) ** 2).mean()), float(((target - target.mean()) ** 2).mean())
    nan = float("nan")
    # Rewards that never vary (CartPole's +1 at every step) have no variance to explain: float32
    # rounding of one value leaves a mean squared deviation of about 1e-14, not 0.
    varies = target.std() > 1e-6 * max(1.0, float(np.abs(target).max()))
    return {
        "steps": int(target.size),
        "rewarded_share": float(rewarded.mean()),
        "pred_on_rewarded": float(pred[rewarded].mean()) if rewarded.any() else nan,
        "target_on_rewarded": float(target[rewarded].mean()) if rewarded.any() else nan,
        "pred_on_unrewarded": float(pred[~rewarded].mean()) if (~rewarded).any() else nan,
        "correlation": float(np.corrcoef(pred, target)[0, 1]) if varies and pred.std() > 0 else nan,
        "variance_explained": 1.0 - mse / mse_mean if varies else nan,
    }


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (the Mann-Whitney U / n1 n0)."""
    positive = positive.astype(bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    mean_rank = last - (counts - 1) / 2.0  # ties share their mean rank
    ranks = mean_rank[inverse]
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def end_stats(pred: np.ndarray, terminated: np.ndarray) -> dict[str, float]:
    """Predicted chances of an episode end after each step against the steps that terminated."""
    ended = terminated.astype(bool)
    nan = float("nan")
    return {
        "end_pred": float(pred.mean()),
        "end_real": float(ended.mean()),
        "end_pred_on_terminal": float(pred[ended].mean()) if ended.any() else nan,
        "end_pred_elsewhere": float(pred[~ended].mean()) if (~ended).any() else nan,
        "end_auc": auc(pred, ended),
    }


def real_windows(
    replay: ReplayBuffer, k: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The game's side of windows of ``horizon`` steps starting at steps ``k`` (K,): per window the
    steps up to and including the first end of its episode (``horizon`` if none), the rewards paid
    over those steps and whether that end was a termination (not a time limit)."""
    window = k[:, None] + np.arange(horizon)[None, :]  # (K, H) step indices
    terminated, truncated = replay.terminated[window], replay.truncated[window]
    ended = terminated | truncated
    lengths = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, horizon).astype(np.int64)
    inside = np.arange(horizon)[None, :] < lengths[:, None]
    sums = np.where(inside, replay.rewards[window].astype(np.float64), 0.0).sum(axis=1)
    return lengths, sums, terminated[np.arange(k.size), lengths - 1]


def expected_reward_and_end(
    rewards: np.ndarray, continues: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per window (K, H) of imagined rewards r_hat_t and continuation probabilities c_t, cut after
    ``lengths`` steps: the expected reward sum_{t<L} (prod_{s<t} c_s) r_hat_t and the probability
    of an end within the window, 1 - prod_{t<L} c_t."""
    K, H = rewards.shape
    inside = np.arange(H)[None, :] < lengths[:, None]  # (K, H)
    c = np.where(inside, continues, 1.0)
    alive_after = np.cumprod(c, axis=1)  # P(no end up to and including t)
    alive_before = np.concatenate([np.ones((K, 1)), alive_after[:, :-1]], axis=1)
    return (np.where(inside, alive_before * rewards, 0.0)).sum(axis=1), 1.0 - alive_after[:, -1]


class ReplayedActions(nn.Module):
    """A stand-in actor for ``imagine`` that plays given actions (B, H), one column per step."""

    def __init__(self, actions: Tensor) -> None:
        super().__init__()
        self.actions, self.t = actions, 0

    def sample(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        action = self.actions[:, self.t]
        self.t += 1
        return action


def teacher_forced(
    wm: WorldModel, batch: TorchSequenceBatch, next_latent: bool = False
) -> tuple[Tensor, DynamicsOutput]:
    """The world model reading a replay batch as its loss does (call it under ``torch.no_grad``):
    the encoder's sampled latents (B, T+1, C*K) of the context step and steps 1..T, and the
    dynamics' output on them with the real actions and rewards. With ``next_latent`` the latents
    are (B, T+2, C*K), the observation after step T encoded too (the dynamics read the first T+1)."""
    obs = batch.obs if next_latent else batch.obs[:, :-1]  # (B, T+2 or T+1, S, H, W)
    B, n = obs.shape[:2]
    z = wm.obs_model.sample(wm.obs_model.encode(obs.flatten(0, 1))).unflatten(0, (B, n))
    dyn_z = z[:, :-1] if next_latent else z  # (B, T+1, C*K)
    return z, wm.dynamics(dyn_z, batch.actions, batch.rewards[:, :-1], batch.dones[:, :-1])


def imagination_check(
    agent: Agent, replay: ReplayBuffer, starts: int, recent: int, horizon: int, seed: int, at: int = -1
) -> dict[str, float | int | list[float]]:
    """Imagined against real rewards and ends over ``horizon`` steps from real steps (module
    docstring); windows start among ``recent`` steps from step ``at`` (-1: the newest steps)."""
    size, H = len(replay), horizon
    first = max(1, size - recent if at < 0 else at)
    candidates = np.arange(first, min(first + recent, size - H))  # k-1 is the context step; k..k+H-1 stored
    if candidates.size == 0:
        raise CheckpointError(f"the replay holds {size} steps: too few for windows of {H} steps")
    rng = np.random.default_rng(seed)
    k = np.sort(rng.choice(candidates, size=min(starts, candidates.size), replace=False))  # (K,)
    lengths, real_sum, real_end = real_windows(replay, k, H)

    wm, cfg = agent.world_model, agent.cfg
    obs_model, gamma = wm.obs_model, cfg.env.discount
    generator = torch.Generator().manual_seed(seed)

    def latents(steps: np.ndarray) -> Tensor:  # sampled, as imagination's starts are in an update
        return obs_model.sample(obs_model.encode(torch.from_numpy(replay.stacked_obs(steps))), generator)

    def fresh_latents(n: int) -> Tensor:
        return latents(rng.integers(0, size, n))

    context = k - 1  # the replay's arrays indexed by step arrays are copies, so torch can own them
    with torch.no_grad():
        start = ImaginationStart(
            context_z=latents(context),
            context_action=torch.from_numpy(replay.actions[context]),
            context_reward=torch.from_numpy(replay.rewards[context]),
            context_done=torch.from_numpy(replay.terminated[context] | replay.truncated[context]),
            start_z=latents(k),
        )
    out: dict[str, float | int | list[float]] = {
        "imagination_windows": int(k.size),
        "imagination_from": int(first),
        "imagination_horizon": H,
        "real_reward": float(real_sum.mean()),
        "real_end_share": float(real_end.mean()),
    }
    window = k[:, None] + np.arange(H)[None, :]  # (K, H) step indices
    # Teacher-forced: the real latents, actions, rewards and ends of the window, as the world
    # model's loss reads them (one pass, no imagined latent).
    steps = np.concatenate([context[:, None], window], axis=1)  # (K, H+1): context step, then the window
    with torch.no_grad(), wm.autocast():
        forced = wm.dynamics(
            latents(steps.reshape(-1)).reshape(k.size, H + 1, -1),
            torch.from_numpy(replay.actions[steps]),
            torch.from_numpy(replay.rewards[steps[:, :-1]]),
            torch.from_numpy(replay.terminated[steps[:, :-1]] | replay.truncated[steps[:, :-1]]),
        )

    def expected(rewards: Tensor, discounts: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per window: the expected reward and end, from predicted rewards and discount probabilities (K, H)."""
        continues = (discounts.double() / gamma).clamp(max=1.0).numpy()  # P(continue) = discount / gamma
        return expected_reward_and_end(rewards.double().numpy(), continues, lengths)

    imagined, end = expected(forced.reward_mean[:, 1:], forced.discount_logit[:, 1:].sigmoid())
    out["teacher_reward"], out["teacher_end"] = float(imagined.mean()), float(end.mean())
    # Step by step, over the windows whose real episode is still going at that step: does the
    # shortfall grow with the depth of imagination (latents drifting) or is it there from the first step?
    going = np.arange(H)[None, :] < lengths[:, None]  # (K, H)

    def per_step(rewards: np.ndarray) -> list[float]:
        return [
            float(rewards[going[:, j], j].mean()) if going[:, j].any() else float("nan") for j in range(H)
        ]

    out["per_step_real"] = per_step(replay.rewards[window].astype(np.float64))
    out["per_step_teacher"] = per_step(forced.reward_mean[:, 1:].double().numpy())
    actors = {"replayed": ReplayedActions(torch.from_numpy(replay.actions[window])), "policy": agent.actor}
    for name, actor in actors.items():
        with wm.autocast():
            rollout = imagine(
                wm.dynamics,
                obs_model,
                cast(Actor, actor),
                start,
                H,
                cfg.actor_critic.discount_threshold,
                fresh_latents,
                generator,
                policy_reads_h=agent.policy_reads_h,
            )
        imagined, end = expected(rollout.rewards, rollout.discounts)
        out[f"{name}_imagined_reward"] = float(imagined.mean())
        out[f"{name}_imagined_end"] = float(end.mean())
        if name == "replayed":  # the same actions, so the windows pair up
            out["per_step_replayed"] = per_step(rollout.rewards.double().numpy())
            gap = imagined - real_sum
            out["replayed_gap"] = float(gap.mean())
            out["replayed_gap_se"] = (
                float(gap.std(ddof=1) / np.sqrt(gap.size)) if gap.size > 1 else float("nan")
            )
            varies = imagined.std() > 0 and real_sum.std() > 0
            out["replayed_correlation"] = (
                float(np.corrcoef(imagined, real_sum)[0, 1]) if varies else float("nan")
            )
    return out


def probe(
    run_dir: str,
    batches: int,
    batch_size: int,
    seed: int,
    starts: int = 512,
    recent: int = 5000,
    horizon: int = 0,
    at: int = -1,
    read_mean: bool = False,
) -> dict[str, float | int | str | list[float]]:
    state, replay, path = CheckpointManager(run_dir).load_latest()
    agent = agent_from_checkpoint(state)
    cfg, wm = agent.cfg, agent.world_model
    if read_mean:  # every reward prediction below (teacher-forced and imagined) reads the head's mean
        bins = wm.dynamics.reward_bins
        if bins is None:
            raise CheckpointError("--read-mean reads a two-hot reward head; this run's is Gaussian")
        bins.decode = bins.mean  # type: ignore[method-assign]
    wm.eval()
    torch.manual_seed(seed)
    c = cfg.frame_channels
    T = cfg.replay.sequence_length
    preds, targets, moved_err, still_err, moved_share = [], [], [], [], []
    ends_pred: list[np.ndarray] = []
    ends_real: list[np.ndarray] = []
    with torch.no_grad():
        for _ in range(batches):
            batch = TorchSequenceBatch.from_numpy(replay.sample_sequences_uniform(batch_size, T), "cpu")
            obs = batch.obs[:, :-1]  # (B, T+1, S, 64, 64): context step and steps 1..T
            z, out = teacher_forced(wm, batch)  # z: (B, T+1, C*K)
            z = z.flatten(0, 1)  # (B*(T+1), C*K)
            preds.append(out.reward_mean[:, 1:].flatten().numpy())  # r_1..r_T, as the loss reads them
            targets.append(batch.rewards[:, 1:].flatten().numpy())
            # The chance of an episode end after each step, 1 - P(continue), against real terminations.
            ends_pred.append(
                (1 - (out.discount_logit[:, 1:].sigmoid() / cfg.env.discount).clamp(max=1)).flatten().numpy()
            )
            ends_real.append(batch.terminated[:, 1:].flatten().numpy())
            # (N, S, H, W), S = frame_stack * c; vectors as they are
            frames = frames_to_float(obs.flatten(0, 1))
            if frames.shape[1] < 2 * c:
                continue  # one frame per observation: nothing to tell what moved
            newest, previous = frames[:, -c:], frames[:, -2 * c : -c]
            error = (wm.obs_model.decode(z)[:, -c:] - newest).abs()
            moved = (newest - previous).abs() > 1e-3
            moved_err.append(float(error[moved].mean()) if moved.any() else float("nan"))
            still_err.append(float(error[~moved].mean()))
            moved_share.append(float(moved.float().mean()))
    return {
        "checkpoint": path.name,
        "interactions": int(state["interactions"]),
        **reward_stats(np.concatenate(preds), np.concatenate(targets)),
        **end_stats(np.concatenate(ends_pred), np.concatenate(ends_real)),
        "recon_err_moved": float(np.nanmean(moved_err)) if moved_err else float("nan"),
        "recon_err_still": float(np.mean(still_err)) if still_err else float("nan"),
        "moved_pixel_share": float(np.mean(moved_share)) if moved_share else float("nan"),
        **imagination_check(agent, replay, starts, recent, horizon or cfg.actor_critic.horizon, seed, at),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--starts", type=int, default=512, help="imagination windows to compare (default 512)"
    )
    parser.add_argument(
        "--recent", type=int, default=5000, help="windows start among the newest N steps (5000)"
    )
    parser.add_argument(
        "--at",
        type=int,
        default=-1,
        help="windows start among the N steps from this step instead (older data)",
    )
    parser.add_argument(
        "--horizon", type=int, default=0, help="steps per window (default: the run's horizon)"
    )
    parser.add_argument(
        "--read-mean",
        action="store_true",
        help="read the two-hot reward head as its distribution's mean, sum_i p_i symexp(b_i), instead of "
        "symexp of the expected bin (the reading that dynamics.reward_bins=symexp makes, on this head's bins)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        r = probe(
            args.run_dir,
            args.batches,
            args.batch_size,
            args.seed,
            args.starts,
            args.recent,
            args.horizon,
            args.at,
            args.read_mean,
        )
    except CheckpointError as exc:
        print(f"world_model_probe: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{args.run_dir}: {r['checkpoint']} ({r['interactions']} interactions), {r['steps']} replay steps")
    print(
        f"reward: {r['rewarded_share']:.1%} of steps rewarded; predicted {r['pred_on_rewarded']:.3f} there "
        f"(target {r['target_on_rewarded']:.3f}) and {r['pred_on_unrewarded']:.3f} elsewhere; "
        f"correlation {r['correlation']:.3f}, variance explained {r['variance_explained']:.1%}"
    )
    print(
        f"episode ends: predicted {r['end_pred']:.2%} a step, real {r['end_real']:.2%}; "
        f"{r['end_pred_on_terminal']:.3f} on the ending steps, {r['end_pred_elsewhere']:.4f} elsewhere, "
        f"AUC {r['end_auc']:.3f}"
    )
    print(
        f"reconstruction |error|: {r['recon_err_moved']:.3f} on pixels that moved "
        f"({r['moved_pixel_share']:.1%} of them), {r['recon_err_still']:.3f} on the rest"
    )
    print(
        f"imagination, {r['imagination_windows']} windows of {r['imagination_horizon']} steps from replay step "
        f"{r['imagination_from']} on: the game paid {r['real_reward']:.3f} (episode ended in {r['real_end_share']:.1%}); "
        f"imagined with the replayed actions {r['replayed_imagined_reward']:.3f} (end {r['replayed_imagined_end']:.1%}, "
        f"gap {r['replayed_gap']:+.3f} ± {r['replayed_gap_se']:.3f}, correlation {r['replayed_correlation']:.3f}), "
        f"with the policy {r['policy_imagined_reward']:.3f} "
        f"(end {r['policy_imagined_end']:.1%}); teacher-forced {r['teacher_reward']:.3f} (end {r['teacher_end']:.1%})"
    )
    for name in ("real", "teacher", "replayed"):
        values = cast(list, r[f"per_step_{name}"])
        print(f"  reward per step, {name}: " + " ".join(f"{v:.3f}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
