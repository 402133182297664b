"""Do a run's world-model states hold where the rewards are? Reward heads refitted on frozen features.

    python benchmarks/reward_refit.py runs/plus-grid/asterix/plus-s2
    python benchmarks/reward_refit.py runs/plus-grid/asterix/plus-s2 --steps 5000 --json

On Asterix and Seaquest the `plus` reward heads predict almost nothing on the rare rewarded steps
(0.3-2.7 % of the reward variance explained, docs/results.md). Either the world model's states h_t
do not hold what tells a rewarded step from another (the encoder or the transformer dropped it),
or they do and the head, trained on about one rewarded step per batch, did not learn to read it.
This script tells the two apart on a run's newest resume checkpoint:

1. Every step of the replay once: the replay is cut into consecutive windows of the run's sequence
   length, and the world model reads each as an update does (eval mode, no gradient; the step
   before a window is its context), giving h_t, the run's reward prediction and r_t for each step.
2. The older ``1 - --test`` share of the steps trains, the newest ``--test`` share tests (a split in
   time: the states and rewards of the test part were never fitted here).
3. Three readers of the frozen h_t, each scored on the test steps:
   - ``run``: the run's own reward head as it is;
   - ``head``: a copy of it trained ``--steps`` more batches of the run's batch size (steps drawn
     uniformly, its loss and learning rate, dropout on), the updates the run's head would get
     with many more world-model updates;
   - ``linear``: a logistic regression on the standardised h_t for "this step holds a reward",
     its classes weighted equally (a linear probe: what a simple reader finds);
   - ``observation`` (``--observation-probe``; grid and vector observations only): a classifier
     "rewarded or not" that reads the game itself instead of the world model, the stacked
     observation of the step and its action, an MLP of two hidden layers of 256 trained the same
     way (balanced classes, ``--steps`` batches of 256). What it finds is in the observations; a
     world model whose states rank the steps much worse than it has dropped it.

With ``--next-latent``, two more readers, both new reward heads of the run's head's size trained
``--steps`` batches like ``head``: ``fresh`` on h_t alone and ``outcome`` on h_t beside z_{t+1},
the encoder's latent of the observation the step led to. TWM predicts r_t from h_t, the
transformer's output at the action token, before the outcome is seen (Dreamer reads the reward
from the state after the step); if ``outcome`` ranks the rewarded steps far better than
``fresh``, the reward is easier to learn from what the step did than to foresee.

Each reports the share of the reward variance explained (1 - MSE / variance; ``linear`` has no
reward scale and reports none), the mean prediction on rewarded steps, and the AUC: the chance
that a rewarded test step is scored above an unrewarded one (0.5: no better than chance, 1: every
rewarded step ranked first). A high AUC with little variance explained is a head that ranks the
steps but does not dare to predict a reward; an AUC near 0.5 for every reader is states that do not
hold the information.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from twm.agent import Agent
from twm.models.batch import TorchSequenceBatch
from twm.models.distributions import zero_output_layer
from twm.models.dynamics import mlp_head
from twm.replay import ReplayBuffer
from twm.training.checkpoint import CheckpointError, CheckpointManager, agent_from_checkpoint

# The scripts under benchmarks/ are files, not a package: the probe's reward statistics and its
# teacher-forced pass are read from the script beside this one.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_model_probe import auc, reward_stats, teacher_forced  # noqa: E402


def tiling_starts(size: int, seq_len: int) -> np.ndarray:
    """Window starts 1, 1 + T, 1 + 2T, ... of a buffer of ``size`` steps: every step from 1 on in
    exactly one window of ``seq_len`` steps, as far as whole windows (with their context step and
    next observation, ``ReplayBuffer.sequences``) fit."""
    last = size - seq_len - 1  # the last valid start
    return np.arange(1, last + 1, seq_len, dtype=np.int64)


def replay_features(
    agent: Agent, replay: ReplayBuffer, batch_size: int = 64, next_latents: bool = False
) -> tuple[Tensor, np.ndarray, np.ndarray, np.ndarray, Tensor | None]:
    """h_t (N, d), the run's reward predictions (N,), r_t (N,) and the step indices (N,) of every
    step in ``tiling_starts`` windows, the world model in eval mode; with ``next_latents`` also
    z_{t+1} (N, C*K) as bools, the encoder's sample of the observation after each step."""
    wm = agent.world_model
    wm.eval()
    T = agent.cfg.replay.sequence_length
    starts = tiling_starts(replay.size, T)
    if starts.size == 0:
        raise ValueError(f"the replay holds {replay.size} steps: too few for one window of {T}")
    hs, preds, rewards, nexts = [], [], [], []
    with torch.no_grad():
        for i in range(0, starts.size, batch_size):
            chunk = starts[i : i + batch_size]
            batch = TorchSequenceBatch.from_numpy(replay.sequences(chunk, T), "cpu")
            # z: (B, T+2, C*K), the context step, steps 1..T and the observation after step T
            z, out = teacher_forced(wm, batch, next_latent=True)
            if next_latents:
                nexts.append(z[:, 2:].flatten(0, 1) > 0.5)  # (B*T, C*K): z_{t+1} of steps 1..T
            hs.append(out.h[:, 1:].flatten(0, 1))  # (B*T, d): the states that predict r_1..r_T
            preds.append(out.reward_mean[:, 1:].flatten().numpy())
            rewards.append(batch.rewards[:, 1:].flatten().numpy())
    index = (starts[:, None] + np.arange(T)[None, :]).reshape(-1)  # (N,) step of each row
    z_next = torch.cat(nexts) if next_latents else None
    return torch.cat(hs), np.concatenate(preds), np.concatenate(rewards), index, z_next


