"""Rollouts inside the world model (docs/method.md, "Policy learning in imagination") and the latent used to act in the real game.

Imagine mode: from a start pair (context step k-1, start latent z_k) the actor picks a_t from z_t
alone, the dynamics model (with its Transformer-XL memory, so a step costs only the new tokens)
reads the group (r_{t-1}, z_t, a_t) and predicts z_{t+1} (sampled at temperature 1), the mean reward
r_t and the discount gamma_t = sigmoid(logit). The running product of predicted discounts ends an
imagined episode when it falls below a threshold: the next latent is then a fresh one, encoded and
sampled from a random replay observation, and the episode-end flag cuts attention there. Those
fresh latents are drawn either when needed (the default: the number of ends is read on the host
at every step, a host sync) or, with a pool (``actor_critic.fresh_pool``), all at once before the
rollout and handed out in order with masks and fixed shapes (no host sync, capturable). By default
(``dynamics.kv_cache``) the memory holds each layer's keys and values rather than its hidden states,
so a step projects only its own three tokens (``DynamicsModel.cache_memory``).

Observe mode (acting in the real game) needs only the encoder and the actor: the latent of a real
observation is the encoder's one-hot argmax (``observe_latent``); no transformer is involved --
unless the policy also reads the transformer's state (``actor_critic.inputs`` 'zh', beyond the
paper; ``twm.acting``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from twm.models.actor_critic import Actor
from twm.models.dynamics import DynamicsModel
from twm.models.observation import ObservationModel


@dataclass
class ImaginationStart:
    """Where B rollouts start: the context step k-1 and the start latent z_k.

    context_z (B, Z), context_action (B,), context_reward (B,), context_done (B,) bool (the context
    step ended its episode, so attention is cut between it and z_k), start_z (B, Z).
    """

    context_z: Tensor
    context_action: Tensor
    context_reward: Tensor
    context_done: Tensor
    start_z: Tensor


@dataclass
class Rollout:
    """An imagined trajectory of H steps for B starts.

    z (B, H+1, Z): z_0..z_H, where z_{t+1} is a fresh start if dones[:, t];
    actions (B, H); rewards (B, H) predicted means; discounts (B, H) predicted probabilities;
    dones (B, H): the imagined episode ended after step t; weights (B, H): product of the predicted
    discounts before step t within its imagined episode (1 at an episode's first step);
    h (B, H, d): the transformer states h_t; fresh_reused () int: with a pool, the fresh starts
    that had to reuse a pool latent because the pool ran out (None without a pool);
    h_prev (B, H+1, d): only when the policy reads h (``actor_critic.inputs`` 'zh'), the state
    h_{t-1} that goes with z_t: the output at the previous action token, zeros where z_t starts
    an episode (a fresh start, or a start whose context step ended its episode).
    """

    z: Tensor
    actions: Tensor
    rewards: Tensor
    discounts: Tensor
    dones: Tensor
    weights: Tensor
    h: Tensor
    fresh_reused: Tensor | None = None
    h_prev: Tensor | None = None

    def policy_inputs(self) -> Tensor:
        """What actor and critic read at z_0..z_H: (B, H+1, Z), or with ``h_prev`` (B, H+1, Z+d)."""
        return self.z if self.h_prev is None else torch.cat([self.z, self.h_prev], dim=-1)


@torch.no_grad()
def observe_latent(obs_model: ObservationModel, obs: Tensor) -> Tensor:
    """The deterministic latent of real observations (..., S, 64, 64): the one-hot argmax, (..., Z)."""
    return obs_model.mode(obs_model.encode(obs))


@torch.no_grad()
def imagine(
    dynamics: DynamicsModel,
    obs_model: ObservationModel,
    actor: Actor,
    start: ImaginationStart,
    horizon: int,
    discount_threshold: float,
    fresh_latents: Callable[[int], Tensor],
    generator: torch.Generator | None = None,
    kv_cache: bool | None = None,
    fresh_pool: int = 0,
    policy_reads_h: bool = False,
) -> Rollout:
    """Roll the actor out in the world model for ``horizon`` steps (imagine mode).

    ``fresh_latents(n)`` returns n sampled latents (n, Z) of random replay observations. With
    ``fresh_pool`` 0 it is called at each step where some imagined episode ends, for as many latents
    as ended; with ``fresh_pool`` N > 0 it is called once, for N latents, which the ends take in
    order (batch order within a step, as on demand), so no step reads a count on the host; if more
    than N episodes end, the pool is reused from its start (``Rollout.fresh_reused`` counts them).
    Given the same fresh latents in the same order, both give the same rollout. With
    ``policy_reads_h`` the actor reads (z_t, h_{t-1}) (``Rollout.h_prev``), else z_t alone.
    The networks are used in eval mode (no dropout)
    and restored to their previous mode afterwards. ``kv_cache`` (default ``dynamics.cfg.kv_cache``)
    keeps the transformer's keys and values in buffers for the whole rollout instead of
    re-projecting the memory at every step: the same rollout, cheaper.
    """
    modes = [(m, m.training) for m in (dynamics, obs_model, actor)]
    for module, _ in modes:
        module.eval()
    B = start.start_z.shape[0]
    device = start.start_z.device
    empty = start.context_reward.new_zeros(B, 0)
    context = dynamics(
        start.context_z[:, None], start.context_action[:, None], empty, empty.bool()
    )  # one step, only its memory is needed
    memory = context.memory
    if dynamics.cfg.kv_cache if kv_cache is None else kv_cache:
        memory = dynamics.cache_memory(memory, capacity=memory.length + dynamics.tokens_per_step * horizon)
    prev_reward, prev_done = start.context_reward.float(), start.context_done.bool()

    z = start.start_z
    pool = fresh_latents(fresh_pool) if fresh_pool > 0 else None  # (N, Z)
    pool_last = torch.full((), -1, dtype=torch.long, device=device)  # index of the last pool latent taken
    running = torch.ones(B, device=device)  # discount product of the current imagined episode
    zs, actions, rewards, discounts, dones, weights, hs = [z], [], [], [], [], [], []
    h_prev: Tensor | None = None
    h_prevs: list[Tensor] = []
    if policy_reads_h:  # h of the context step, unless that step ended its episode
        h_prev = torch.where(prev_done[:, None], 0.0, context.h[:, 0])  # (B, d)
        h_prevs.append(h_prev)
    for _ in range(horizon):
        action = actor.sample(z if h_prev is None else torch.cat([z, h_prev], dim=-1), generator)  # (B,)
        out = dynamics(z[:, None], action[:, None], prev_reward[:, None], prev_done[:, None], memory)
        memory = out.memory
        next_z = obs_model.sample(out.z_logits[:, 0], generator)  # (B, Z)
        reward = out.reward_mean[:, 0]  # (B,)
        discount = torch.sigmoid(out.discount_logit[:, 0])  # (B,)

        weights.append(running)
        running = running * discount
        done = running < discount_threshold  # (B,)
        if pool is not None:
            # The k-th end (k = 1, 2, ...) of this step takes the k-th pool latent after the last one
            # taken, cycling: fixed shapes and no host sync.
            ends_so_far = torch.cumsum(done.long(), dim=0)  # (B,), k where done
            fresh = pool[(pool_last + ends_so_far) % fresh_pool]  # (B, Z)
            next_z = torch.where(done[:, None], fresh, next_z)
            pool_last = pool_last + ends_so_far[-1]
            running = torch.where(done, torch.ones_like(running), running)
        else:
            count = int(done.sum())  # host sync
            if count:
                next_z = next_z.clone()
                next_z[done] = fresh_latents(count)
                running = torch.where(done, torch.ones_like(running), running)

        zs.append(next_z)
        actions.append(action)
        rewards.append(reward)
        discounts.append(discount)
        dones.append(done)
        hs.append(out.h[:, 0])
        prev_reward, prev_done, z = reward, done, next_z
        if h_prev is not None:  # a fresh start after an end has no history
            h_prev = torch.where(done[:, None], 0.0, out.h[:, 0])
            h_prevs.append(h_prev)

    for module, was_training in modes:
        module.train(was_training)
    return Rollout(
        z=torch.stack(zs, dim=1),  # (B, H+1, Z)
        actions=torch.stack(actions, dim=1),  # (B, H)
        rewards=torch.stack(rewards, dim=1),
        discounts=torch.stack(discounts, dim=1),
        dones=torch.stack(dones, dim=1),
        weights=torch.stack(weights, dim=1),
        h=torch.stack(hs, dim=1),  # (B, H, d)
        fresh_reused=(pool_last + 1 - fresh_pool).clamp(min=0) if pool is not None else None,
        h_prev=torch.stack(h_prevs, dim=1) if h_prevs else None,  # (B, H+1, d)
    )
