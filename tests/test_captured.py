"""train.capture (twm.captured): the update as whole compiled regions, against the eager update.

The regions are compiled with ``fullgraph=True``, so a graph break anywhere in them (Python on a
tensor value, a host sync, an untraceable call) fails these tests instead of silently splitting a
region. They compile with the ``aot_eager`` backend, which traces and differentiates as inductor
does but generates no code (inductor takes minutes on a CPU; TWM_TEST_INDUCTOR=1 runs it too).
Both paths draw from torch's global generator here, so they must agree up to rounding:
metrics within 1e-5 and weights within 1e-6 after three updates, with dropout on, imagined
episodes ending and the fresh-start pool running out and being reused.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from builders import SWITCH_OVERRIDES, counting_compiled_graphs
from twm.agent import Agent
from twm.config import Config, ConfigError
from twm.config_files import load_config
from twm.models.dynamics import MAX_KEPT_POSITIONS
from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
from twm.training.checkpoint import load_checkpoint
from twm.training.trainer import Trainer, TrainingStopped
from twm.update import Learner

NUM_ACTIONS = 3
# A high threshold ends imagined episodes within a few steps, and a pool of 4 runs out, so the
# ends, the fresh starts and the pool's reuse are all exercised.
CAPTURED = [
    "env.game=catch",
    "train.capture=true",
    "train.compile_backend=aot_eager",
    "train.optimizer_impl=foreach",
    "actor_critic.fresh_pool=4",
    "actor_critic.discount_threshold=0.7",
]


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """Each test compiles afresh (every agent is a new set of guards on the same functions)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def updates(cfg: Config, n: int = 3) -> tuple[list[dict[str, float]], Learner]:
    """n updates from a seeded init on synthetic batches, drawing from torch's global generator."""
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    out = []
    for i in range(n):
        metrics = learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", i), sampler, None)
        out.append({k: float(v) for k, v in metrics.items()})
    return out, learner


# Regions of one captured update: 5 forward regions run by CapturedRegions.run (world-model losses,
# imagination, actor-critic losses and the two clip-and-Adam steps) and 2 backward passes.
REGIONS_PER_UPDATE, FORWARD_REGIONS_PER_UPDATE = 7, 5


def assert_same_updates(
    cfg: Config, rtol: float, weight_atol: float, extra: tuple[str, ...] = ()
) -> list[dict[str, float]]:
    eager_cfg = load_config("smoke", [*CAPTURED, *extra, "train.capture=false"])
    eager, eager_learner = updates(eager_cfg)
    with counting_compiled_graphs() as compiled:
        captured, captured_learner = updates(cfg)
    # The captured path really ran its compiled regions, every one of them, in every update.
    assert captured_learner.captured is not None
    assert captured_learner.captured.region_calls == REGIONS_PER_UPDATE * len(captured)
    assert compiled["graphs"] >= FORWARD_REGIONS_PER_UPDATE
    assert compiled["runs"] == FORWARD_REGIONS_PER_UPDATE * len(captured)
    eager_agent, captured_agent = eager_learner.agent, captured_learner.agent
    for got, expected in zip(captured, eager, strict=True):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=rtol, abs=rtol), key
    for (name, p), q in zip(eager_agent.state_dict().items(), captured_agent.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=weight_atol, msg=name)
    # The optimisers moved the weights (so the comparison is not between two initialisations).
    torch.manual_seed(0)
    init = Agent(eager_cfg, NUM_ACTIONS).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in captured_agent.state_dict().items())
    return captured


def test_captured_update_matches_eager_across_episode_ends_and_fresh_starts() -> None:
    cfg = load_config("smoke", CAPTURED)
    assert cfg.dynamics.dropout > 0  # dropout draws from the same global generator in both paths
    captured = assert_same_updates(cfg, rtol=1e-5, weight_atol=1e-6)
    assert all(m["ac/imagined_dones"] > 0 for m in captured)
    assert any(m["ac/fresh_reused"] > 0 for m in captured)


