"""The TWM agent: world model, actor and critic, how it acts, and its losses (docs/method.md).

It computes forward passes and losses; ``twm.update`` owns the optimisers and runs the update:
1. the world-model losses on a replay batch (``WorldModel.compute_loss``), with the latents it sampled;
2. ``num_starts`` imagination starts drawn without replacement from all pairs of consecutive steps
   of that batch (the first of a pair is the context step, ``imagination_starts``);
3. a rollout of ``horizon`` steps in the world model (``imagination.imagine``);
4. the critic's loss (Gaussian NLL of λ-returns) and the actor's (REINFORCE + entropy hinge), both
   weighted by the discount products of the rollout (``actor_critic_losses``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from twm.acting import ActingMemory
from twm.config import Config
from twm.imagination import ImaginationStart, Rollout, imagine, observe_latent
from twm.losses import PercentileNormalizer, actor_loss, lambda_returns, pretrain_actor_loss
from twm.models.actor_critic import Actor, Critic
from twm.models.batch import TorchSequenceBatch
from twm.models.world_model import WorldModel, WorldModelOutput


class ActorCriticLosses(NamedTuple):
    """The actor-critic's losses (on disjoint parameters, not yet stepped) and detached metrics."""

    critic_loss: Tensor
    actor_loss: Tensor
    metrics: dict[str, Tensor]


