"""The paper's parameter counts, asserted here and nowhere else, and `twm info` that reports them."""

from __future__ import annotations

import json
import subprocess
import sys

from twm.config import Config
from twm.perf.info import parameter_counts

PAPER_PONG = {
    "observation_model": 8_234_532,
    "encoder": 3_126_992,
    "decoder": 5_107_540,
    "dynamics_model": 10_779_394,
    "actor": 1_315_846,
    "critic": 1_313_281,
}


def test_paper_parameter_counts_for_pong() -> None:
    counts = parameter_counts(Config(), num_actions=6)
    assert {k: counts[k] for k in PAPER_PONG} == PAPER_PONG
    assert counts["total"] == sum(
        PAPER_PONG[k] for k in ("observation_model", "dynamics_model", "actor", "critic")
    )


def test_info_cli_json_reads_the_action_set() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "twm.cli", "info", "--game", "Pong", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["num_actions"] == 6
    assert info["parameters"]["dynamics_model"] == PAPER_PONG["dynamics_model"]
    # Breakout has 4 actions: only the action embedding and the actor's output layer change.
    out = subprocess.run(
        [sys.executable, "-m", "twm.cli", "info", "--game", "breakout", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    params = json.loads(out.stdout)["parameters"]
    assert params["dynamics_model"] == PAPER_PONG["dynamics_model"] - 2 * 256
    assert params["actor"] == PAPER_PONG["actor"] - 2 * 513
