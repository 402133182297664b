"""Model-free baseline: Stable-Baselines3 DQN or PPO on a MinAtar game, at a fixed interaction budget.

    python benchmarks/baseline_model_free.py --game breakout --algo dqn --steps 100000 --seed 0 \\
        --sticky 0.1 --eval-interval 5000 --eval-episodes 10 --final-episodes 30 \\
        --out runs/baseline/breakout-dqn-s0.json [--minutes 60] [--threads 1]

A reference point for the world-model agent at equal interactions ("steps" = environment
interactions = MinAtar frames; MinAtar has no frame skip). Needs ``stable-baselines3`` (a dependency
of this script only, not of the ``twm`` package) and ``minatar``.

Environment (same settings for training and evaluation)
    The registered ``MinAtar/<Game>-v1`` gymnasium id of ``minatar.gym`` (the minimal action set),
    with ``sticky_action_prob=--sticky`` and ``difficulty_ramping=True`` (MinAtar's defaults). The
    10x10xC boolean state is given to the network as a uint8 0/1 tensor, channels first, and cast
    to float without scaling. No frame stacking, no reward clipping, no time limit in training
    (as in the MinAtar paper). Note that the MinAtar paper's own DQN used all 6 actions; here the
    minimal action set is used (the setting of this comparison).

Network (both algorithms)
    The MinAtar paper's network (Young & Tian 2019, arXiv:1903.03176): one conv layer, 16 filters
    3x3 stride 1, ReLU, then a fully connected layer of 128 units, ReLU, as an SB3 features
    extractor, followed by a linear head (``net_arch=[]``): Q-values for DQN; policy logits and a
    value (sharing the extractor) for PPO.

DQN: the MinAtar paper's published hyperparameters (its examples/dqn.py), mapped onto SB3
    replay buffer 100,000; batch 32; centered RMSProp lr 0.00025, squared-gradient momentum
    (alpha) 0.95, min squared gradient (eps) 0.01; gamma 0.99; Huber loss (SB3's smooth L1);
    one gradient step per interaction; hard target update every 1,000 steps; replay start
    5,000 steps of uniform random actions; then epsilon annealed linearly 1.0 -> 0.1 over the
    next 100,000 frames (exactly as in the paper's code, not SB3's fraction-of-the-run schedule);
    no gradient clipping (the paper has none; SB3's default of 10 is switched off).
    What this means at 100k interactions: the paper tuned this for 5M frames. At 100k, epsilon
    is still annealing when the run ends -- it is 0.145 at the last step, and 0.59 on
    average over the run -- so the behaviour policy is mostly exploratory and the replay buffer
    never wraps. These are nonetheless the published values, used unchanged; evaluation is
    greedy, so the exploration does not directly lower the evaluation scores.

PPO: SB3 rl-baselines3-zoo's Atari settings (hyperparams/ppo.yml, ``atari:``)
    8 envs, n_steps 128 (1,024 interactions per update), 4 epochs, minibatch 256, Adam lr 2.5e-4
    and clip range 0.1 both annealed linearly to 0 over --steps (the zoo's ``lin_`` schedules),
    ent_coef 0.01, vf_coef 0.5, and SB3's defaults gamma 0.99, GAE lambda 0.95, max_grad_norm 0.5,
    advantage normalisation. The zoo has no MinAtar entry, and the one published MinAtar PPO
    setting we checked (Pgx's examples/minatar-ppo, derived from PureJaxRL: 4,096 parallel envs x
    128 steps, 20M steps) would not complete a single update in 100k interactions, so it is not
    used. The zoo's AtariWrapper
    (frame skip, 84x84 grey, frame stack, reward clipping) does not apply to MinAtar. Not tuned
    for MinAtar.

Evaluation
    Every --eval-interval interactions (and once before training) --eval-episodes full episodes on
    a separate environment seeded with seed + 10,000 (its random stream continues across
    evaluations); at the end --final-episodes more. DQN acts greedily (``deterministic=True``,
    epsilon 0); PPO samples from its policy (``deterministic=False``), as our agent does. The sticky
    actions still apply. An evaluation episode is cut at --eval-max-steps steps (default 10,000;
    its return so far is its score; the JSON counts them in ``eval_truncated_episodes``). This
    guard is needed: in Seaquest a policy that never dives stays at the surface, where neither
    oxygen nor enemies end the episode -- the untrained greedy DQN does exactly that (sticky
    actions only repeat its own action) and its episodes never terminate. Training episodes
    have no limit (exploration ends them).

Wall clock
    --minutes caps the whole run (training and the periodic evaluations; the final evaluation
    always runs after it). The JSON records ``steps_done``, ``train_seconds`` (without
    evaluations) and the overall ``minutes``. A progress line per evaluation goes to stderr; the
    result JSON goes to --out and to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

try:
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.utils import LinearSchedule
except ImportError as error:  # pragma: no cover - only without the optional dependency
    raise SystemExit(
        f"this benchmark needs stable-baselines3: pip install stable-baselines3 ({error})"
    ) from error

import minatar.gym as minatar_gym

GAMES = {
    "breakout": "MinAtar/Breakout-v1",
    "space_invaders": "MinAtar/SpaceInvaders-v1",
    "asterix": "MinAtar/Asterix-v1",
    "freeway": "MinAtar/Freeway-v1",
    "seaquest": "MinAtar/Seaquest-v1",
}
EVAL_SEED_OFFSET = 10_000

# --- environment -------------------------------------------------------------------------------------


class ChannelsFirstUint8(gym.ObservationWrapper):
    """MinAtar's (10, 10, C) bool state as a (C, 10, 10) uint8 0/1 array.

    The bounds are 0..1 (not 0..255), so SB3 does not treat it as an image and neither transposes
    nor divides it by 255; the features extractor casts it to float.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.uint8)


