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
- reconstruction: the mean absolute pixel error of the decoded newest frame, on pixels that changed
  since the previous frame (what moves: bullets, a ball) and on the rest.

It answers "does the model see the events that pay?" (on MinAtar Space Invaders: see docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from twm.models.batch import TorchSequenceBatch
from twm.models.observation import frames_to_float
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


def probe(run_dir: str, batches: int, batch_size: int, seed: int) -> dict[str, float | int | str]:
    state, replay, path = CheckpointManager(run_dir).load_latest()
    agent = agent_from_checkpoint(state)
    cfg, wm = agent.cfg, agent.world_model
    wm.eval()
    torch.manual_seed(seed)
    c = cfg.frame_channels
    T = cfg.replay.sequence_length
    preds, targets, moved_err, still_err, moved_share = [], [], [], [], []
    with torch.no_grad():
        for _ in range(batches):
            batch = TorchSequenceBatch.from_numpy(replay.sample_sequences_uniform(batch_size, T), "cpu")
            obs = batch.obs[:, :-1]  # (B, T+1, S, 64, 64): context step and steps 1..T
            B, steps = obs.shape[:2]
            z = wm.obs_model.sample(wm.obs_model.encode(obs.flatten(0, 1)))  # (B*(T+1), C*K)
            out = wm.dynamics(
                z.unflatten(0, (B, steps)), batch.actions, batch.rewards[:, :-1], batch.dones[:, :-1]
            )
            preds.append(out.reward_mean[:, 1:].flatten().numpy())  # r_1..r_T, as the loss reads them
            targets.append(batch.rewards[:, 1:].flatten().numpy())
            frames = frames_to_float(obs.flatten(0, 1))  # (N, S, H, W), S = frame_stack * c; vectors as they are
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
        "recon_err_moved": float(np.nanmean(moved_err)) if moved_err else float("nan"),
        "recon_err_still": float(np.mean(still_err)) if still_err else float("nan"),
        "moved_pixel_share": float(np.mean(moved_share)) if moved_share else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        r = probe(args.run_dir, args.batches, args.batch_size, args.seed)
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
        f"reconstruction |error|: {r['recon_err_moved']:.3f} on pixels that moved "
        f"({r['moved_pixel_share']:.1%} of them), {r['recon_err_still']:.3f} on the rest"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
