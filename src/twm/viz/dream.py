"""Dreams: the agent's policy (or a person, or a script) acting inside the world model.

A dream starts from real experience, exactly like an imagination rollout (docs/method.md, "Policy learning in imagination"): C real
context steps (observation, action, reward, done) are fed to the dynamics model to fill its
Transformer-XL memory, and the latent of the next real observation is the dream's z_0. Then each
step feeds (r_{t-1}, z_t, a_t) with the memory, samples z_{t+1} (temperature 1) and reads the
predicted mean reward and discount -- the same computation as ``twm.imagination.imagine``
(``tests/viz/test_viz.py`` checks that they agree step for step). Real latents are the encoder's one-hot
argmax, as when acting.

Unlike training imagination, a dream never swaps in a fresh latent when the predicted discount falls:
it shows what the model does next, and the captions flag a predicted episode end ("END").

Real starts come either from the real environment (``context_from_env``: a seeded reset, then the
agent's policy for a few steps) or from a replay buffer (``context_from_replay``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from twm.agent import Agent
from twm.config import EnvConfig
from twm.imagination import observe_latent
from twm.models.dynamics import AttentionMaps
from twm.replay import ReplayBuffer
from twm.viz.render import SEPARATOR_RGB, grid, newest_image, panel, to_uint8

# A predicted discount below this is shown as a predicted episode end (the model's P(continue) < 1/2).
END_DISCOUNT = 0.5
CAPTION_LINES = 2


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout) and restore every submodule's own mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def device_generator(
    generator: torch.Generator | None, device: torch.device, fallback_seed: int
) -> torch.Generator:
    """A generator on ``device`` seeded by one draw from ``generator`` (or by ``fallback_seed``).

    Sampling on the agent's device needs a generator there; deriving it by a single draw lets callers
    pass any (CPU or CUDA) generator and keeps all visualisation randomness off torch's global
    generator, so drawing pictures during training never shifts the training's random streams.
    """
    if generator is None:
        seed = fallback_seed
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator(device=device).manual_seed(seed)




# --------------------------------------------------------------------------------------- real starts


@dataclass
class RealContext:
    """Real steps that start B dreams.

    obs (B, C, S, 64, 64) uint8: the observations of C context steps; actions (B, C) long,
    rewards (B, C) float (learning rewards), dones (B, C) bool (terminated or truncated): what
    happened in them; start_obs (B, S, 64, 64) uint8: the observation after the last context step,
    whose latent is the dream's z_0.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    dones: Tensor
    start_obs: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def steps(self) -> int:
        return int(self.actions.shape[1])

    def to(self, device: torch.device | str) -> RealContext:
        return RealContext(
            *(x.to(device) for x in (self.obs, self.actions, self.rewards, self.dones, self.start_obs))
        )


def context_from_env(
    agent: Agent,
    env_cfg: EnvConfig,
    starts: int,
    warmup: int,
    seed: int,
    generator: torch.Generator | None = None,
) -> RealContext:
    """B = ``starts`` real starts: env k is reset with seed ``seed + k`` (eval protocol) and played by
    the agent's policy for ``warmup`` steps (an episode that ends is reset and goes on)."""
    from twm.envs import make_env

    if starts < 1 or warmup < 1:
        raise ValueError(f"starts and warmup must be at least 1; got {starts}, {warmup}")
    if generator is None:
        generator = torch.Generator(device=agent.device).manual_seed(seed)
    obs_b, act_b, rew_b, done_b, start_b = [], [], [], [], []
    for k in range(starts):
        env = make_env(env_cfg, "eval", seed + k)
        try:
            obs, _ = env.reset()
            steps: list[tuple[np.ndarray, int, float, bool]] = []
            memory = agent.acting_memory(1)  # a policy that reads h carries the transformer's memory
            for _ in range(warmup):
                action = int(agent.act(obs[None], generator, memory)[0])
                next_obs, reward, terminated, truncated, _ = env.step(action)
                if memory is not None:
                    memory.record([float(reward)], [bool(terminated or truncated)])
                steps.append((obs, action, float(reward), bool(terminated or truncated)))
                obs = env.reset()[0] if terminated or truncated else next_obs
        finally:
            env.close()
        obs_b.append(np.stack([s[0] for s in steps]))
        act_b.append([s[1] for s in steps])
        rew_b.append([s[2] for s in steps])
        done_b.append([s[3] for s in steps])
        start_b.append(obs)
    return RealContext(
        obs=torch.from_numpy(np.stack(obs_b)),  # (B, C, S, 64, 64)
        actions=torch.tensor(act_b, dtype=torch.long),
        rewards=torch.tensor(rew_b, dtype=torch.float32),
        dones=torch.tensor(done_b, dtype=torch.bool),
        start_obs=torch.from_numpy(np.stack(start_b)),
    )