def make_env(game: str, sticky: float) -> gym.Env:
    if GAMES[game] not in gym.registry:
        minatar_gym.register_envs()
    env = gym.make(GAMES[game], sticky_action_prob=sticky, difficulty_ramping=True, disable_env_checker=True)
    return ChannelsFirstUint8(env)


# --- network -----------------------------------------------------------------------------------------


class MinAtarCNN(BaseFeaturesExtractor):
    """Young & Tian (2019): conv 16x3x3 stride 1 + ReLU, then fully connected 128 + ReLU."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128):
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        self.conv = nn.Conv2d(c, 16, kernel_size=3, stride=1)
        self.fc = nn.Linear(16 * (h - 2) * (w - 2), features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(observations.float()))
        return torch.relu(self.fc(x.flatten(1)))


# --- algorithms --------------------------------------------------------------------------------------

DQN_PAPER = {
    "buffer_size": 100_000,
    "batch_size": 32,
    "learning_rate": 0.00025,
    "optimizer": "RMSprop(centered=True, alpha=0.95, eps=0.01)",
    "gamma": 0.99,
    "loss": "huber (smooth_l1)",
    "train_freq": 1,
    "gradient_steps": 1,
    "target_update_interval": 1_000,
    "learning_starts": 5_000,
    "epsilon_start": 1.0,
    "epsilon_end": 0.1,
    "epsilon_anneal_frames": 100_000,
    "epsilon_schedule": "1.0 during the first learning_starts steps, then linear to 0.1 over 100,000 frames",
    "max_grad_norm": None,
    "source": "Young & Tian 2019 (MinAtar), examples/dqn.py",
}

PPO_ZOO_ATARI = {
    "n_envs": 8,
    "n_steps": 128,
    "n_epochs": 4,
    "batch_size": 256,
    "learning_rate": "linear 2.5e-4 -> 0 over --steps",
    "clip_range": "linear 0.1 -> 0 over --steps",
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "max_grad_norm": 0.5,
    "normalize_advantage": True,
    "optimizer": "Adam(eps=1e-5)",
    "source": "rl-baselines3-zoo hyperparams/ppo.yml 'atari' (no MinAtar entry exists; not tuned for MinAtar)",
}


def paper_epsilon(t: int) -> float:
    """The MinAtar paper's behaviour epsilon at frame ``t`` (before ``t``'s action)."""
    start, end = DQN_PAPER["epsilon_start"], DQN_PAPER["epsilon_end"]
    t_learn = t - DQN_PAPER["learning_starts"]
    if t_learn < 0:
        return start
    if t_learn >= DQN_PAPER["epsilon_anneal_frames"]:
        return end
    return start + (end - start) * t_learn / DQN_PAPER["epsilon_anneal_frames"]


class PaperDQN(DQN):
    """SB3 DQN with the MinAtar paper's epsilon schedule (in frames, after the replay start)."""

    def _on_step(self) -> None:
        super()._on_step()
        self.exploration_rate = paper_epsilon(self.num_timesteps)
        self.logger.record("rollout/exploration_rate", self.exploration_rate)


