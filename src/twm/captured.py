"""The captured update (``train.capture``): an update as a few whole compiled regions.

``twm.update`` runs the update; this module compiles its parts and steps optimisers inside them.

In eager mode an update is thousands of small operators (``docs/speed.md``, "Operators per
update"); on a GPU their launches, not their arithmetic, set the time. Here each part of an update
is compiled whole by ``torch.compile(fullgraph=True)``: no graph break, hence no Python and no
host sync inside, and static shapes. An update runs seven regions:

1. the world-model losses (``WorldModel.compute_loss``) and 2. their backward (one pass for both losses,
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
from typing import Any

import torch
from torch import Tensor, nn

from twm.config import ConfigError


def check_compiler(device: torch.device, backend: str) -> None:
    """Inductor on a CPU writes C++ and needs a compiler; without one, say so before the run starts
    (a ConfigError: one line, exit 2) instead of failing at the first update after the prefill."""
    if backend != "inductor" or device.type != "cpu":
        return
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as exc:  # torch raises InvalidCxxCompiler (or an OS error) when none runs
        raise ConfigError(
            "train.capture with inductor on a CPU needs a C++ compiler and none was found "
            f"({type(exc).__name__}): install g++ (or set CXX), or set train.capture=false"
        ) from None


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


# A captured update compiles its regions in the first update and, once the optimisers hold state,
# the step regions again in the second (docs/speed.md, "The captured update").
COMPILING_UPDATES = 2


class CapturedRegions:
    """The compiled regions of captured updates (``train.capture``); see the module docstring.

    Each function given to ``run`` is compiled at its first call (minutes with inductor); later
    calls replay it. ``backend`` goes to ``torch.compile`` (the tests use ``aot_eager``, which traces
    and differentiates as inductor does but generates no code).
    """

    def __init__(self, backend: str = "inductor") -> None:
        self.backend = backend
        self._options: dict[str, Any] | None = None
        self._compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
        self.region_calls = 0  # compiled regions run so far, backward passes included
        self.updates = 0  # updates begun (in this process: a resumed run compiles again)

    @property
    def compiling(self) -> bool:
        """Whether the update begun last is one of the first ``COMPILING_UPDATES``, which compile."""
        return self.updates <= COMPILING_UPDATES

    def begin(
        self, device: torch.device, optimizers: Sequence[torch.optim.Optimizer], update: bool = True
    ) -> None:
        """Start an update (``update=False``: a part of one, such as a policy-only update, not
        counted in ``updates``); the first, once the networks are on their device, sets the options."""
        self.updates += int(update)
        mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
        if mark_step is not None:  # a new update: the previous one's graph outputs are not read again
            mark_step()
        if self._options is None:
            self._options = {"fullgraph": True, "backend": self.backend}
            if device.type == "cuda":
                if self.backend == "inductor":
                    self._options["mode"] = "reduce-overhead"  # each region replays as a CUDA graph
                for optimizer in optimizers:
                    make_capturable(optimizer)

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` as one compiled region, counted in ``region_calls``."""
        if self._options is None:
            raise RuntimeError("CapturedRegions.begin must be called before the first region")
        compiled = self._compiled.get(function)
        if compiled is None:
            compiled = self._compiled[function] = torch.compile(function, **self._options)
        self.region_calls += 1
        return compiled(*args)

    def backward(self, losses: Sequence[Tensor], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """The backward pass of a compiled forward region: one more region (compiled by AOT autograd)."""
        self.region_calls += 1
        backward(losses, optimizers)
