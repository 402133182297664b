"""The captured update (``train.capture``): an update as a few whole compiled regions.

In eager mode an update is thousands of small operators (``docs/speed.md``, "Operators per
update"); on a GPU their launches, not their arithmetic, set the time. Here each part of an update
is compiled whole by ``torch.compile(fullgraph=True)``: no graph break, hence no Python and no
host sync inside, and static shapes. An update runs seven regions:

1. the world-model losses (``WorldModel.losses``) and 2. their backward (one pass for both losses,
   whose parameters are disjoint);
3. the gradient clips and Adam steps of the observation and dynamics optimisers;
4. imagination: the starts, the latents of the fresh-start pool and the H-step rollout, which needs
   ``actor_critic.fresh_pool`` (no host sync on imagined episode ends);
5. the critic's and actor's losses (``Agent.actor_critic_losses``), 6. their backward, and
7. their clips and Adam steps.

On CUDA, mode ``reduce-overhead`` records each region as a CUDA graph and replays it; on a CPU the
regions are compiled by inductor (or any backend given). The functions are the eager ones, so
the losses and the update rule are the same; what differs:

- Random numbers come from torch's global generator (seeded by the run, saved in every
  checkpoint), because dynamo cannot trace an explicit ``torch.Generator``. Eager runs draw from
  the run's update generator instead, so a captured run is a different draw of the same method.
  Inductor also replaces torch's random operators by its own generator unless
  ``torch._inductor.config.fallback_random`` is set (the tests set it to compare with eager).
- Fused code rounds differently (tests: within 1e-4 of eager after several updates).

The fresh-start observations are drawn from the replay buffer (numpy, on the host) before the
imagination region runs, ``fresh_pool`` of them per update.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from twm.imagination import Rollout
from twm.models.world_model import TorchSequenceBatch, WorldModel, WorldModelOutput

if TYPE_CHECKING:
    from twm.agent import Agent


def clip_and_step(optimizers: Sequence[torch.optim.Optimizer], clips: Sequence[float]) -> list[Tensor]:
    """Clip each optimiser's gradients to its global norm, then step it; the norms before clipping.

    Each optimiser has one parameter group holding all of its network's parameters. Run under
    ``torch.no_grad``. ``Optimizer.step`` is called unwrapped: its wrappers (profiling hooks, and a
    grad-mode switch between two deliberate graph breaks) would cut the region in four.
    """
    norms = []
    for optimizer, clip in zip(optimizers, clips, strict=True):
        params = optimizer.param_groups[0]["params"]
        norms.append(nn.utils.clip_grad_norm_(params, clip, foreach=True))
        inspect.unwrap(type(optimizer).step)(optimizer)
    return norms


def backward(losses: Sequence[Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """One backward pass for several losses, after clearing the optimisers' gradients."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    torch.autograd.backward(losses)


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Adam with its step counts on the parameters' device, so a CUDA graph can replay its step."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state and "step" in state:  # resumed: the counts were loaded onto the host
                state["step"] = state["step"].to(param.device, torch.float32)


def copied(metrics: dict[str, Tensor]) -> dict[str, Tensor]:
    """The metrics, copied out of the graphs' memory (which the next replay overwrites) in one
    stack; each is a view of the copy."""
    stacked = torch.stack([value.detach().float() for value in metrics.values()])  # (M,)
    return dict(zip(metrics, stacked.unbind(), strict=True))