def context_from_replay(
    replay: ReplayBuffer, starts: int, context_steps: int, generator: torch.Generator | None = None
) -> RealContext:
    """B = ``starts`` starts at uniformly drawn replay steps i, with the C steps before i as context.

    Only ``generator`` is used for the draw (never the buffer's own sampler, whose stream belongs to
    training). C = min(context_steps, size - 1); the starts are distinct when the buffer is large enough.
    """
    size = len(replay)
    if size < 2:
        raise ValueError(f"the replay buffer holds {size} steps; a dream start needs at least 2")
    C = max(1, min(context_steps, size - 1))
    count = size - C  # valid starts i = C .. size-1
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if starts <= count:
        pick = torch.randperm(count, generator=generator, device=gen_device)[:starts]
    else:
        pick = torch.randint(0, count, (starts,), generator=generator, device=gen_device)
    first = pick.cpu().numpy().astype(np.int64)  # i - C
    steps = first[:, None] + np.arange(C)  # (B, C)
    dones = replay.terminated[steps] | replay.truncated[steps]
    return RealContext(
        obs=torch.from_numpy(replay.stacked_obs(steps)),
        actions=torch.from_numpy(replay.actions[steps].astype(np.int64)),
        rewards=torch.from_numpy(replay.rewards[steps].astype(np.float32)),
        dones=torch.from_numpy(dones),
        start_obs=torch.from_numpy(replay.stacked_obs(first + C)),
    )


# --------------------------------------------------------------------------------------- stepping


@dataclass
class DreamStep:
    """One dream step for B rows: actions a_t, predicted mean reward r_t and discount gamma_t (B,),
    and the attention maps of the step's tokens (r_{t-1}, z_t, a_t) when asked for."""

    actions: Tensor
    rewards: Tensor
    discounts: Tensor
    attention: AttentionMaps | None


