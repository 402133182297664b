"""benchmarks/speed/profile_update.py: the groups it reports partition the profiled self time."""

from __future__ import annotations

import json
import sys

import pytest
from tests.benchmarks.scripts import load_script

SCRIPT, profile_update = load_script("speed/profile_update.py")


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("aten::convolution_backward", "convolution"),
        ("aten::addmm", "matmul"),
        ("aten::exponential_", "random"),
        ("graph_6_cpp_fused_native_dropout_silu_view_26", "fused"),
        ("## Call CompiledFxGraph figh6bpe ##", "fused"),
        ("aten::copy_", "other"),
    ],
)
def test_operators_fall_in_their_group(name: str, group: str) -> None:
    assert profile_update.group_of(name) == group


def test_the_groups_add_up_to_the_profiled_time(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["profile_update.py", "--preset", "smoke", "--set", "train.capture=false", "--updates", "2", "--json"]
    monkeypatch.setattr(sys, "argv", argv)
    assert profile_update.main() == 0
    result = json.loads(capsys.readouterr().out)
    groups = result["groups_ms_per_update"]
    assert result["capture"] is False and result["ms_per_update"] > 0
    assert sum(groups.values()) == pytest.approx(result["ms_per_update"], rel=1e-9)
    # The smoke agent has an encoder and a decoder, linear layers and sampled latents.
    assert groups["convolution"] > 0 and groups["matmul"] > 0 and groups["random"] > 0
    assert groups.get("fused", 0) == 0  # eager: no compiled kernels
    assert len(result["top"]) == 30