PLUS_SWITCHES = tuple(SWITCH_OVERRIDES)


def test_captured_update_with_every_plus_switch_matches_eager() -> None:
    cfg = load_config("smoke", [*CAPTURED, *PLUS_SWITCHES])
    captured = assert_same_updates(cfg, rtol=1e-5, weight_atol=1e-6, extra=PLUS_SWITCHES)
    assert all("ac/return_scale" in m and "ac/slow_critic_reg" in m for m in captured)


def test_captured_update_of_a_policy_reading_h_matches_eager() -> None:
    # actor_critic.inputs=zh: imagination carries the transformer's state into the policy's inputs.
    zh = ("actor_critic.inputs=zh", *(o for o in PLUS_SWITCHES if "replay_value" not in o))
    cfg = load_config("smoke", [*CAPTURED, *zh])
    assert cfg.policy_input_dim > cfg.latent_dim
    assert_same_updates(cfg, rtol=1e-5, weight_atol=1e-6, extra=zh)


def test_captured_update_of_grid_observations_matches_eager() -> None:
    grid = ("env.game=minatar/breakout", "env.observation=grid", *PLUS_SWITCHES)
    cfg = load_config("smoke", [*CAPTURED, *grid])
    assert cfg.frame_size == 10
    assert_same_updates(cfg, rtol=1e-5, weight_atol=1e-6, extra=grid)


def test_captured_update_of_vector_observations_matches_eager() -> None:
    # Every switch but the moved-pixel weight: vectors have no pixels (a config error).
    switches = (o for o in PLUS_SWITCHES if not o.startswith("obs_model.moved_weight"))
    vector = ("env.game=gym:CartPole-v1", "env.observation=vector", "env.vector_size=4", *switches)
    cfg = load_config("smoke", [*CAPTURED, *vector])
    assert cfg.frame_size == 1 and cfg.image_channels == 4 * cfg.env.frame_stack
    assert_same_updates(cfg, rtol=1e-5, weight_atol=1e-6, extra=vector)


# Regions of one captured policy-only update (actor_critic.reset_every): imagination, the
# actor-critic losses, their backward and their clip-and-Adam step; the world model runs eagerly.
REGIONS_PER_POLICY_UPDATE = 4


def test_captured_policy_updates_after_a_reset_match_eager_and_replay_the_update_regions() -> None:
    def reset_and_policy_updates(cfg: Config) -> tuple[list[dict[str, float]], Learner]:
        _, learner = updates(cfg)
        learner.reset_policy(seed=5)
        sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
        out = []
        for i in range(3):
            metrics = learner.policy_update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 10 + i), sampler, None)
            out.append({k: float(v) for k, v in metrics.items()})
        return out, learner

    eager, eager_learner = reset_and_policy_updates(
        load_config("smoke", [*CAPTURED, *PLUS_SWITCHES, "train.capture=false"])
    )
    cfg = load_config("smoke", [*CAPTURED, *PLUS_SWITCHES])
    with counting_compiled_graphs() as compiled:
        captured, learner = reset_and_policy_updates(cfg)
    regions = learner.captured
    assert regions is not None and regions.updates == 3  # policy-only updates are not counted as updates
    assert regions.region_calls == 3 * REGIONS_PER_UPDATE + 3 * REGIONS_PER_POLICY_UPDATE
    assert compiled["runs"] == 3 * FORWARD_REGIONS_PER_UPDATE + 3 * (REGIONS_PER_POLICY_UPDATE - 1)
    for got, expected in zip(captured, eager, strict=True):
        assert got.keys() == expected.keys() and "ac/slow_critic_reg" in got
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    pairs = zip(eager_learner.agent.state_dict().items(), learner.agent.state_dict().values(), strict=True)
    for (name, p), q in pairs:
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)