class DreamSession:
    """B dreams advancing one step per ``step`` call (what ``twm play`` drives key by key).

    The networks run in eval mode (no dropout) inside each call; their own modes are restored.
    All sampling uses ``generator`` (on the agent's device).
    """

    def __init__(self, agent: Agent, generator: torch.Generator) -> None:
        self.agent = agent
        self.generator = generator
        self.obs_model = agent.world_model.obs_model
        self.dynamics = agent.world_model.dynamics
        self.context_steps = 0
        self.t = 0

    @torch.no_grad()
    def start(self, context: RealContext) -> None:
        """Start from real steps: the latents are the encoder's argmax, as when acting."""
        ctx = context.to(self.agent.device)
        with eval_mode(self.agent):
            z_ctx = observe_latent(self.obs_model, ctx.obs)  # (B, C, Z)
            z0 = observe_latent(self.obs_model, ctx.start_obs)  # (B, Z)
        self.start_latents(z_ctx, ctx.actions, ctx.rewards, ctx.dones, z0)

    @torch.no_grad()
    def start_latents(
        self, z: Tensor, actions: Tensor, rewards: Tensor, dones: Tensor, start_z: Tensor
    ) -> None:
        """Start from latents: context z (B, C, Z), actions, rewards, dones (B, C), and z_0 (B, Z)."""
        with eval_mode(self.agent):
            # Without memory, the rewards and dones inputs are those of all but the last context step;
            # the last one's outcome goes in with z_0 (see twm.models.dynamics, "Token stream").
            out = self.dynamics(z, actions, rewards[:, :-1].float(), dones[:, :-1].bool())
        self.memory = out.memory
        self.prev_reward = rewards[:, -1].float()
        self.prev_done = dones[:, -1].bool()
        # h_{t-1} for a policy that reads h (zeros when the last context step ended its episode).
        self.h_prev = torch.where(self.prev_done[:, None], 0.0, out.h[:, -1])  # (B, d)
        self.z = start_z
        self.context_steps = int(actions.shape[1])
        self.t = 0

    @property
    def batch_size(self) -> int:
        return int(self.z.shape[0])

    @torch.no_grad()
    def frame(self) -> np.ndarray:
        """(B, 64, 64) uint8: the newest frame of the decoded current latent."""
        with eval_mode(self.agent):
            decoded = self.obs_model.decode(self.z).float()
            return to_uint8(newest_image(decoded, self.obs_model.frame_channels, self.obs_model.observation))

    @torch.no_grad()
    def policy_actions(self) -> Tensor:
        """(B,) actions the agent's actor samples for the current latents."""
        inputs = torch.cat([self.z, self.h_prev], dim=-1) if self.agent.policy_reads_h else self.z
        with eval_mode(self.agent):
            return self.agent.actor.sample(inputs, self.generator)

    @torch.no_grad()
    def step(self, actions: Tensor | Sequence[int], return_attention: bool = False) -> DreamStep:
        """Feed (r_{t-1}, z_t, a_t), sample z_{t+1}; returns a_t, the predicted r_t and gamma_t."""
        a = torch.as_tensor(actions, device=self.z.device).long().reshape(self.batch_size)
        with eval_mode(self.agent):
            out = self.dynamics(
                self.z[:, None],
                a[:, None],
                self.prev_reward[:, None],
                self.prev_done[:, None],
                self.memory,
                return_attention=return_attention,
            )
            self.z = self.obs_model.sample(out.z_logits[:, 0], self.generator)  # (B, Z)
        self.memory = out.memory
        self.h_prev = out.h[:, 0]
        reward = out.reward_mean[:, 0]
        discount = torch.sigmoid(out.discount_logit[:, 0])
        # The dream goes on through predicted ends (see the module docstring): attention is not cut.
        self.prev_reward, self.prev_done = reward, torch.zeros_like(self.prev_done)
        self.t += 1
        return DreamStep(actions=a, rewards=reward, discounts=discount, attention=out.attention)


# --------------------------------------------------------------------------------------- whole dreams


def step_caption(
    t: int, action: str | None, reward: float | None, discount: float | None, context_steps: int = 0
) -> list[str]:
    """The two caption lines of frame t: "t=3 RIGHT" / "r=+0.12 disc=0.99" (frame 0: the start)."""
    if action is None or reward is None or discount is None:
        return [f"t={t} start", f"after {context_steps} real steps" if context_steps else "real start"]
    end = " END" if discount < END_DISCOUNT else ""
    return [f"t={t} {action}", f"r={reward:+.2f} disc={discount:.2f}{end}"]


