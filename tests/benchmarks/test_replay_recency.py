"""benchmarks/replay_recency.py: the ages of the sequences each sampler draws, and its table.

The replay's expected visits (``replay.visit_rate``) are tested by hand in tests/test_replay.py;
here, that at the CPU presets' rate they draw new data as the paper's real visits do at its rate."""

from __future__ import annotations

import json

import pytest
from tests.benchmarks.scripts import load_script

_, recency = load_script("replay_recency.py")


def test_the_table_names_each_sampler_and_its_shares(capsys: pytest.CaptureFixture[str]) -> None:
    assert recency.main(["--steps", "1500", "--prefill", "200", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows) == list(recency.SAMPLERS)
    for shares in rows.values():  # newest 5 % within newest 10 % within ...
        assert (
            len(shares) == len(recency.AGES)
            and shares == sorted(shares)
            and shares[0] >= 0
            and shares[-1] <= 1
        )
    paper, cpu, cpu_expected = rows.values()
    assert paper[0] > 0.4 and cpu[0] < 0.15 and cpu_expected[0] > 0.4
    assert recency.main(["--steps", "1500", "--prefill", "200"]) == 0
    assert capsys.readouterr().out.count("\n") == 2 + len(recency.SAMPLERS)
