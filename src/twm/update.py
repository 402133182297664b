"""The update: the agent's four optimisers and the one structure of every step (docs/method.md).

Every step, of training or pretraining, is: losses -> one backward pass -> clip each network's
gradient norm and step its optimiser. The losses a step takes come from the models (the world
model's ``compute_loss``, the agent's ``actor_critic_losses``); the parameters of the losses of one
step are disjoint, so one backward pass gives each network the gradient its own loss would (with
``dynamics.encoder_grad`` > 0, beyond the paper, the encoder gets that share of the dynamics loss's
gradient too).

``Learner.update`` is one training update: the world-model step, imagination from its latents, the
actor-critic step. Eagerly by default; with ``train.capture`` its parts run as compiled regions
(``twm.captured``), which draw from torch's global generator instead of the update's one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from twm.agent import Agent
from twm.captured import CapturedRegions, check_compiler, clip_and_step, copied
from twm.imagination import Rollout
from twm.models.actor_critic import Actor, Critic
from twm.models.batch import TorchSequenceBatch
from twm.models.world_model import WorldModel, WorldModelOutput

OptimizerImpl = Literal["for_loop", "foreach", "fused"]
# The optimisers in the order checkpoints list them (their keys in ``state_dict``).
OPTIMIZER_NAMES = ("obs", "dyn", "actor", "critic")


def adam(
    params: Iterable[Tensor], lr: float, eps: float, weight_decay: float, impl: OptimizerImpl
) -> torch.optim.Adam:
    """torch Adam with coupled L2 weight decay, as the released code, run as ``impl`` says.

    The three implementations apply the same update rule; ``for_loop`` is torch's reference
    (one set of operators per parameter tensor, each reading its step count back to the host),
    ``foreach`` batches them over tensors, ``fused`` is one kernel per step that keeps the step
    counts on the device (tests compare them).
    """
    if impl == "fused":
        return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay, foreach=impl == "foreach")


def eager_clip_and_step(optimizer: torch.optim.Optimizer, clip: float) -> Tensor:
    """Clip the global gradient norm of the optimiser's parameters, step it; the norm before clipping.

    The clip runs batched over tensors unless the optimiser is the ``for_loop`` kind.
    """
    group = optimizer.param_groups[0]  # one group: all of its network's parameters
    batched = bool(group.get("foreach") or group.get("fused"))
    norm = nn.utils.clip_grad_norm_(group["params"], clip, foreach=batched)
    optimizer.step()
    return norm.detach()


class Optimizers:
    """The four Adam optimisers of an agent and their gradient clips, by name (``OPTIMIZER_NAMES``)."""

    def __init__(self, agent: Agent) -> None:
        cfg, wm = agent.cfg, agent.world_model
        o, d, ac, impl = cfg.obs_model, cfg.dynamics, cfg.actor_critic, cfg.train.optimizer_impl
        # Coupled L2 weight decay (torch Adam), as the released code.
        self.by_name: dict[str, torch.optim.Optimizer] = {
            "obs": adam(wm.obs_model.parameters(), o.lr, o.eps, o.weight_decay, impl),
            "dyn": adam(wm.dynamics.parameters(), d.lr, d.eps, d.weight_decay, impl),
            "actor": adam(agent.actor.parameters(), ac.actor_lr, ac.eps, ac.weight_decay, impl),
            "critic": adam(agent.critic.parameters(), ac.critic_lr, ac.eps, ac.weight_decay, impl),
        }
        self.clips = {"obs": o.grad_clip, "dyn": d.grad_clip, "actor": ac.grad_clip, "critic": ac.grad_clip}

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.by_name[name]

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        return iter(self.by_name.values())

    def state_dict(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.by_name.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, opt in self.by_name.items():
            opt.load_state_dict(state[name])
            # A captured run on CUDA saves capturable=True, which a CPU cannot step; a captured
            # update on CUDA sets it again at its first update.
            for group in opt.param_groups:
                group["capturable"] = False


class PartClock:
    """Hands ``on_part(name, seconds)`` the wall time of each part of an update as it ends; the
    clock restarts after the call, so a caller that synchronises a device there is not timed."""

    def __init__(self, on_part: Callable[[str, float], None] | None, compiling: bool = False) -> None:
        self.on_part = on_part
        self.compiling = compiling  # every part is reported as "compile"
        self.start = time.perf_counter()

    def done(self, part: str) -> None:
        if self.on_part is not None:
            self.on_part("compile" if self.compiling else part, time.perf_counter() - self.start)
            self.start = time.perf_counter()


class Learner:
    """An agent's optimisers and its updates: training (``update``) and pretraining (``pretrain_*``)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.optimizers = Optimizers(agent)
        self.captured: CapturedRegions | None = None
        if agent.cfg.train.capture:
            if agent.cfg.actor_critic.fresh_pool <= 0:
                raise ValueError("a captured update needs actor_critic.fresh_pool > 0 (static shapes)")
            check_compiler(agent.device, agent.cfg.train.compile_backend)
            self.captured = CapturedRegions(agent.cfg.train.compile_backend)

    def update(
        self,
        batch: TorchSequenceBatch,
        sample_start_obs: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
        on_part: Callable[[str, float], None] | None = None,
    ) -> dict[str, Tensor]:
        """One update: world-model step, imagination from the batch's latents, actor-critic step.

        ``sample_start_obs(n)`` draws n replay observations for fresh imagination starts. A captured
        update draws from torch's global generator: ``generator`` must then be None. ``on_part(name,
        seconds)`` gets the wall time of each part (world_model, imagination, actor_critic) as it
        ends; on a GPU that is the time to queue the work, not to run it. The parts of the captured
        updates that compile the regions (``CapturedRegions.compiling``) are all reported as
        ``compile``, so a run's profile shows what capture cost.
        """
        agent, captured = self.agent, self.captured
        self._begin(generator)
        clock = PartClock(on_part, compiling=captured is not None and captured.compiling)

        # World model: both losses, one backward, the observation and dynamics steps.
        wm = self._run(agent.world_model.compute_loss, batch, generator)
        obs_norm, dyn_norm = self._step([wm.obs_loss, wm.dyn_loss], ("obs", "dyn"))
        wm_metrics = self._out({**wm.metrics, "obs/grad_norm": obs_norm, "dyn/grad_norm": dyn_norm})
        wm_out = WorldModel.output(batch, wm.z, wm_metrics)
        clock.done("world_model")

        rollout = self._imagine(wm_out, sample_start_obs, generator)
        clock.done("imagination")

        metrics = self._actor_critic_step(rollout, wm_out)
        clock.done("actor_critic")
        metrics.update(wm_out.metrics)
        return metrics

    def step(self, losses: Sequence[Tensor], names: Sequence[str]) -> list[Tensor]:
        """One eager step of the named optimisers on their losses: clear their gradients, one
        backward pass, clip and step each; the gradient norms before clipping."""
        optimizers = [self.optimizers[name] for name in names]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(list(losses))
        return [
            eager_clip_and_step(opt, self.optimizers.clips[n])
            for opt, n in zip(optimizers, names, strict=True)
        ]

    # ------------------------------------------------------------------ policy resets

    def reset_policy(self, seed: int) -> None:
        """New weights for actor, critic and slow critic, drawn from ``seed`` (not from the run's
        streams), and fresh Adam states for their optimisers (``actor_critic.reset_every``).

        Everything is overwritten in place, so a captured update's compiled regions keep reading
        the same parameter and state tensors.
        """
        agent, cfg = self.agent, self.agent.cfg
        with torch.random.fork_rng(devices=[]):  # new weights as the constructors draw them
            torch.manual_seed(seed)
            actor = Actor(cfg.actor_critic, cfg.policy_input_dim, agent.num_actions)
            critic = Critic(cfg.actor_critic, cfg.policy_input_dim)
        # (network, its new weights): the slow critic starts as the new critic, as at construction.
        pairs = [(agent.actor, actor), (agent.critic, critic), (agent.slow_critic, critic)]
        with torch.no_grad():
            for module, source in pairs:
                if module is not None:
                    for p, q in zip(module.parameters(), source.parameters(), strict=True):
                        p.copy_(q)
            for name in ("actor", "critic"):
                for state in self.optimizers[name].state.values():
                    for value in state.values():
                        if isinstance(value, Tensor):
                            value.zero_()  # moments and step count back to a fresh Adam's

    def policy_update(
        self,
        batch: TorchSequenceBatch,
        sample_start_obs: Callable[[int], Tensor],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The policy half of an update: the batch's latents from the world model (its losses'
        forward pass, eager and without gradients, no step), imagination from them, the actor-critic
        step, the slow critic. In a captured learner the imagination and the actor-critic step replay
        the update's compiled regions (nothing new is compiled); ``generator`` must then be None."""
        self._begin(generator, update=False)
        with torch.no_grad():
            wm = self.agent.world_model.compute_loss(batch, generator)
        wm_out = WorldModel.output(batch, wm.z, {})
        rollout = self._imagine(wm_out, sample_start_obs, generator)
        return self._actor_critic_step(rollout, wm_out)

    def _actor_critic_step(self, rollout: Rollout, wm_out: WorldModelOutput) -> dict[str, Tensor]:
        """Both losses (the actor's reads the critic before its step; the critic's may also read the
        batch's real steps), one backward, the critic and actor steps, then the slow critic follows
        the critic. As compiled regions in a captured update."""
        agent = self.agent
        real = wm_out if agent.cfg.actor_critic.replay_value_coef > 0 else None
        names = ("critic", "actor")
        ac = self._run(agent.actor_critic_losses, rollout, real)
        c_norm, a_norm = self._step([ac.critic_loss, ac.actor_loss], names)
        metrics = self._out({**ac.metrics, "ac/critic_grad_norm": c_norm, "ac/actor_grad_norm": a_norm})
        agent.update_slow_critic()
        return metrics

    # ------------------------------------------------------------------ pretraining (eager)

    def pretrain_obs_step(
        self, frames: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The observation model alone on a batch of frames (``WorldModel.pretrain_obs_loss``)."""
        loss, metrics = self.agent.world_model.pretrain_obs_loss(frames, generator)
        (metrics["obs/grad_norm"],) = self.step([loss], ("obs",))
        return metrics

    def pretrain_dyn_step(
        self, batch: TorchSequenceBatch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The dynamics model alone on a sequence batch (``WorldModel.pretrain_dyn_loss``)."""
        loss, metrics = self.agent.world_model.pretrain_dyn_loss(batch, generator)
        (metrics["dyn/grad_norm"],) = self.step([loss], ("dyn",))
        return metrics

    def pretrain_ac_step(
        self, batch: TorchSequenceBatch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The actor-critic on real latent sequences (``Agent.pretrain_ac_losses``)."""
        ac = self.agent.pretrain_ac_losses(batch, generator)
        self.step([ac.critic_loss, ac.actor_loss], ("critic", "actor"))
        self.agent.update_slow_critic()
        return ac.metrics

    # ------------------------------------------------------------------ eager or captured

    def _begin(self, generator: torch.Generator | None, update: bool = True) -> None:
        """Start a captured update (or, ``update=False``, a policy-only one); eager: nothing."""
        if self.captured is not None:
            if generator is not None:
                raise ValueError("a captured update draws from torch's global generator; pass generator=None")
            self.captured.begin(self.agent.device, list(self.optimizers), update=update)

    def _imagine(
        self,
        wm_out: WorldModelOutput,
        sample_start_obs: Callable[[int], Tensor],
        generator: torch.Generator | None,
    ) -> Rollout:
        """Imagination from the batch's latents. Captured: the fresh starts' observations are drawn
        (on the host) before the region, as one pool; eager: when imagined episodes end."""
        if self.captured is None:
            return self.agent.imagine(wm_out, sample_start_obs, generator)
        pool = sample_start_obs(self.agent.cfg.actor_critic.fresh_pool)
        rollout: Rollout = self.captured.run(self._imagine_from_pool, wm_out, pool)
        return rollout

    def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)``; in a captured update, as one compiled region."""
        return function(*args) if self.captured is None else self.captured.run(function, *args)

    def _step(self, losses: Sequence[Tensor], names: Sequence[str]) -> list[Tensor]:
        """``step``; in a captured update, a compiled backward and one compiled region of clips and steps."""
        if self.captured is None:
            return self.step(losses, names)
        optimizers = [self.optimizers[name] for name in names]
        self.captured.backward(losses, optimizers)
        with torch.no_grad():
            norms: list[Tensor] = self.captured.run(
                clip_and_step, optimizers, [self.optimizers.clips[n] for n in names]
            )
        return norms

    def _out(self, metrics: dict[str, Tensor]) -> dict[str, Tensor]:
        """The metrics of a part; a captured update's, copied out of the memory the next replay reuses."""
        return metrics if self.captured is None else copied(metrics)

    def _imagine_from_pool(self, wm_out: WorldModelOutput, pool_obs: Tensor) -> Rollout:
        """Imagination with the fresh starts taken in order from ``pool_obs`` (a captured region)."""
        return self.agent.imagine(wm_out, lambda n: pool_obs[:n], None)