@dataclass
class Dream:
    """B dreams of H steps.

    frames (B, H+1, 64, 64) uint8: the newest frame of each decoded latent z_0..z_H;
    real_start (B, 64, 64) uint8: the newest real frame of the start observation;
    actions (B, H) int64; rewards, discounts (B, H) float32 (predicted mean reward, discount);
    attention: per step, the maps of that step's call (on the CPU), if recorded.
    """

    frames: np.ndarray
    real_start: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    discounts: np.ndarray
    action_meanings: list[str]
    context_steps: int
    tokens_per_step: int
    attention: list[AttentionMaps] | None = field(default=None, repr=False)

    @property
    def starts(self) -> int:
        return int(self.frames.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[1])

    def action_name(self, action: int) -> str:
        return self.action_meanings[action] if 0 <= action < len(self.action_meanings) else str(action)

    def captions(self) -> list[list[list[str]]]:
        """``captions()[b][t]``: the caption lines drawn on frame t of start b."""
        return [
            [step_caption(0, None, None, None, self.context_steps)]
            + [
                step_caption(
                    t + 1,
                    self.action_name(int(self.actions[b, t])),
                    float(self.rewards[b, t]),
                    float(self.discounts[b, t]),
                )
                for t in range(self.horizon)
            ]
            for b in range(self.starts)
        ]

    def panels(self, scale: int) -> list[list[np.ndarray]]:
        """``panels(scale)[b][t]``: frame t of start b with its caption, (caption + 64s, 64s, 3)."""
        caps = self.captions()
        return [
            [panel(self.frames[b, t], caps[b][t], scale, CAPTION_LINES) for t in range(self.horizon + 1)]
            for b in range(self.starts)
        ]

    def animation_frames(self, scale: int = 3) -> list[np.ndarray]:
        """H+1 images, each the B starts side by side at one time step."""
        panels = self.panels(scale)
        frames = [
            np.concatenate([panels[b][t] for b in range(self.starts)], axis=1)
            for t in range(self.horizon + 1)
        ]
        width = panels[0][0].shape[1]
        for frame in frames:  # a 1 px separator between starts, inside the panels (sizes stay k * width)
            frame[:, width : frame.shape[1] : width] = SEPARATOR_RGB
        return frames

    def strip(self, scale: int = 2) -> np.ndarray:
        """One image: a row per start, time running left to right."""
        return grid(self.panels(scale))


@torch.no_grad()
def dream(
    agent: Agent,
    context: RealContext,
    horizon: int,
    generator: torch.Generator,
    action_meanings: Sequence[str],
    *,
    actions: Tensor | None = None,
    record_attention: bool = False,
) -> Dream:
    """Dream ``horizon`` steps from ``context``: the actor picks the actions, or ``actions`` (B, H) does."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1; got {horizon}")
    if actions is not None and tuple(actions.shape) != (context.batch_size, horizon):
        raise ValueError(
            f"actions must have shape ({context.batch_size}, {horizon}); got {tuple(actions.shape)}"
        )
    session = DreamSession(agent, generator)
    session.start(context)
    obs_model = agent.world_model.obs_model
    frames = [session.frame()]
    taken, rewards, discounts, maps = [], [], [], []
    for t in range(horizon):
        a = session.policy_actions() if actions is None else actions[:, t]
        step = session.step(a, return_attention=record_attention)
        frames.append(session.frame())
        taken.append(step.actions.cpu())
        rewards.append(step.rewards.float().cpu())
        discounts.append(step.discounts.float().cpu())
        if step.attention is not None:
            maps.append(_maps_to_cpu(step.attention))
    return Dream(
        frames=np.stack(frames, axis=1),
        real_start=newest_image(context.start_obs, obs_model.frame_channels, obs_model.observation),
        actions=torch.stack(taken, dim=1).numpy().astype(np.int64),
        rewards=torch.stack(rewards, dim=1).numpy(),
        discounts=torch.stack(discounts, dim=1).numpy(),
        action_meanings=list(action_meanings),
        context_steps=context.steps,
        tokens_per_step=agent.world_model.dynamics.tokens_per_step,
        attention=maps if record_attention else None,
    )


def _maps_to_cpu(maps: AttentionMaps) -> AttentionMaps:
    return AttentionMaps(
        probs=[p.float().cpu() for p in maps.probs],
        allowed=maps.allowed.cpu(),
        query_positions=maps.query_positions.cpu(),
        key_positions=maps.key_positions.cpu(),
    )