class CapturedUpdate:
    """``Agent.update`` as compiled regions; see the module docstring.

    The first updates compile (minutes with inductor); later ones replay. ``backend`` goes to
    ``torch.compile`` (the tests use ``aot_eager``, which traces and differentiates as inductor does
    but generates no code).
    """

    def __init__(self, agent: Agent, backend: str = "inductor") -> None:
        ac = agent.cfg.actor_critic
        if ac.fresh_pool <= 0:
            raise ValueError("a captured update needs actor_critic.fresh_pool > 0 (static shapes)")
        self.agent = agent
        self.backend = backend
        wm = agent.world_model
        self._wm_optimizers = [wm.obs_optimizer, wm.dyn_optimizer]
        self._wm_clips = [wm.obs_cfg.grad_clip, wm.dyn_cfg.grad_clip]
        self._ac_optimizers = [agent.critic_optimizer, agent.actor_optimizer]
        self._ac_clips = [ac.grad_clip, ac.grad_clip]
        self._regions: tuple[Callable[..., Any], ...] | None = None
        self.region_calls = 0  # compiled regions run so far, backward passes included

    def _compiled_regions(self) -> tuple[Callable[..., Any], ...]:
        """The compiled functions, made at the first update, once the agent is on its device."""
        if self._regions is None:
            options: dict[str, Any] = {"fullgraph": True, "backend": self.backend}
            if self.agent.device.type == "cuda":
                if self.backend == "inductor":
                    options["mode"] = "reduce-overhead"  # each region replays as a CUDA graph
                for optimizer in self._wm_optimizers + self._ac_optimizers:
                    make_capturable(optimizer)
            self._regions = (
                torch.compile(self.agent.world_model.losses, **options),
                torch.compile(self._rollout, **options),
                torch.compile(self.agent.actor_critic_losses, **options),
                torch.compile(clip_and_step, **options),
            )
        return self._regions

    def world_model_step(self, batch: TorchSequenceBatch) -> WorldModelOutput:
        """Regions 1-3: the world-model losses, their backward, the two optimiser steps."""
        mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
        if mark_step is not None:  # a new update: the previous one's graph outputs are not read again
            mark_step()
        wm_losses_of, _, _, step = self._compiled_regions()
        wm_losses = self._run(wm_losses_of, batch)
        self._backward([wm_losses.obs_loss, wm_losses.dyn_loss], self._wm_optimizers)
        with torch.no_grad():
            obs_norm, dyn_norm = self._run(step, self._wm_optimizers, self._wm_clips)
        metrics = {**wm_losses.metrics, "obs/grad_norm": obs_norm, "dyn/grad_norm": dyn_norm}
        return WorldModel.output(batch, wm_losses.z, copied(metrics))

    def imagine(self, wm_out: WorldModelOutput, sample_start_obs: Callable[[int], Tensor]) -> Rollout:
        """Region 4: the starts, the fresh-start pool and the rollout (read within this update)."""
        pool_obs = sample_start_obs(self.agent.cfg.actor_critic.fresh_pool)
        return self._run(self._compiled_regions()[1], wm_out, pool_obs)

    def actor_critic_step(self, rollout: Rollout) -> dict[str, Tensor]:
        """Regions 5-7: the critic's and actor's losses, their backward, the two optimiser steps."""
        _, _, ac_losses_of, step = self._compiled_regions()
        c_loss, a_loss, metrics = self._run(ac_losses_of, rollout)
        self._backward([c_loss, a_loss], self._ac_optimizers)
        with torch.no_grad():
            c_norm, a_norm = self._run(step, self._ac_optimizers, self._ac_clips)
        metrics = {**metrics, "ac/critic_grad_norm": c_norm, "ac/actor_grad_norm": a_norm}
        return copied(metrics)

    def _run(self, region: Callable[..., Any], *args: Any) -> Any:
        """Run one compiled region, counted in ``region_calls``."""
        self.region_calls += 1
        return region(*args)

    def _backward(self, losses: Sequence[Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """The backward pass of a compiled forward region: one more region (compiled by AOT autograd)."""
        self.region_calls += 1
        backward(losses, optimizers)

    def _rollout(self, wm_out: WorldModelOutput, pool_obs: Tensor) -> Rollout:
        """Imagination from the world model's latents, the fresh starts encoded from ``pool_obs``."""
        obs_model = self.agent.world_model.obs_model

        def fresh_latents(n: int) -> Tensor:  # called once, for the pool of all n observations
            return obs_model.sample(obs_model.encode(pool_obs[:n]), None)

        return self.agent.rollout(self.agent.imagination_starts(wm_out, None), fresh_latents, None)