def train_head(
    agent: Agent,
    h: Tensor,
    rewards: np.ndarray,
    steps: int,
    batch_size: int,
    seed: int,
    head: nn.Module | None = None,
) -> nn.Module:
    """``head`` (default: a copy of the run's reward head) trained ``steps`` batches on the frozen
    inputs ``h`` (N, in), with the run's reward loss (two-hot cross-entropy or the Gaussian's
    squared error) and its dynamics learning rate. ``h`` may be bools (latents), read as floats."""
    dyn = agent.world_model.dynamics
    head = (copy.deepcopy(dyn.reward_head) if head is None else head).train()
    opt = torch.optim.Adam(head.parameters(), lr=agent.cfg.dynamics.lr, eps=agent.cfg.dynamics.eps)
    target = torch.from_numpy(rewards)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(0, h.shape[0], (batch_size,), generator=gen)
        out = head(h[pick].float())
        if dyn.reward_bins is None:
            loss = (0.5 * (out.squeeze(-1) - target[pick]) ** 2).mean()
        else:
            loss = dyn.reward_bins.loss(out, target[pick]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def head_predictions(agent: Agent, head: nn.Module, h: Tensor) -> np.ndarray:
    """The decoded reward (N,) of ``head`` on states ``h`` (N, d)."""
    bins = agent.world_model.dynamics.reward_bins
    with torch.no_grad():
        out = head(h.float())
        return (out.squeeze(-1) if bins is None else bins.decode(out)).numpy()


def fresh_head(agent: Agent, in_dim: int, seed: int) -> nn.Module:
    """A new reward head of the run's size reading ``in_dim`` inputs, initialised as a run's is
    (its two-hot output layer at zero)."""
    cfg = agent.cfg.dynamics
    torch.manual_seed(seed)
    bins = agent.world_model.dynamics.reward_bins
    head = mlp_head(
        in_dim,
        cfg.reward_head_hidden,
        cfg.reward_head_layers,
        1 if bins is None else bins.num_bins,
        cfg.dropout,
    )
    if bins is not None:
        zero_output_layer(cast(nn.Linear, head[-1]))
    return head


def linear_probe(h: Tensor, positive: np.ndarray, test_h: Tensor, steps: int = 500) -> np.ndarray:
    """Scores (logits) on ``test_h`` of a logistic regression "rewarded or not" fitted full-batch on
    standardised ``h`` with the two classes weighted equally."""
    mean, std = h.mean(0), h.std(0).clamp_min(1e-6)
    x, x_test = (h - mean) / std, (test_h - mean) / std
    y = torch.from_numpy(positive.astype(np.float32))
    n1 = float(y.sum())
    weight = torch.where(y > 0, 0.5 / max(n1, 1.0), 0.5 / max(y.numel() - n1, 1.0))
    probe = nn.Linear(h.shape[1], 1)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        logits = probe(x).squeeze(-1)
        loss = (weight * nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return probe(x_test).squeeze(-1).numpy()


def observation_inputs(replay: ReplayBuffer, index: np.ndarray, num_actions: int) -> Tensor:
    """(N, stack * frame size + actions) floats: each step's stacked observation, flattened (grid
    cells 0/1, vectors as stored), then its action one-hot."""
    obs = replay.stacked_obs(index).reshape(index.size, -1).astype(np.float32)
    actions = np.eye(num_actions, dtype=np.float32)[replay.actions[index]]
    return torch.from_numpy(np.concatenate([obs, actions], axis=1))


def observation_probe(
    x: Tensor, positive: np.ndarray, test_x: Tensor, steps: int, seed: int, hidden: int = 256
) -> np.ndarray:
    """Scores (logits) on ``test_x`` of an MLP classifier "rewarded or not" trained on ``x`` in
    batches of 256, half of each batch rewarded rows (the two classes weighted equally)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(x.shape[1], hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    pos, neg = torch.from_numpy(np.flatnonzero(positive)), torch.from_numpy(np.flatnonzero(~positive))
    y = torch.cat([torch.ones(128), torch.zeros(128)])
    for _ in range(steps):
        pick = torch.cat(
            [
                pos[torch.randint(0, pos.numel(), (128,), generator=gen)],
                neg[torch.randint(0, neg.numel(), (128,), generator=gen)],
            ]
        )
        loss = nn.functional.binary_cross_entropy_with_logits(net(x[pick]).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(test_x).squeeze(-1).numpy()


def refit(
    run_dir: str, steps: int, test: float, seed: int, observations: bool = False, next_latent: bool = False
) -> dict[str, float | int | str]:
    state, replay, path = CheckpointManager(run_dir).load_latest()
    agent = agent_from_checkpoint(state)
    torch.manual_seed(seed)
    h, run_pred, rewards, index, z_next = replay_features(agent, replay, next_latents=next_latent)
    split = int(replay.size * (1.0 - test))
    train, held = index < split, index >= split
    positive = rewards != 0
    out: dict[str, float | int | str] = {
        "checkpoint": path.name,
        "interactions": int(state["interactions"]),
        "train_steps": int(train.sum()),
        "test_steps": int(held.sum()),
        "train_rewarded": int(positive[train].sum()),
        "test_rewarded": int(positive[held].sum()),
        "refit_steps": steps,
    }
    train_h, test_h = h[torch.from_numpy(train)], h[torch.from_numpy(held)]
    head = train_head(
        agent,
        train_h,
        rewards[train],
        steps,
        agent.cfg.replay.batch_size * agent.cfg.replay.sequence_length,
        seed,
    )
    readers = {
        "run": run_pred[held],
        "head": head_predictions(agent, head, test_h),
    }
    if z_next is not None:
        batch = agent.cfg.replay.batch_size * agent.cfg.replay.sequence_length
        hz = torch.cat([h, z_next.float()], dim=1)  # (N, d + C*K)
        train_hz, test_hz = hz[torch.from_numpy(train)], hz[torch.from_numpy(held)]
        for name, x, test_x in (("fresh", train_h, test_h), ("outcome", train_hz, test_hz)):
            new = train_head(
                agent, x, rewards[train], steps, batch, seed, fresh_head(agent, x.shape[1], seed)
            )
            readers[name] = head_predictions(agent, new, test_x)
    for name, pred in readers.items():
        stats = reward_stats(pred, rewards[held])
        out[f"{name}_variance_explained"] = stats["variance_explained"]
        out[f"{name}_pred_on_rewarded"] = stats["pred_on_rewarded"]
        out[f"{name}_auc"] = auc(pred, positive[held])
    out["head_train_variance_explained"] = reward_stats(
        head_predictions(agent, head, train_h), rewards[train]
    )["variance_explained"]
    out["linear_auc"] = auc(linear_probe(train_h, positive[train], test_h), positive[held])
    if observations:
        if agent.cfg.env.observation == "picture":
            raise ValueError("--observation-probe reads grid or vector observations, not pictures")
        x = observation_inputs(replay, index, agent.num_actions)
        scores = observation_probe(
            x[torch.from_numpy(train)], positive[train], x[torch.from_numpy(held)], steps, seed
        )
        out["observation_auc"] = auc(scores, positive[held])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--steps", type=int, default=5000, help="batches the copied head trains (5000)")
    parser.add_argument("--test", type=float, default=0.2, help="newest share of the steps held out (0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--observation-probe", action="store_true", help="also a classifier on the game's grid or vector"
    )
    parser.add_argument(
        "--next-latent", action="store_true", help="also new heads on h_t and on h_t beside z_{t+1}"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0.0 < args.test < 1.0 or args.steps < 0:
        print("reward_refit: error: --test must be in (0, 1) and --steps >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        r = refit(args.run_dir, args.steps, args.test, args.seed, args.observation_probe, args.next_latent)
    except (CheckpointError, ValueError) as exc:
        print(f"reward_refit: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{args.run_dir}: {r['checkpoint']} ({r['interactions']} interactions); fitted on {r['train_steps']} "
        f"steps ({r['train_rewarded']} rewarded), tested on the newest {r['test_steps']} ({r['test_rewarded']} rewarded)"
    )
    for name, what in (
        ("run", "the run's head"),
        ("head", f"its copy after {r['refit_steps']} more batches"),
        ("fresh", f"a new head on h_t, {r['refit_steps']} batches"),
        ("outcome", f"a new head on h_t and z_t+1, {r['refit_steps']} batches"),
    ):
        if f"{name}_auc" not in r:
            continue
        print(
            f"  {what}: variance explained {r[f'{name}_variance_explained']:.1%}, "
            f"{r[f'{name}_pred_on_rewarded']:.3f} predicted on rewarded steps, AUC {r[f'{name}_auc']:.3f}"
        )
    print(
        f"  (the copy on its own training steps: variance explained {r['head_train_variance_explained']:.1%})"
    )
    print(f"  a linear probe of h for 'rewarded': AUC {r['linear_auc']:.3f}")
    if "observation_auc" in r:
        print(
            f"  a classifier of the observation and action (not the world model): AUC {r['observation_auc']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