def build_model(algo: str, game: str, sticky: float, seed: int, device: str):
    if algo == "dqn":
        env = make_vec_env(lambda: make_env(game, sticky), n_envs=1, seed=seed)
        p = DQN_PAPER
        model = PaperDQN(
            "CnnPolicy",
            env,
            learning_rate=p["learning_rate"],
            buffer_size=p["buffer_size"],
            learning_starts=p["learning_starts"],
            batch_size=p["batch_size"],
            tau=1.0,
            gamma=p["gamma"],
            train_freq=p["train_freq"],
            gradient_steps=p["gradient_steps"],
            target_update_interval=p["target_update_interval"],
            # Unused: PaperDQN sets the exploration rate itself; kept consistent for SB3's checks.
            exploration_initial_eps=p["epsilon_start"],
            exploration_final_eps=p["epsilon_end"],
            max_grad_norm=math.inf,
            policy_kwargs={
                "features_extractor_class": MinAtarCNN,
                "features_extractor_kwargs": {"features_dim": 128},
                "net_arch": [],
                "normalize_images": False,
                "optimizer_class": torch.optim.RMSprop,
                "optimizer_kwargs": {"alpha": 0.95, "eps": 0.01, "centered": True},
            },
            seed=seed,
            device=device,
            verbose=0,
        )
        return model, dict(p)
    if algo == "ppo":
        p = PPO_ZOO_ATARI
        env = make_vec_env(lambda: make_env(game, sticky), n_envs=p["n_envs"], seed=seed)
        model = PPO(
            "CnnPolicy",
            env,
            learning_rate=LinearSchedule(2.5e-4, 0.0, 1.0),
            n_steps=p["n_steps"],
            batch_size=p["batch_size"],
            n_epochs=p["n_epochs"],
            gamma=p["gamma"],
            gae_lambda=p["gae_lambda"],
            clip_range=LinearSchedule(0.1, 0.0, 1.0),
            ent_coef=p["ent_coef"],
            vf_coef=p["vf_coef"],
            max_grad_norm=p["max_grad_norm"],
            normalize_advantage=p["normalize_advantage"],
            policy_kwargs={
                "features_extractor_class": MinAtarCNN,
                "features_extractor_kwargs": {"features_dim": 128},
                "net_arch": [],
                "normalize_images": False,
            },
            seed=seed,
            device=device,
            verbose=0,
        )
        return model, dict(p)
    raise ValueError(f"unknown algo {algo!r}")


# --- evaluation --------------------------------------------------------------------------------------


def evaluate(
    model, env: gym.Env, episodes: int, deterministic: bool, max_steps: int
) -> tuple[list[float], int]:
    """Returns of ``episodes`` full episodes with the current policy, and how many were cut."""
    scores, truncated = [], 0
    for _ in range(episodes):
        obs, _ = env.reset()
        total, done, t = 0.0, False, 0
        while not done:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, trunc, _ = env.step(int(action))
            total += float(reward)
            t += 1
            done = terminated or trunc
            if not done and max_steps and t >= max_steps:
                truncated += 1
                done = True
        scores.append(total)
    return scores, truncated


