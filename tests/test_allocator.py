"""train.keep_freed_memory: glibc reuses freed blocks (far fewer page faults), same arithmetic.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

SCRIPT = r"""
import json, resource, sys
import torch
from twm.allocator import keep_freed_memory

calls = {"plain": 0, "keep": 1, "twice": 2}[sys.argv[1]]
applied = [keep_freed_memory() for _ in range(calls)]

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

# 1. page faults of allocating, touching and freeing the same three blocks above glibc's largest
# mmap threshold (32 MiB) ten times, as an update does with its activations and gradients
rounds = []
for _ in range(10):
    before = faults()
    blocks = [torch.empty(n) for n in (10 << 20, 20 << 20, 12 << 20)]  # 40, 80, 48 MiB of float32
    for x in blocks:
        x.fill_(1.0)
    del blocks, x
    rounds.append(faults() - before)
alloc_faults = sum(rounds[6:])  # once the heap has settled

# 2. the same world-model update (smoke config, fixed seed): its losses
from twm.agent import Agent
from twm.perf.bench import synthetic_batch
from twm.config_files import load_config
from twm.update import Learner

cfg = load_config("smoke", [])
torch.manual_seed(0)
agent = Agent(cfg, 3)
batch = synthetic_batch(cfg, 3, torch.device("cpu"), 0)
out = agent.world_model.compute_loss(batch, torch.Generator().manual_seed(0))
norms = Learner(agent).step([out.obs_loss, out.dyn_loss], ("obs", "dyn"))
metrics = {k: float(v) for k, v in {**out.metrics, "obs/grad_norm": norms[0], "dyn/grad_norm": norms[1]}.items()}
print(json.dumps({"applied": applied, "faults": alloc_faults, "metrics": metrics}))
"""


@functools.cache
def run(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults_and_the_update_is_the_same():
    plain, kept = run("plain"), run("keep")
    assert kept["applied"] == [True] and plain["applied"] == []
    # Plain glibc maps and unmaps each block: 168 MiB = 43k page faults in every round.
    assert plain["faults"] > 4 * 30_000
    # Kept: the first rounds fault the heap in, the later ones reuse it (measured: 0).
    assert kept["faults"] < plain["faults"] / 10
    assert kept["metrics"] == plain["metrics"]


def test_keep_freed_memory_twice_keeps_its_effect():
    """Called twice in a fresh interpreter: both calls say it applied, and the allocator's effect (few
    page faults) is there, the same update as a plain process. (Not in the pytest process itself: the
    setting is process-wide and a cached flag would say nothing about the allocator.)"""
    plain, twice = run("plain"), run("twice")
    assert twice["applied"] == [True, True]
    assert twice["faults"] < plain["faults"] / 10
    assert twice["metrics"] == plain["metrics"]