@pytest.mark.skipif(
    os.environ.get("TWM_TEST_INDUCTOR") != "1",
    reason="inductor compiles for minutes on a CPU; TWM_TEST_INDUCTOR=1",
)
def test_captured_update_with_inductor_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.config

    # Inductor's own random numbers would differ from eager's; torch's operators draw the same.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    cfg = load_config("smoke", [*CAPTURED, "train.compile_backend=inductor"])
    assert_same_updates(cfg, rtol=1e-4, weight_atol=1e-5)


def test_a_captured_update_takes_no_generator() -> None:
    cfg = load_config("smoke", CAPTURED)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    with pytest.raises(ValueError, match="global generator"):
        learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 0), sampler, torch.Generator())


@pytest.mark.parametrize("capture", [True, False])
def test_the_compiling_updates_are_timed_as_compile(capture: bool) -> None:
    """A run's profile counts what capture cost: the first two captured updates of a learner (they
    compile its regions) report all their parts as "compile"; eager updates never do."""
    cfg = load_config("smoke", [*CAPTURED, f"train.capture={str(capture).lower()}"])
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    parts: list[list[str]] = []
    for i in range(3):
        parts.append([])
        learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", i), sampler, None, lambda name, _: parts[-1].append(name))
    timed = ["world_model", "imagination", "actor_critic"]
    assert parts == ([["compile"] * 3] * 2 + [timed] if capture else [timed] * 3)


def test_bench_times_the_captured_update_by_parts() -> None:
    from twm.perf.bench import format_report, run_bench

    cfg = load_config("smoke", CAPTURED)
    r = run_bench(cfg, torch.device("cpu"), updates=1, warmup=0, env_steps=0, peak_seconds=0, num_actions=3)
    assert r["switches"]["train.capture"] is True
    assert r["warmup"] == 2  # the compiling updates are never timed
    assert all(r["seconds"][part] > 0 for part in ("world_model", "imagination", "actor_critic"))
    assert r["fresh_starts"] > 0
    assert r["dispatch"] is None and r["captured_regions_per_update"] == 7
    text = format_report(r)
    assert "7 compiled regions per update" in text


@pytest.mark.parametrize(
    ("override", "needs"),
    [
        ("actor_critic.fresh_pool=0", "actor_critic.fresh_pool > 0"),
        ("train.optimizer_impl=fused", "train.optimizer_impl=foreach"),
        ("train.compile=true", "train.compile=false"),
    ],
)
def test_capture_names_what_it_needs(override: str, needs: str) -> None:
    with pytest.raises(ConfigError, match="train.capture needs") as err:
        load_config("smoke", [*CAPTURED, override])
    assert needs in str(err.value)