class EvalAndBudget(BaseCallback):
    """Evaluates every --eval-interval interactions; stops at --steps or when the wall clock is spent.

    For PPO, stopping at --steps means the last, partial rollout is not trained on (with 8 x 128
    interactions per update, 100,000 interactions are 97 updates and 672 unused steps).
    """

    def __init__(self, run: Run):
        super().__init__()
        self.run = run
        self.next_eval = run.args.eval_interval

    def _on_step(self) -> bool:
        run = self.run
        steps = self.num_timesteps
        if steps >= self.next_eval and steps < run.args.steps:
            run.periodic_eval(steps)
            while self.next_eval <= steps:
                self.next_eval += run.args.eval_interval
        # Stop at exactly --steps interactions (PPO would otherwise finish its last rollout).
        return steps < run.args.steps and not run.over_budget()


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.start = time.perf_counter()
        self.train_start = self.start
        self.eval_seconds = 0.0
        self.curve: list[dict] = []
        self.truncated = 0
        self.last_truncated = 0
        self.eval_env = make_env(args.game, args.sticky)
        self.eval_env.reset(seed=args.seed + EVAL_SEED_OFFSET)
        self.eval_env.action_space.seed(args.seed + EVAL_SEED_OFFSET)
        self.deterministic = args.algo == "dqn"
        self.model = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def train_seconds(self) -> float:
        """Wall time since training began (after building the model), evaluations excluded."""
        return time.perf_counter() - self.train_start - self.eval_seconds

    def over_budget(self) -> bool:
        return self.args.minutes is not None and self.elapsed() >= 60.0 * self.args.minutes

    def evaluate(self, episodes: int) -> list[float]:
        t0 = time.perf_counter()
        scores, truncated = evaluate(
            self.model, self.eval_env, episodes, self.deterministic, self.args.eval_max_steps
        )
        self.truncated += truncated
        self.last_truncated = truncated
        self.eval_seconds += time.perf_counter() - t0
        return scores

    def periodic_eval(self, steps: int, final: bool = False) -> list[float]:
        episodes = self.args.final_episodes if final else self.args.eval_episodes
        scores = self.evaluate(episodes)
        point = {
            "step": int(steps),
            "score": float(np.mean(scores)),
            "episodes": len(scores),
            "time": round(self.elapsed(), 2),
            "truncated": self.last_truncated,
        }
        if final:
            point["final"] = True
        self.curve.append(point)
        train_s = max(self.train_seconds(), 1e-9)
        extra = f" eps {paper_epsilon(steps):.3f}" if self.args.algo == "dqn" else ""
        print(
            f"[{self.args.algo} {self.args.game} s{self.args.seed}] step {steps:>7d}"
            f" score {point['score']:7.2f} ({len(scores)} ep){extra}"
            f" | train {steps / train_s:6.1f} steps/s, elapsed {self.elapsed():7.1f}s"
            + (f" [{self.last_truncated} cut at --eval-max-steps]" if self.last_truncated else "")
            + (" FINAL" if final else ""),
            file=sys.stderr,
            flush=True,
        )
        return scores


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", choices=sorted(GAMES), default="breakout")
    parser.add_argument("--algo", choices=["dqn", "ppo"], default="dqn")
    parser.add_argument("--steps", type=int, default=100_000, help="environment interactions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sticky", type=float, default=0.1, help="sticky-action probability (train and eval)"
    )
    parser.add_argument("--eval-interval", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--final-episodes", type=int, default=30)
    parser.add_argument(
        "--eval-max-steps", type=int, default=10_000, help="cut an eval episode here (0: never)"
    )
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap on the run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.eval_interval <= 0:
        parser.error("--eval-interval must be positive")

    torch.set_num_threads(args.threads)
    run = Run(args)
    model, hyper = build_model(args.algo, args.game, args.sticky, args.seed, args.device)
    run.model = model
    n_actions = int(model.action_space.n)
    hyper.update(
        {
            "network": "conv 16x3x3 s1 + ReLU -> fc 128 + ReLU -> linear head (MinAtar paper)",
            "env_id": GAMES[args.game],
            "minimal_action_set": True,
            "n_actions": n_actions,
            "sticky_action_prob": args.sticky,
            "difficulty_ramping": True,
            "eval_policy": "greedy (deterministic=True)"
            if args.algo == "dqn"
            else "sampled (deterministic=False)",
            "eval_seed": args.seed + EVAL_SEED_OFFSET,
            "eval_max_steps": args.eval_max_steps,
            "steps_requested": args.steps,
            "minutes_cap": args.minutes,
            "threads": args.threads,
            "device": args.device,
            "sb3_version": __import__("stable_baselines3").__version__,
            "torch_version": torch.__version__,
        }
    )

    run.train_start = time.perf_counter()
    run.periodic_eval(0)
    model.learn(total_timesteps=args.steps, callback=EvalAndBudget(run), progress_bar=False)
    steps_done = int(model.num_timesteps)
    train_seconds = run.train_seconds()
    final_scores = run.periodic_eval(steps_done, final=True)

    train_returns = [float(info["r"]) for info in model.ep_info_buffer]
    result = {
        "algo": args.algo,
        "game": args.game,
        "seed": args.seed,
        "sticky": args.sticky,
        "steps_done": steps_done,
        "stopped_early": steps_done < args.steps,
        "minutes": round(run.elapsed() / 60.0, 3),
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(run.eval_seconds, 2),
        "train_steps_per_second": round(steps_done / max(train_seconds, 1e-9), 1),
        "hyperparameters": hyper,
        "curve": run.curve,
        "final": {
            "mean": float(np.mean(final_scores)),
            "std": float(np.std(final_scores)),
            "episodes": len(final_scores),
            "scores": final_scores,
        },
        "eval_truncated_episodes": run.truncated,
        "train_last_episodes_mean": float(np.mean(train_returns)) if train_returns else None,
        "train_last_episodes": len(train_returns),
    }
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