class Agent(nn.Module):
    def __init__(self, cfg: Config, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions = num_actions
        self.world_model = WorldModel.from_config(cfg, num_actions)
        ac = cfg.actor_critic
        # Both read z_t, or with actor_critic.inputs 'zh' (beyond the paper) also h_{t-1}.
        self.policy_reads_h = ac.inputs == "zh"
        self.actor = Actor(ac, cfg.policy_input_dim, num_actions)
        self.critic = Critic(ac, cfg.policy_input_dim)
        # Beyond the paper (off in its config): an EMA copy of the critic that regularises it
        # (actor_critic.slow_critic_rate) and the percentile scale of the returns (return_norm).
        self.slow_critic: Critic | None = None
        if ac.slow_critic_rate > 0:
            self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.return_normalizer = (
            PercentileNormalizer(ac.return_norm_decay, floor=ac.return_norm_floor) if ac.return_norm == "percentile" else None
        )
        if cfg.train.compile:
            self.compile_networks(cfg.train.compile_backend)

    def compile_networks(self, backend: str = "inductor") -> None:
        """``torch.compile`` the networks' forward functions (``train.compile``).

        Each network's ``forward`` is replaced by its compiled version on this instance, so the
        parameters, state dicts and checkpoints are untouched. Compilation happens at the first
        calls (and again for new shapes: minutes on a CPU); the arithmetic is the same up to fused
        rounding, but compiled dropout draws other random numbers than eager dropout. Several
        networks share a forward (every ``nn.Sequential``, the ten transformer layers), so the
        recompile limit per function is raised to hold them all.
        """
        import torch._dynamo

        wm = self.world_model
        obs, dyn = wm.obs_model, wm.dynamics
        modules: list[nn.Module] = [obs.encoder, obs.decoder, dyn.transformer, dyn.z_head]
        modules += [dyn.reward_head, dyn.discount_head, self.actor.net, self.critic.net]
        for module in modules:
            module.forward = torch.compile(module.forward, backend=backend)
        # The paths that do not go through those forwards: the decoder's fast path and the layers'
        # blocks after attention in key/value-cached imagination.
        obs._decode_fast = torch.compile(obs._decode_fast, backend=backend)  # type: ignore[method-assign]
        for layer in dyn.transformer.typed_layers():
            layer.finish = torch.compile(layer.finish, backend=backend)  # type: ignore[method-assign]
        # Per shared function: one entry per instance, a few shapes each (fresh-start batches vary).
        limit = 4 * (len(dyn.transformer.layers) + len(modules))
        config = torch._dynamo.config
        # (named cache_size_limit before torch 2.6)
        for name, value in [("recompile_limit", limit), ("accumulated_recompile_limit", 4 * limit)]:
            for key in (name, name.replace("recompile", "cache_size")):
                if hasattr(config, key):
                    setattr(config, key, max(getattr(config, key), value))
                    break

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        generator: torch.Generator | None = None,
        memory: ActingMemory | None = None,
        greedy: bool = False,
    ) -> np.ndarray:
        """Actions (N,) for real observations (N, S, 64, 64) uint8: argmax latent, sampled action
        (with ``greedy`` the policy's most likely action, drawing nothing from ``generator``).

        When the policy reads h (``actor_critic.inputs`` 'zh'), ``memory`` (from ``acting_memory``)
        holds each row's h_{t-1} and is advanced by this step; call its ``record`` after the env step.
        """
        memory = self._checked_memory(obs, memory)
        with self._eval_mode(self.world_model.obs_model, self.actor):
            z, inputs = self._policy_inputs(obs, memory)
            actions = self.actor.mode(inputs) if greedy else self.actor.sample(inputs, generator)
            if memory is not None:
                memory.advance(self.world_model.dynamics, z, actions)
        return actions.cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def policy_view(self, obs: np.ndarray, memory: ActingMemory | None = None) -> tuple[Tensor, Tensor]:
        """What ``act`` would see: action probabilities (N, A) and the critic's values (N,) for real
        observations (N, S, 64, 64) uint8, in eval mode. Draws nothing and leaves ``memory`` as it is,
        so calling it before ``act`` does not change the action ``act`` samples."""
        memory = self._checked_memory(obs, memory)
        with self._eval_mode(self.world_model.obs_model, self.actor, self.critic):
            _, inputs = self._policy_inputs(obs, memory)
            probs = self.actor(inputs).float().softmax(dim=-1)  # (N, A), as act samples them
            values = self.critic(inputs).float()  # (N,)
        return probs, values

    def _checked_memory(self, obs: np.ndarray, memory: ActingMemory | None) -> ActingMemory | None:
        """``memory`` where the policy reads h (one row per observation, or ValueError), else None."""
        if not self.policy_reads_h:
            return None  # only a policy that reads h uses one
        if memory is None or memory.rows != obs.shape[0]:
            raise ValueError("a policy that reads h acts with an ActingMemory of one row per observation")
        return memory

    @contextlib.contextmanager
    def _eval_mode(self, *networks: nn.Module) -> Iterator[None]:
        """Only the networks acting runs are switched to eval mode and back (the memory switches the
        transformer itself): switching the whole agent walks every module twice, a quarter of a real
        step's acting time."""
        modes = [net.training for net in networks]
        for net in networks:
            net.eval()
        try:
            yield
        finally:
            for net, mode in zip(networks, modes, strict=True):
                net.train(mode)

    def _policy_inputs(self, obs: np.ndarray, memory: ActingMemory | None) -> tuple[Tensor, Tensor]:
        """The argmax latents z (N, Z) of real observations and the policy's inputs: z, or [z, h_{t-1}]."""
        z = observe_latent(self.world_model.obs_model, torch.as_tensor(obs, device=self.device))
        return z, z if memory is None else torch.cat([z, memory.h_prev], dim=-1)

    def acting_memory(self, rows: int) -> ActingMemory | None:
        """A fresh ``ActingMemory`` for ``rows`` games when the policy reads h, else None (not needed)."""
        if not self.policy_reads_h:
            return None
        return ActingMemory(rows, self.cfg.dynamics.d_model, self.device)

    # ------------------------------------------------------------------ imagination and losses

    def imagine(
        self,
        wm_out: WorldModelOutput,
        start_obs: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Draw the imagination starts from a world-model update's latents and roll the actor out.

        ``start_obs(n)`` gives n replay observations for the fresh starts after imagined episode ends.
        """
        obs_model = self.world_model.obs_model

        def fresh_latents(n: int) -> Tensor:  # called in imagine, under no_grad
            return obs_model.sample(obs_model.encode(start_obs(n)), generator)

        return self.rollout(self.imagination_starts(wm_out, generator), fresh_latents, generator)

    def rollout(
        self,
        start: ImaginationStart,
        fresh_latents: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """The actor's rollout in the world model from ``start`` (``imagination.imagine``)."""
        ac = self.cfg.actor_critic
        with self.world_model.autocast():
            return imagine(
                self.world_model.dynamics,
                self.world_model.obs_model,
                self.actor,
                start,
                ac.horizon,
                ac.discount_threshold,
                fresh_latents,
                generator,
                fresh_pool=ac.fresh_pool,
                policy_reads_h=self.policy_reads_h,
            )

    def imagination_starts(
        self, wm_out: WorldModelOutput, generator: torch.Generator | None
    ) -> ImaginationStart:
        """``num_starts`` pairs (z_{k-1}, z_k) drawn without replacement from the B x T pairs of the batch."""
        z = wm_out.z  # (B, T+1, Z), step 0 is the batch's context step
        dones = wm_out.terminated | wm_out.truncated
        B, T = z.shape[0], z.shape[1] - 1
        flat = B * T
        # Drawn on the latents' device, so a CUDA generator works too.
        pick = torch.randperm(flat, generator=generator, device=z.device)[: self.cfg.actor_critic.num_starts]

        def pairs_first(x: Tensor) -> Tensor:  # steps 0..T-1 of each sequence, flattened
            return x[:, :-1].reshape(flat, *x.shape[2:])[pick]

        return ImaginationStart(
            context_z=pairs_first(z),
            context_action=pairs_first(wm_out.actions),
            context_reward=pairs_first(wm_out.rewards),
            context_done=pairs_first(dones),
            start_z=z[:, 1:].reshape(flat, -1)[pick],
        )

    def actor_critic_losses(self, rollout: Rollout, real: WorldModelOutput | None = None) -> ActorCriticLosses:
        """The critic's and actor's losses of an imagined rollout (docs/method.md, "Policy learning in imagination").

        The actor's loss reads the advantages of the critic before its step, so both can be
        computed before either optimiser steps. With ``actor_critic.replay_value_coef`` > 0 the
        critic also regresses the λ-returns of ``real``, the world-model batch (``replay_value_loss``).
        """
        ac = self.cfg.actor_critic
        inputs = rollout.policy_inputs()  # (B, H+1, Z) or (B, H+1, Z+d)
        with torch.no_grad():
            values = self.critic(inputs)  # (B, H+1)
        returns, advantages = lambda_returns(
            rollout.rewards, rollout.discounts, rollout.dones, values, ac.lam
        )
        states = inputs[:, :-1]  # (B, H, Z[+d]): the last step only bootstraps
        critic_out = self.critic.outputs(states)  # (B, H, 1 or bins)
        c_loss = self.critic.loss(critic_out, returns, rollout.weights)
        extra: dict[str, Tensor] = {}
        if self.slow_critic is not None:
            with torch.no_grad():
                slow_values = self.slow_critic(states)  # (B, H)
            slow_reg = self.critic.loss(critic_out, slow_values, rollout.weights)
            c_loss = c_loss + ac.slow_critic_coef * slow_reg
            extra["ac/slow_critic_reg"] = slow_reg.detach()
        if ac.replay_value_coef > 0:
            if real is None:
                raise ValueError("actor_critic.replay_value_coef > 0 needs the world-model batch (real)")
            replay_loss = self.replay_value_loss(real)
            c_loss = c_loss + ac.replay_value_coef * replay_loss
            extra["ac/replay_value_loss"] = replay_loss.detach()
        if self.return_normalizer is not None:
            scale = self.return_normalizer.update(returns)
            advantages = advantages / scale
            extra["ac/return_scale"] = scale
        a_loss, metrics = actor_loss(
            self.actor(states),
            rollout.actions,
            advantages,
            rollout.weights,
            ac.entropy_coef,
            ac.entropy_threshold,
            ac.entropy,
        )
        metrics.update(extra)
        metrics.update(
            {
                "ac/critic_loss": c_loss.detach(),
                "ac/value": values.mean(),
                "ac/return": returns.mean(),
                "ac/advantage_abs": advantages.abs().mean(),
                "ac/imagined_reward": rollout.rewards.mean(),
                "ac/imagined_discount": rollout.discounts.mean(),
                "ac/imagined_dones": rollout.dones.float().sum(),
            }
        )
        if rollout.fresh_reused is not None:
            metrics["ac/fresh_reused"] = rollout.fresh_reused.float()
        return ActorCriticLosses(c_loss, a_loss, metrics)

    def replay_value_loss(self, real: WorldModelOutput) -> Tensor:
        """The critic's loss on the real steps of a world-model batch (``replay_value_coef``): the
        states z_0..z_{T-1} of each sequence with the rewards and episode ends of their steps."""
        dones = real.terminated | real.truncated
        loss, _ = self.real_return_loss(real.z, real.rewards[:, :-1], dones[:, :-1])
        return loss

    def real_return_loss(self, z: Tensor, rewards: Tensor, dones: Tensor) -> tuple[Tensor, Tensor]:
        """(critic loss, λ-returns) on a real sequence: latents z (B, T+1, Z), the rewards and episode
        ends (B, T) of steps 0..T-1.

        The λ-returns discount by gamma * (1 - d_t), so they never bootstrap across a real episode
        end, and bootstrap with the critic's values of z_1..z_T; every step weighs 1. Used by the
        critic's pretraining and by the replay value loss.
        """
        with torch.no_grad():
            discounts = self.cfg.env.discount * (~dones).float()
            values = self.critic(z)  # (B, T+1)
        returns, _ = lambda_returns(rewards, discounts, dones, values, self.cfg.actor_critic.lam)
        loss = self.critic.loss(self.critic.outputs(z[:, :-1]), returns, torch.ones_like(returns))
        return loss, returns

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """slow <- slow + rate (critic - slow), after each critic step (``slow_critic_rate`` > 0)."""
        if self.slow_critic is None:
            return
        slow: list[Tensor] = list(self.slow_critic.parameters())
        fast: list[Tensor] = list(self.critic.parameters())
        torch._foreach_lerp_(slow, fast, self.cfg.actor_critic.slow_critic_rate)

    # ------------------------------------------------------------------ pretraining

    def pretrain_ac_losses(
        self, batch: TorchSequenceBatch, generator: torch.Generator | None = None
    ) -> ActorCriticLosses:
        """The critic's and actor's losses on real latent sequences of the prefill (released code's
        pretraining).

        The critic learns λ-returns of the real rewards, with discounts gamma * (1 - d) and no
        bootstrapping across real episode ends; the actor only gets an entropy bonus, since the
        data came from a uniformly random policy. The batch's context step is not used.
        """
        ac = self.cfg.actor_critic
        obs_model = self.world_model.obs_model
        with torch.no_grad():
            was_training = obs_model.training
            obs_model.eval()
            if self.policy_reads_h:
                z_all = obs_model.sample(obs_model.encode(batch.obs), generator)  # (B, H+2, Z)
                z = torch.cat([z_all[:, 1:], self.real_h_prev(z_all[:, :-1], batch)], dim=-1)  # (B, H+1, Z+d)
            else:
                z = obs_model.sample(obs_model.encode(batch.obs[:, 1:]), generator)  # (B, H+1, Z)
            obs_model.train(was_training)
        c_loss, returns = self.real_return_loss(z, batch.rewards[:, 1:], batch.dones[:, 1:])
        # The actor reads no critic parameter: its loss is the same before or after the critic steps.
        a_loss = pretrain_actor_loss(self.actor(z[:, :-1]), ac.entropy_coef)
        metrics = {"ac/critic_loss": c_loss.detach(), "ac/actor_loss": a_loss.detach(), "ac/return": returns.mean()}
        return ActorCriticLosses(c_loss, a_loss, metrics)

    @torch.no_grad()
    def real_h_prev(self, z: Tensor, batch: TorchSequenceBatch) -> Tensor:
        """h_{t-1} for the observations of steps 1..T+1 of a real sequence batch: (B, T+1, d).

        ``z`` (B, T+1, Z) are the latents of steps 0..T; the dynamics model (eval mode) reads them
        with the batch's actions, and h_t (the output at a_t) goes with the observation of step t+1,
        zeroed where step t ended its episode (the next observation starts a new one).
        """
        dynamics = self.world_model.dynamics
        was_training = dynamics.training
        dynamics.eval()
        dones = batch.dones  # (B, T+1)
        out = dynamics(z, batch.actions, batch.rewards[:, :-1], dones[:, :-1])
        dynamics.train(was_training)
        return torch.where(dones[..., None], 0.0, out.h)  # (B, T+1, d)