def test_capture_without_a_compiler_is_one_line_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inductor on a CPU needs a C++ compiler: without one, `twm train` says so in one line with
    exit 2 and leaves no run folder, instead of failing at the first update after the prefill."""
    from torch._inductor import cpp_builder, exc

    from twm import cli

    def no_compiler() -> str:
        raise exc.InvalidCxxCompiler

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    run_dir = tmp_path / "run"
    args = ["train", "--game", "catch", "--preset", "smoke", "--no-progress", "--run-dir", str(run_dir)]
    overrides = ["train.capture=true", "actor_critic.fresh_pool=4", "train.optimizer_impl=foreach"]
    assert cli.main([*args, *(a for o in overrides for a in ("--set", o))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("twm: error: ") and "needs a C++ compiler" in err
    assert not run_dir.exists()
    # The aot_eager backend generates no code: no compiler needed.
    Learner(Agent(load_config("smoke", CAPTURED), NUM_ACTIONS))


# --------------------------------------------------------------------------------------- resume

# With policy resets (at 120 and 140 interactions) before and after the stop at 125.
SETTINGS = [
    "train.total_steps=160",
    "train.budget=4000",
    "train.checkpoint_interval=30",
    "actor_critic.reset_every=20",
    "actor_critic.reset_updates=2",
]


INDUCTOR = pytest.param(
    "inductor",
    marks=pytest.mark.skipif(
        os.environ.get("TWM_TEST_INDUCTOR") != "1", reason="inductor compiles for minutes on a CPU; TWM_TEST_INDUCTOR=1"
    ),
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
def test_captured_run_resumed_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """A captured run stopped by SIGINT mid-training and resumed ends bit for bit as the run
    that was never stopped: the global generator's state travels in the checkpoint. With inductor
    (what the CPU presets run) too, whose own random operators take their seeds from that generator."""
    cfg = load_config("smoke", [*CAPTURED, *SETTINGS, f"train.compile_backend={backend}"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg, tmp_path / "whole", device="cpu", progress=False, preset="smoke").run()
        monkeypatch.setenv("TWM_TEST_SIGNAL_AT", "train:125")
        handler = signal.getsignal(signal.SIGINT)
        with pytest.raises(TrainingStopped) as stop:
            Trainer(cfg, tmp_path / "cut", device="cpu", progress=False, preset="smoke").run()
        assert signal.getsignal(signal.SIGINT) is handler
        assert stop.value.checkpoint is not None
        assert load_checkpoint(stop.value.checkpoint)["updates"] > 0  # stopped after updates began
        monkeypatch.delenv("TWM_TEST_SIGNAL_AT")
        Trainer.resume(tmp_path / "cut", device="cpu", progress=False).run()
    finally:
        torch.set_num_threads(threads)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "final.pt")["model"]
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "final.pt")["model"]
    assert whole.keys() == cut.keys()
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    lines = [(tmp_path / run / "metrics.jsonl").read_text().count("\n") for run in ("whole", "cut")]
    assert lines[0] == lines[1]


def test_a_captured_run_of_a_policy_reading_h_acts_between_updates_without_recompiling() -> None:
    """With actor_critic.inputs=zh acting runs the transformer, whose positions cache gains a key at
    every real step; the compiled world-model region must not guard on that cache (it did: a
    recompile per update, then dynamo's recompile limit stopped the run with a traceback)."""
    cfg = load_config("smoke", [*CAPTURED, "actor_critic.inputs=zh"])
    torch.manual_seed(0)
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    dynamics = learner.agent.world_model.dynamics
    with counting_compiled_graphs() as compiled:
        for i in range(12):  # more than dynamo's recompile limit (8)
            learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", i), sampler, None)
            if i == 1:
                graphs = compiled["graphs"]  # the compiling updates are over
            # Each real step of acting asks for the positions of its tokens after a memory that
            # grows along the episode: a new key each step, until the cache is full and starts over.
            for step in range(MAX_KEPT_POSITIONS // 4):
                dynamics.stream_positions(0, 3 * (200 * i + step) + 2, 2, torch.device("cpu"))
        assert compiled["graphs"] == graphs


def test_optimiser_state_of_a_captured_cuda_run_steps_on_a_cpu() -> None:
    """Checkpoints of a captured CUDA run hold capturable=True, with which Adam refuses to step on a
    CPU (an AssertionError in torch); an agent loading one clears it and steps anywhere."""
    cfg = load_config("smoke", [*CAPTURED, "train.capture=false"])
    _, learner = updates(cfg, n=1)
    state = learner.optimizers.state_dict()
    for opt_state in state.values():
        for group in opt_state["param_groups"]:
            group["capturable"] = True
    learner.optimizers.load_state_dict(state)
    assert all(not g["capturable"] for opt in learner.optimizers for g in opt.param_groups)
    sampler = synthetic_obs_sampler(cfg, torch.device("cpu"))
    metrics = learner.update(synthetic_batch(cfg, NUM_ACTIONS, "cpu", 1), sampler, None)
    assert torch.isfinite(metrics["dyn/loss"])
