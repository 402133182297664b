"""The world model (observation model + dynamics model) and its losses (docs/method.md, "World model").

It computes losses and forward passes only; ``twm.update`` owns its two optimisers and steps them.
The losses of one update on a batch of B sequences of T steps, each with one context step before and the
observation after the last step (``SequenceBatch`` of the replay buffer, step axis 0 = context):

1. context latent z_0 (sampled, no gradient) and the target distribution of z_{T+1}, from the
   encoder without gradient;
2. the observation model encodes o_1..o_T (with gradient), samples z_1..z_T straight-through and
   decodes them;
3. the dynamics model reads [z_0, z_1..z_T] (detached: the dynamics loss never reaches the
   encoder; with ``dynamics.encoder_grad`` > 0, beyond the paper, that share of its gradient
   does, through z_1..z_T) with actions a_0..a_T and rewards/dones r_0..r_{T-1}; its predictions from steps 1..T
   are trained against z_2..z_{T+1}, r_1..r_T and gamma_1..gamma_T;
4. the observation model's loss gets the consistency term, the cross-entropy from the dynamics
   model's detached predictions of z_1..z_T (made at steps 0..T-1) to the encoder's z_1..z_T.

With ``dynamics.imagined_inputs`` > 0 (beyond the paper) a first pass of the dynamics model, in
eval mode and without gradient, predicts z_1..z_T from the real latents; in step 3 it reads a
sample of those predictions instead of that share of z_1..z_T (scheduled sampling), with the same
targets, and the consistency term reads the first pass's predictions.

This is the alignment of the released code (``WorldModel.optimize``), whose dynamics optimiser steps
before the observation loss is computed; that changes nothing, since the observation loss reads
only detached dynamics predictions and the two losses share no parameter. The returned
latents [z_0..z_T] and the batch's actions, rewards and flags are the start points of imagination.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from twm.config import Config, DynamicsConfig
from twm.models.batch import TorchSequenceBatch
from twm.models.dynamics import DynamicsModel
from twm.models.observation import ObservationModel
from twm.models.precision import Precision, autocast


@dataclass
class WorldModelOutput:
    """What an update hands to the actor-critic: the latents it sampled and the batch's steps.

    z: (B, T+1, C*K) detached latents z_0 (context) .. z_T; actions, rewards, terminated, truncated:
    (B, T+1) of the same steps; metrics: detached scalars under "obs/..." and "dyn/...".
    """

    z: Tensor
    actions: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    metrics: dict[str, Tensor]


@dataclass
class WorldModelLosses:
    """The forward half of a world-model update: the two losses (not yet stepped), the detached
    latents z_0..z_T (B, T+1, C*K) and detached metrics."""

    obs_loss: Tensor
    dyn_loss: Tensor
    z: Tensor
    metrics: dict[str, Tensor]


class WorldModel(nn.Module):
    """The observation model and the dynamics model of one game."""

    def __init__(
        self,
        obs_model: ObservationModel,
        dyn_cfg: DynamicsConfig,
        num_actions: int,
        *,
        discount: float,
        precision: Precision = "float32",
    ) -> None:
        super().__init__()
        obs_cfg = obs_model.cfg
        self.obs_cfg, self.dyn_cfg = obs_cfg, dyn_cfg
        self.num_actions = num_actions
        self.discount = discount  # γ: the discount target of a step that did not end the episode
        self.precision: Precision = precision
        self.obs_model = obs_model
        latent_dim = obs_cfg.categoricals * obs_cfg.classes
        self.dynamics = DynamicsModel(
            dyn_cfg, latent_dim, obs_cfg.categoricals, obs_cfg.classes, num_actions, obs_cfg.unimix
        )

    @classmethod
    def from_config(cls, cfg: Config, num_actions: int) -> WorldModel:
        """The world model of a full config (its obs_model and dynamics sections, the env's frames)."""
        return cls(
            ObservationModel.from_config(cfg),
            cfg.dynamics,
            num_actions,
            discount=cfg.env.discount,
            precision=cfg.train.precision,
        )

    # ------------------------------------------------------------------ helpers

    def autocast(self) -> contextlib.AbstractContextManager:
        """``autocast`` for the model's precision on its device."""
        return autocast(self.precision, next(self.parameters()).device)

    @torch.no_grad()
    def _logits_no_grad(self, frames: Tensor) -> Tensor:
        """Encoder logits of frames in eval mode and with no gradient."""
        was_training = self.obs_model.training
        self.obs_model.eval()
        logits = self.obs_model.encode(frames)
        self.obs_model.train(was_training)
        return logits

    @torch.no_grad()
    def _encode_no_grad(self, frames: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(sampled z, logits) of frames with the encoder in eval mode and no gradient."""
        logits = self._logits_no_grad(frames)
        return self.obs_model.sample(logits, generator), logits

    def _dynamics_loss(
        self, z: Tensor, batch: TorchSequenceBatch, target_probs: Tensor
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Dynamics loss on z = [z_0..z_T] (B, T+1) and the targets of steps 1..T.

        Returns (loss, predicted z logits of steps 0..T-1 for the consistency term, metrics).
        """
        dones = batch.dones
        out = self.dynamics(z, batch.actions, batch.rewards[:, :-1], dones[:, :-1])  # T+1 steps
        loss, metrics = self.dynamics.compute_loss(
            out.time_slice(slice(1, None)),  # drop the context step's predictions
            target_probs,
            batch.rewards[:, 1:],
            batch.terminated[:, 1:],
            batch.truncated[:, 1:],
            gamma=self.discount,
        )
        return loss, out.z_logits[:, :-1], metrics

    def _dynamics_input(self, z: Tensor) -> Tensor:
        """z_1..z_T as the dynamics model reads them: the same values, with ``encoder_grad`` of the
        gradient flowing back into the encoder (none in the paper)."""
        share = self.dyn_cfg.encoder_grad
        if share == 0:
            return z.detach()
        if share == 1:
            return z
        return z.detach() + share * (z - z.detach())  # values exactly z; gradient scaled by share

    def _with_imagined_inputs(
        self, z_in: Tensor, batch: TorchSequenceBatch, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """``dynamics.imagined_inputs``: z_in (B, T+1, C*K) = [z_0..z_T] with a share of z_1..z_T
        replaced by samples of the dynamics' own prediction of them from a pass over the real
        latents (in eval mode, no gradient), as imagination feeds it its predictions. Returns the
        new inputs and that pass's predicted logits of z_1..z_T (B, T, C, K).

        A replaced z_t carries no gradient to the encoder. z_t right after an episode end (d_{t-1})
        is never replaced: it starts another episode, which the step before cannot predict.
        """
        # In eval mode, as imagination runs it (and so without dropout draws in the unused heads,
        # which a compiled region would drop and an eager update would make).
        was_training = self.dynamics.training
        self.dynamics.eval()
        with torch.no_grad():
            real = self.dynamics(z_in.detach(), batch.actions, batch.rewards[:, :-1], batch.dones[:, :-1])
            pred_logits = real.z_logits[:, :-1]  # (B, T, C, K): position t-1 predicts z_t
            imagined = self.obs_model.sample(pred_logits, generator).to(z_in.dtype)  # (B, T, C*K)
            draw = torch.rand(imagined.shape[:2], generator=generator, device=z_in.device)  # (B, T)
            replace = (draw < self.dyn_cfg.imagined_inputs) & ~batch.dones[:, :-1]  # (B, T): d_0..d_{T-1}
        self.dynamics.train(was_training)
        later = torch.where(replace[..., None], imagined, z_in[:, 1:])  # (B, T, C*K)
        return torch.cat([z_in[:, :1], later], dim=1), pred_logits

    # ------------------------------------------------------------------ losses

    def compute_loss(self, batch: TorchSequenceBatch, generator: torch.Generator | None = None) -> WorldModelLosses:
        """The losses of an update (see the module docstring): both, on disjoint parameters (unless
        ``dynamics.encoder_grad`` > 0: then the dynamics loss also reaches the encoder)."""
        self.train()
        with self.autocast():
            context_z, _ = self._encode_no_grad(batch.obs[:, :1], generator)  # (B, 1, C*K)
            # (B, 1, C, K); no latent is drawn (a compiled region would drop an unused draw).
            next_logits = self._logits_no_grad(batch.obs[:, -1:])

            frames = batch.obs[:, 1:-1]  # (B, T, S, 64, 64)
            logits = self.obs_model.encode(frames)  # (B, T, C, K)
            z = self.obs_model.sample(logits, generator)  # (B, T, C*K), straight-through

            z_in = torch.cat([context_z, self._dynamics_input(z)], dim=1)  # (B, T+1, C*K)
            # (B, T, C, K): z_2..z_{T+1}
            target_logits = torch.cat([logits[:, 1:].detach(), next_logits], dim=1)
            dyn_in, real_pred_logits = z_in, None
            if self.dyn_cfg.imagined_inputs > 0:
                dyn_in, real_pred_logits = self._with_imagined_inputs(z_in, batch, generator)
            dyn_loss, z_pred_logits, dyn_metrics = self._dynamics_loss(dyn_in, batch, target_logits.softmax(-1))
            if real_pred_logits is not None:  # the consistency target: predictions from the real latents
                z_pred_logits = real_pred_logits
            obs_loss, obs_metrics = self.obs_model.compute_loss(
                frames, z, logits, dynamics_logits=z_pred_logits.detach()
            )
        return WorldModelLosses(obs_loss, dyn_loss, z_in.detach(), {**obs_metrics, **dyn_metrics})

    @staticmethod
    def output(batch: TorchSequenceBatch, z: Tensor, metrics: dict[str, Tensor]) -> WorldModelOutput:
        """What an update hands on: the latents z_0..z_T (B, T+1, Z) with the batch's steps."""
        return WorldModelOutput(
            z=z,
            actions=batch.actions,
            rewards=batch.rewards,
            terminated=batch.terminated,
            truncated=batch.truncated,
            metrics=metrics,
        )

    def pretrain_obs_loss(
        self, frames: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Observation model alone on a batch of (N, S, 64, 64) frames: decoder NLL + entropy hinge."""
        self.obs_model.train()
        with self.autocast():
            logits = self.obs_model.encode(frames)  # (N, C, K)
            z = self.obs_model.sample(logits, generator)  # (N, C*K)
            return self.obs_model.compute_loss(frames, z, logits)

    def pretrain_dyn_loss(
        self, batch: TorchSequenceBatch, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Dynamics model alone on a sequence batch; latents and targets from the (fixed) encoder."""
        self.dynamics.train()
        with self.autocast():
            z, logits = self._encode_no_grad(batch.obs, generator)  # (B, T+2, C*K), (B, T+2, C, K)
            loss, _, metrics = self._dynamics_loss(z[:, :-1], batch, logits[:, 2:].softmax(-1))
        return loss, metrics
