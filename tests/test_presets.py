"""The `plus` preset and its switches beyond the paper: every switch is off in the paper's presets,
whose configs and updates are exactly what they were before the switches existed.

``tests/data/presets_before_plus.json`` was written by ``builders.preset_smoke_update`` and
``load_config(...).to_dict()`` run on the code of commit 026b2ef (before any of these switches).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from builders import NEEDS, NUM_ACTIONS, PLUS_SWITCHES, SWITCHES, catch_replay, preset_smoke_update
from twm.agent import Agent
from twm.config import Config
from twm.config_files import load_config
from twm.models.batch import TorchSequenceBatch
from twm.presets import SPEED_KEYS
from twm.update import Learner

CAPTURED_ON_A_CPU = {"train.capture": True, "train.optimizer_impl": "foreach", "actor_critic.fresh_pool": 64}
BEFORE = json.loads((Path(__file__).parent / "data" / "presets_before_plus.json").read_text())



def flat(cfg: Config) -> dict[str, object]:
    return {f"{s}.{k}": v for s, section in cfg.to_dict().items() for k, v in section.items()}


@pytest.mark.parametrize("preset", ["atari100k", "cpu", "minatar"])
def test_the_papers_presets_are_unchanged(preset: str) -> None:
    """Only how the update runs changed since (the captured update of the CPU presets, issue 28):
    with those keys back to their values of then, the config and one update are the same."""
    now = flat(load_config(preset, ["env.game=catch"]))
    before = {f"{s}.{k}": v for s, section in BEFORE[preset]["config"].items() for k, v in section.items()}
    speed = {k: v for k, v in now.items() if k in SPEED_KEYS and now[k] != before[k]}
    assert speed == ({} if preset == "atari100k" else CAPTURED_ON_A_CPU)
    assert {k: now[k] for k in before if k not in speed} == {k: v for k, v in before.items() if k not in speed}
    new_keys = set(now) - set(before)
    assert set(SWITCHES) <= new_keys
    defaults = flat(Config())
    assert {k: now[k] for k in new_keys} == {k: defaults[k] for k in new_keys}  # all off
    # One eager update at smoke size with the preset's switches and rates: the same numbers, up to
    # the rounding of this CPU's kernels. The file was written on another CPU; a 2-core AMD EPYC
    # (Zen 5, AVX-512) computes a few of the actor-critic metrics one float32 ulp apart (relative
    # differences of at most 1.5e-7), where any change of the function moves them by far more.
    eager = [f"{k}={before[k]}" for k in speed]
    got, expected = preset_smoke_update(preset, *eager), BEFORE[preset]["smoke_update"]
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_plus_is_minatar_with_the_switches_and_a_faster_critic() -> None:
    plus, minatar = flat(load_config("plus", ["env.game=catch"])), flat(load_config("minatar", ["env.game=catch"]))
    changed = {k: plus[k] for k in plus if plus[k] != minatar[k]}
    assert changed == {**PLUS_SWITCHES, "actor_critic.entropy_coef": 3e-4, "actor_critic.critic_lr": 1e-4}


def test_every_switch_changes_the_update() -> None:
    reference = preset_smoke_update("minatar")
    # replay.rewarded_share changes which sequences are drawn, not the update: in catch's replay
    # most windows hold a reward, so the same ones can win (tests/test_replay.py tests the draw).
    # So does replay.visit_rate (tests/test_replay.py). train.eval_policy changes how evaluations
    # act (tests/training/test_trainer.py).
    for key, value in SWITCHES.items():
        if key in ("replay.rewarded_share", "replay.visit_rate", "train.eval_policy"):
            continue
        base = NEEDS.get(key, [])
        other_alone = preset_smoke_update("minatar", *base) if base else reference
        assert preset_smoke_update("minatar", *base, f"{key}={value}") != other_alone, key


def test_slow_critic_follows_the_critic_by_its_rate() -> None:
    cfg = load_config("smoke", ["env.game=catch", "actor_critic.slow_critic_rate=0.25", "actor_critic.critic=twohot"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    assert agent.slow_critic is not None
    slow_before = [p.clone() for p in agent.slow_critic.parameters()]
    assert all(torch.equal(s, c) for s, c in zip(slow_before, agent.critic.parameters(), strict=True))
    replay = catch_replay(200)
    batch = TorchSequenceBatch.from_numpy(replay.sample_sequences(4, 4), "cpu")
    metrics = Learner(agent).update(batch, lambda n: torch.from_numpy(replay.sample_obs(n)), torch.Generator().manual_seed(0))
    assert "ac/slow_critic_reg" in metrics
    for slow, before, critic in zip(agent.slow_critic.parameters(), slow_before, agent.critic.parameters(), strict=True):
        torch.testing.assert_close(slow, before + 0.25 * (critic - before))
        assert not slow.requires_grad
    # Its weights and the return normaliser's EMAs are part of the agent's state (checkpoints).
    state = Agent(load_config("plus", ["env.game=catch"]), NUM_ACTIONS).state_dict()
    assert any(k.startswith("slow_critic.") for k in state)
    assert {"return_normalizer.lo", "return_normalizer.hi"} <= set(state)


def test_config_help_says_what_each_preset_is(capsys: pytest.CaptureFixture[str]) -> None:
    from twm import cli
    from twm.presets import PRESET_SUMMARIES, PRESETS

    assert set(PRESET_SUMMARIES) == set(PRESETS)
    with pytest.raises(SystemExit):
        cli.main(["config", "--help"])
    out = capsys.readouterr().out
    assert "plus       beyond the paper" in out and "atari100k  the paper's method" in out
