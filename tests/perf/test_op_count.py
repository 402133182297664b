"""The dispatch counter of `twm bench`: known answers on small programs."""

from __future__ import annotations

import torch

from builders import smoke
from twm.agent import Agent
from twm.perf.bench import count_update, synthetic_batch, synthetic_obs_sampler
from twm.perf.op_count import CountOps, op_kind
from twm.update import Learner

aten = torch.ops.aten


def test_kinds_of_known_operators() -> None:
    assert op_kind(aten.add.Tensor) == "launch"
    assert op_kind(aten.view.default) == "view"
    assert op_kind(aten.t.default) == "view"
    assert op_kind(aten._unsafe_view.default) == "view"
    assert op_kind(aten.empty.memory_format) == "alloc"
    assert op_kind(aten._local_scalar_dense.default) == "sync"
    assert op_kind(aten.nonzero.default) == "sync"


def test_counts_of_a_small_program() -> None:
    x, y = torch.ones(4), torch.full((4,), 2.0)
    with CountOps() as counter:
        z = x + y  # one launch
        w = z.view(2, 2).t()  # two views
        total = float(w.sum())  # a launch (sum) and a host sync (the value)
        torch.nonzero(z > 2)  # a launch (gt) and a sync (the output size depends on the data)
    c = counter.counts
    assert total == 12.0
    assert (c.ops, c.launching, c.syncs) == (7, 3, 2)
    assert c.by_op == {"add": 1, "sum": 1, "gt": 1}
    assert c.sync_ops == {"_local_scalar_dense": 1, "nonzero": 1}


def test_backward_is_counted_too() -> None:
    w = torch.ones(3, requires_grad=True)
    with CountOps() as forward_only:
        (w * 2).sum()
    with CountOps() as with_backward:
        (w * 2).sum().backward()
    assert with_backward.counts.launching > forward_only.counts.launching
    assert w.grad is not None


def test_parts_of_an_update_add_up_to_the_whole_update() -> None:
    """The parts that ``count_update`` splits one update into add up to that update counted whole, by
    a second counter around it (dispatch modes nest: both see every operator): no operator is lost
    between parts or counted twice."""
    cfg = smoke()
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, 3))
    batch = synthetic_batch(cfg, 3, "cpu")
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    with CountOps() as whole:
        counts = count_update(learner, batch, sampler, torch.Generator().manual_seed(0))
    parts = [counts[k] for k in ("world_model", "imagination", "actor_critic")]
    assert all(p.launching > 0 for p in parts)
    summed = parts[0] + parts[1] + parts[2]
    assert (summed.ops, summed.launching, summed.syncs) == (
        whole.counts.ops,
        whole.counts.launching,
        whole.counts.syncs,
    )
    assert summed.by_op == whole.counts.by_op and summed.sync_ops == whole.counts.sync_ops
    assert counts["total"].summary(top=1000) == whole.counts.summary(top=1000)
