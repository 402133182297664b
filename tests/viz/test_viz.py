"""Visualisation: the read-only attention hook, dreams (== imagination), GIF/MP4/PNG files, play.

Everything runs on an untrained agent of the smoke preset (catch) saved as a run folder, so no
training is needed: these tests check shapes, frame counts, captions against the actions taken,
and that the hooks change nothing; what a trained model dreams is not tested here.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from builders import catch_replay, read_tensorboard
from twm import cli
from twm.agent import Agent
from twm.config import DynamicsConfig
from twm.config_files import load_config
from twm.envs.minatar import render_state
from twm.imagination import ImaginationStart, imagine
from twm.models.dynamics import DynamicsModel
from twm.models.transformer_xl import build_attention_mask
from twm.training.checkpoint import save_checkpoint
from twm.training.logger import MetricsLogger
from twm.viz import (
    DreamSession,
    action_from_keys,
    attention_heatmap,
    attention_view,
    context_from_env,
    context_from_replay,
    dream,
    parse_actions,
    run_dream,
    run_play,
    write_eval_images,
)
from twm.viz.dream import CAPTION_LINES, step_caption
from twm.viz.play import (
    PLAY_CAPTION_LINES,
    POLICY,
    QUIT,
    RESTART,
    TOGGLE,
    Controls,
    run_play_policy,
    window_title,
)
from twm.viz.render import VizError, caption_height, newest_image, to_uint8, vector_picture, write_animation

CATCH = ["NOOP", "LEFT", "RIGHT"]
ATARI_FULL = [
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
]  # fmt: skip


def smoke_cfg(*overrides: str):
    # Two layers so that the heat map has more than one row.
    return load_config("smoke", ["env.game=catch", "dynamics.layers=2", *overrides])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with an untrained agent: config.yaml + checkpoints/final.pt, as 'twm train' writes."""
    torch.manual_seed(0)
    cfg = smoke_cfg()
    run = tmp_path_factory.mktemp("run")
    cfg.to_yaml(run / "config.yaml")
    save_checkpoint(run / "checkpoints" / "final.pt", Agent(cfg, 3))
    return run


@pytest.fixture(scope="module")
def agent() -> Agent:
    torch.manual_seed(1)
    return Agent(smoke_cfg(), 3).eval()


def gif_frames(path: Path) -> np.ndarray:
    return np.stack([np.asarray(f.convert("RGB")) for f in _frames_of(Image.open(path))])


def _frames_of(image: Image.Image) -> list[Image.Image]:
    out = []
    for i in range(image.n_frames):
        image.seek(i)
        out.append(image.copy())
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------- attention hook


def tiny_dynamics(attention: str, input_rewards: bool) -> DynamicsModel:
    torch.manual_seed(0)
    cfg = DynamicsConfig(
        d_model=16, layers=2, heads=2, head_dim=8, ff_dim=24, memory_steps=2, z_head_hidden=16,
        z_head_layers=1, reward_head_hidden=8, reward_head_layers=1, discount_head_hidden=8,
        discount_head_layers=1, attention=attention, input_rewards=input_rewards,
    )  # fmt: skip
    return DynamicsModel(cfg, 12, 3, 4, 5)


def tiny_inputs(B: int, T: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    z = F.one_hot(torch.randint(0, 4, (B, T, 3), generator=g), 4).reshape(B, T, 12).float()
    a = torch.randint(0, 5, (B, T), generator=g)
    r = torch.randn(B, T, generator=g)
    d = torch.rand(B, T, generator=g) < 0.25
    d[0, 1] = True  # at least one episode cut
    return z, a, r, d


def outputs_equal(x: Any, y: Any) -> None:
    for name in ("z_logits", "reward_mean", "discount_logit", "h"):
        assert torch.equal(getattr(x, name), getattr(y, name)), name
    assert torch.equal(x.memory.episode, y.memory.episode) and x.memory.num_tokens == y.memory.num_tokens
    for a, b in zip(x.memory.hiddens, y.memory.hiddens, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("attention", ["plain", "fused"])
@pytest.mark.parametrize("input_rewards", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_attention_hook_changes_nothing_and_gives_distributions(
    attention: str, input_rewards: bool, training: bool
) -> None:
    model = tiny_dynamics(attention, input_rewards).train(training)
    z, a, r, d = tiny_inputs(3, 7, seed=0)
    # A first call without memory (5 steps), then one step with memory, the imagination way.
    calls = [(z[:, :5], a[:, :5], r[:, :4], d[:, :4]), (z[:, 5:6], a[:, 5:6], r[:, 4:5], d[:, 4:5])]
    memory = None
    for args in calls:
        torch.manual_seed(7)  # dropout masks, in training mode
        plain = model(*args, memory)
        torch.manual_seed(7)
        seen = model(*args, memory, return_attention=True)
        outputs_equal(plain, seen)
        assert plain.attention is None and seen.attention is not None

        maps = seen.attention
        N, K = len(maps.query_positions), len(maps.key_positions)
        assert torch.equal(maps.query_positions, maps.key_positions[-N:])
        assert maps.allowed.shape == (3, N, K)
        assert len(maps.probs) == 2
        for probs in maps.probs:
            assert probs.shape == (3, 2, N, K)
            allowed = maps.allowed[:, None].expand_as(probs)
            torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, N), atol=1e-6, rtol=0)
            assert torch.all(probs[~allowed] == 0)  # exactly 0 on masked keys
            assert torch.all(probs[allowed] > 0)
        assert (~maps.allowed).any()  # the window and the episode cut mask something
        memory = plain.memory


def test_attention_mask_is_the_models_mask() -> None:
    model = tiny_dynamics("plain", True).eval()
    z, a, r, d = tiny_inputs(2, 4, seed=1)
    out = model(z, a, r[:, :3], d[:, :3], return_attention=True)
    from twm.models.dynamics import chunk_tokens

    positions, episode = chunk_tokens(d[:, :3], None, 3)
    expected = build_attention_mask(positions, positions, episode, episode, 3, 2)
    assert torch.equal(out.attention.allowed, expected)


# --------------------------------------------------------------------------------------- dreams


def test_dream_equals_imagination(agent: Agent) -> None:
    """Same start, same generator seed, no imagined ends: the dream is twm.imagination.imagine."""
    B, H, Z = 5, 6, agent.cfg.latent_dim
    g = torch.Generator().manual_seed(3)
    cats, classes = agent.cfg.obs_model.categoricals, agent.cfg.obs_model.classes

    def latents(n: int) -> torch.Tensor:
        return F.one_hot(torch.randint(0, classes, (n, cats), generator=g), classes).reshape(n, Z).float()

    start = ImaginationStart(
        context_z=latents(B),
        context_action=torch.randint(0, 3, (B,), generator=g),
        context_reward=torch.randn(B, generator=g),
        context_done=torch.tensor([False, True, False, False, True]),
        start_z=latents(B),
    )

    def no_fresh(n: int) -> torch.Tensor:
        raise AssertionError("a discount threshold of 0 never ends an imagined episode")

    wm = agent.world_model
    # Dreams continue the plain Transformer-XL memory; the key/value cache that imagination uses by
    # default gives the same rollouts up to rounding (tests/models/test_kv_cache.py), so compare bitwise
    # against the plain path.
    rollout = imagine(
        wm.dynamics,
        wm.obs_model,
        agent.actor,
        start,
        H,
        0.0,
        no_fresh,
        torch.Generator().manual_seed(9),
        kv_cache=False,
    )
    session = DreamSession(agent, torch.Generator().manual_seed(9))
    session.start_latents(
        start.context_z[:, None],
        start.context_action[:, None],
        start.context_reward[:, None],
        start.context_done[:, None],
        start.start_z,
    )
    for t in range(H):
        step = session.step(session.policy_actions())
        assert torch.equal(step.actions, rollout.actions[:, t])
        assert torch.equal(step.rewards, rollout.rewards[:, t])
        assert torch.equal(step.discounts, rollout.discounts[:, t])
        assert torch.equal(session.z, rollout.z[:, t + 1])


def test_dream_captions_follow_the_actions_and_modes_are_restored(agent: Agent) -> None:
    agent.train()
    context = context_from_env(agent, agent.cfg.env, starts=2, warmup=3, seed=4)
    assert context.obs.shape == (2, 3, 4, 64, 64) and context.start_obs.shape == (2, 4, 64, 64)
    scripted = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])
    result = dream(agent, context, 4, torch.Generator().manual_seed(0), CATCH, actions=scripted)
    assert agent.training and all(m.training for m in agent.modules())
    agent.eval()
    assert result.frames.shape == (2, 5, 64, 64) and result.frames.dtype == np.uint8
    np.testing.assert_array_equal(result.actions, scripted.numpy())
    captions = result.captions()
    for b in range(2):
        assert captions[b][0] == step_caption(0, None, None, None, 3)
        for t in range(1, 5):
            action = CATCH[int(scripted[b, t - 1])]
            reward, discount = result.rewards[b, t - 1], result.discounts[b, t - 1]
            assert captions[b][t][0] == f"t={t} {action}"
            assert captions[b][t][1].startswith(f"r={reward:+.2f} disc={discount:.2f}")


def test_replay_starts_leave_the_buffer_alone() -> None:
    replay = catch_replay(40)
    rng_state = dict(replay.rng.bit_generator.state)
    visits = replay.visits.copy()
    ctx = context_from_replay(replay, 4, 5, torch.Generator().manual_seed(0))
    assert ctx.obs.shape == (4, 5, 4, 64, 64) and ctx.actions.shape == (4, 5)
    assert replay.rng.bit_generator.state == rng_state
    np.testing.assert_array_equal(replay.visits, visits)
    # Each start is a buffer step i whose 5 previous steps are the context (stacks, actions, rewards).
    everything = replay.stacked_obs(np.arange(40))
    for b in range(4):
        candidates = np.flatnonzero((everything == ctx.start_obs[b].numpy()).all(axis=(1, 2, 3)))
        assert any(
            i >= 5
            and np.array_equal(ctx.actions[b].numpy(), replay.actions[i - 5 : i])
            and np.array_equal(ctx.rewards[b].numpy(), replay.rewards[i - 5 : i])
            and np.array_equal(ctx.obs[b].numpy(), everything[i - 5 : i])
            for i in candidates
        )


# --------------------------------------------------------------------------------------- twm dream


def test_dream_cli_writes_gif_with_frames_size_and_attention(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gif, png = tmp_path / "dream.gif", tmp_path / "attention.png"
    code, out, err = run_cli(
        capsys, "dream", str(run_dir), "--out", str(gif), "--horizon", "5", "--starts", "3",
        "--scale", "2", "--warmup", "4", "--seed", "1", "--attention", str(png), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert "wrote" in out and str(gif) in out
    frames = gif_frames(gif)
    height = caption_height(CAPTION_LINES, 2) + 64 * 2
    assert frames.shape == (6, height, 3 * 64 * 2, 3)  # horizon + 1 frames, 3 starts side by side
    assert Image.open(png).format == "PNG"

    # The Python API with the same arguments makes the same animation: the GIF holds those frames
    # (up to GIF palette rounding), in order.
    done = run_dream(run_dir, tmp_path / "again.gif", horizon=5, starts=3, scale=2, warmup=4, seed=1)
    expected = np.stack(done["dream"].animation_frames(2)).astype(np.int16)
    assert np.abs(frames.astype(np.int16) - expected).mean() < 2.0
    assert done["frames"] == 6 and done["size"] == (3 * 128, height)


def test_dream_is_reproducible_and_seed_dependent(run_dir: Path, tmp_path: Path) -> None:
    a = run_dream(run_dir, tmp_path / "a.gif", horizon=4, starts=2, seed=5, warmup=2)["dream"]
    b = run_dream(run_dir, tmp_path / "b.gif", horizon=4, starts=2, seed=5, warmup=2)["dream"]
    c = run_dream(run_dir, tmp_path / "c.gif", horizon=4, starts=2, seed=6, warmup=2)["dream"]
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.real_start, c.real_start) or not np.array_equal(a.frames, c.frames)


def test_dream_mp4(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    done = run_dream(run_dir, tmp_path / "d.mp4", horizon=3, starts=1, warmup=2)
    reader = imageio.get_reader(tmp_path / "d.mp4")
    try:
        assert reader.count_frames() == 4
        width, height = reader.get_meta_data()["size"]
    finally:
        reader.close()
    # Odd sizes are padded by one pixel for H.264.
    assert (width - done["size"][0], height - done["size"][1]) in {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_mp4_without_ffmpeg_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes `import imageio_ffmpeg` fail
    code, _, err = run_cli(capsys, "dream", str(run_dir), "--out", str(tmp_path / "d.mp4"))
    assert code == 2
    assert err.count("\n") == 1 and "pip install imageio-ffmpeg" in err
    # GIF still works.
    assert run_cli(capsys, "dream", str(run_dir), "--out", str(tmp_path / "d.gif"), "--horizon", "2")[0] == 0


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("no_config", "not a twm run folder"),
        ("no_final", "has not finished"),
        ("bad_checkpoint_arg", "does not exist"),
        ("torn", "cannot read checkpoint"),
        ("bad_suffix", "must end in .gif or .mp4"),
        ("bad_horizon", "--horizon: must be in [1, 10000]; got 0"),
        ("bad_attention", "must end in .png"),
    ],
)
def test_dream_errors_are_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    out = str(tmp_path / "d.gif")
    args = {
        "missing": [str(tmp_path / "nope"), "--out", out],
        "no_config": [str(tmp_path), "--out", out],
        "no_final": [str(tmp_path / "unfinished"), "--out", out],
        "bad_checkpoint_arg": [str(run_dir), "--out", out, "--checkpoint", str(tmp_path / "x.pt")],
        "torn": [str(run_dir), "--out", out, "--checkpoint", str(tmp_path / "torn.pt")],
        "bad_suffix": [str(run_dir), "--out", str(tmp_path / "d.avi")],
        "bad_horizon": [str(run_dir), "--out", out, "--horizon", "0"],
        "bad_attention": [str(run_dir), "--out", out, "--attention", str(tmp_path / "a.jpg")],
    }[case]
    (tmp_path / "unfinished").mkdir()
    smoke_cfg().to_yaml(tmp_path / "unfinished" / "config.yaml")
    (tmp_path / "torn.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, "dream", *args)
    assert code == 2
    assert err.startswith("twm: error: ") and err.count("\n") == 1 and message in err, err


def test_a_checkpoint_file_can_stand_for_the_run(run_dir: Path, tmp_path: Path) -> None:
    done = run_dream(run_dir / "checkpoints" / "final.pt", tmp_path / "d.gif", horizon=2, starts=1, warmup=1)
    assert done["frames"] == 3


# --------------------------------------------------------------------------------------- attention view


def test_attention_view_rows_and_labels(agent: Agent, tmp_path: Path) -> None:
    context = context_from_env(agent, agent.cfg.env, starts=2, warmup=3, seed=0)
    result = dream(agent, context, 6, torch.Generator().manual_seed(0), CATCH, record_attention=True)
    n, M = 3, agent.cfg.dynamics.memory_steps
    for step in (0, 5):
        view = attention_view(result, start=1, step=step)
        layers = agent.cfg.dynamics.layers
        K = (
            min(n * M + 2, n * (3 + step) - 1) + 3
        )  # the memory (3 context steps + earlier dream steps) + r, z, a
        assert view.matrix.shape == (layers, K) and view.row_labels == ["layer 1", "layer 2"]
        np.testing.assert_allclose(view.matrix.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(view.matrix[:, ~view.allowed] == 0)
        # The query is a_t; its own step's tokens are the last three keys.
        assert view.column_labels[-3:] == [f"r{step - 1}", f"z{step}", f"a{step}"]
        assert view.column_labels[0] == ("z-3" if step == 0 else f"z{step - M - 1}")
    heads = attention_view(result, start=0, step=-1, heads=True)
    assert heads.matrix.shape[0] == agent.cfg.dynamics.layers * agent.cfg.dynamics.heads
    np.testing.assert_allclose(heads.matrix.sum(axis=1), 1.0, atol=1e-6)
    image = attention_heatmap(result, start=0, step=-1)
    assert image.width >= 16 * heads.matrix.shape[1] and image.height > 16 * agent.cfg.dynamics.layers
    with pytest.raises(ValueError, match="record_attention"):
        attention_view(dream(agent, context, 2, torch.Generator().manual_seed(0), CATCH))


# --------------------------------------------------------------------------------------- play


def test_action_from_keys_maps_buttons_to_the_games_actions() -> None:
    assert action_from_keys(set(), ATARI_FULL) == 0
    assert ATARI_FULL[action_from_keys({"LEFT"}, ATARI_FULL)] == "LEFT"
    assert ATARI_FULL[action_from_keys({"UP", "RIGHT", "FIRE"}, ATARI_FULL)] == "UPRIGHTFIRE"
    assert ATARI_FULL[action_from_keys({"DOWN", "FIRE"}, ATARI_FULL)] == "DOWNFIRE"
    pong = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]
    assert pong[action_from_keys({"UP"}, pong)] == "NOOP"  # a button the game lacks is ignored
    assert pong[action_from_keys({"LEFT", "UP"}, pong)] == "LEFT"
    assert CATCH[action_from_keys({"RIGHT", "FIRE"}, CATCH)] == "RIGHT"


def test_parse_actions() -> None:
    assert parse_actions("left, RIGHT,0,2", CATCH) == [1, 2, 0, 2]
    assert parse_actions("random:6", CATCH, seed=1) == parse_actions("random:6", CATCH, seed=1)
    assert len(parse_actions("random:6", CATCH)) == 6
    for bad in ("JUMP", "3", "random:x", "random:0"):
        with pytest.raises(VizError):
            parse_actions(bad, CATCH)


def test_play_record_headless_without_pygame(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setitem(sys.modules, "pygame", None)  # as if pygame were not installed
    gif = tmp_path / "play.gif"
    code, out, err = run_cli(
        capsys,
        "play",
        str(run_dir),
        "--record",
        str(gif),
        "--actions",
        "random:7",
        "--seed",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "8 frames" in out
    frames = gif_frames(gif)
    assert frames.shape == (8, caption_height(PLAY_CAPTION_LINES, 4) + 256, 256, 3)

    # The captions name the actions played and add up the predicted rewards.
    done = run_play(run_dir, record=tmp_path / "again.gif", actions="LEFT,right,0", seed=3)
    captions = done["record"].captions
    assert [c[0] for c in captions] == ["t=0 start", "t=1 LEFT", "t=2 RIGHT", "t=3 NOOP"]
    rewards = [float(c[1].split()[0][2:]) for c in captions[1:]]  # "r=+0.05" -> 0.05
    assert abs(done["score"] - sum(rewards)) <= 0.005 * len(rewards) + 1e-9
    assert captions[-1][1].endswith(f"score={done['score']:+.2f}")

    # Without --record, the missing pygame is one line with the install hint.
    code, _, err = run_cli(capsys, "play", str(run_dir))
    assert code == 2 and err.count("\n") == 1 and "pip install 'twm[viz]'" in err
    code, _, err = run_cli(capsys, "play", str(run_dir), "--actions", "LEFT")
    assert code == 2 and err.count("\n") == 1 and "--record" in err


def test_play_window_headless(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    done = run_play(run_dir, fps=1000, max_steps=4, seed=0, warmup=2)
    assert done["steps"] == 4
    assert done["record"].actions == [0, 0, 0, 0]  # nothing pressed: NOOP


@pytest.fixture(scope="module")
def right_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose actor always chooses RIGHT (action 2): logits forced by the last layer."""
    torch.manual_seed(0)
    cfg = smoke_cfg()
    agent = Agent(cfg, 3)
    last = [m for m in agent.actor.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-1e4, -1e4, 1e4]))
    run = tmp_path_factory.mktemp("right_run")
    cfg.to_yaml(run / "config.yaml")
    save_checkpoint(run / "checkpoints" / "final.pt", agent)
    return run


def test_play_record_by_the_policy_without_actions(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pygame", None)  # headless: no pygame needed
    gif = tmp_path / "policy.gif"
    code, out, err = run_cli(
        capsys, "play", str(run_dir), "--record", str(gif), "--steps", "5", "--seed", "3", "--device", "cpu"
    )
    assert code == 0, err
    assert "6 frames" in out and "policy" in out
    frames = gif_frames(gif)
    assert frames.shape == (6, caption_height(PLAY_CAPTION_LINES, 4) + 256, 256, 3)

    # The same seed writes the same recording (file and frames); another seed another one.
    again = run_play_policy(run_dir, tmp_path / "again.gif", steps=5, seed=3)
    assert (tmp_path / "again.gif").read_bytes() == gif.read_bytes()
    same = run_play_policy(run_dir, tmp_path / "same.gif", steps=5, seed=3)
    np.testing.assert_array_equal(np.stack(same["record"].frames), np.stack(again["record"].frames))
    assert same["record"].actions == again["record"].actions
    other = run_play_policy(run_dir, tmp_path / "other.gif", steps=5, seed=4)
    assert not np.array_equal(np.stack(other["record"].frames), np.stack(again["record"].frames))
    assert [c[0].endswith(f"({POLICY})") for c in again["record"].captions] == [True] * 6

    # Without --steps the policy plays 50 steps.
    done = run_play_policy(run_dir, tmp_path / "default.gif", seed=0, warmup=1)
    assert done["frames"] == 51 and len(done["record"].actions) == 50


def test_play_record_actions_come_from_the_actor(right_run_dir: Path, tmp_path: Path) -> None:
    done = run_play_policy(right_run_dir, tmp_path / "right.gif", steps=6, seed=1)
    assert done["record"].actions == [2] * 6
    assert [c[0] for c in done["record"].captions[1:]] == [f"t={t} RIGHT (policy)" for t in range(1, 7)]
    assert done["frames"] == 7 and len(gif_frames(tmp_path / "right.gif")) == 7
    # Scripted actions still win over the actor, and their captions name no controller.
    scripted = run_play(right_run_dir, record=tmp_path / "left.gif", actions="LEFT,NOOP", seed=1)
    assert scripted["record"].actions == [1, 0]
    assert [c[0] for c in scripted["record"].captions] == ["t=0 start", "t=1 LEFT", "t=2 NOOP"]


def test_play_record_by_the_policy_errors_are_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gif = str(tmp_path / "x.gif")
    for args, needle in (
        (["--record", gif, "--steps", "0"], "--steps"),
        (["--record", gif, "--actions", "LEFT", "--steps", "3"], "--steps"),
        (["--steps", "3"], "--steps"),
        (["--record", str(tmp_path / "x.png")], ".gif"),
    ):
        code, _, err = run_cli(capsys, "play", str(run_dir), *args, "--device", "cpu")
        assert code == 2 and err.count("\n") == 1 and needle in err, (args, err)
    code, _, err = run_cli(capsys, "play", str(tmp_path / "missing"), "--record", gif)
    assert code == 2 and err.count("\n") == 1
    assert not (tmp_path / "x.gif").exists()


def test_controls_toggle_between_player_and_policy() -> None:
    controls = Controls()
    assert controls.controller == "you" and not controls.policy
    assert controls.action({"RIGHT"}, CATCH) == 2 and controls.action(set(), CATCH) == 0
    title = window_title("catch", controls)
    assert "[you in control]" in title and "P policy" in title
    assert controls.key_down("p") == TOGGLE
    assert controls.controller == "policy" and controls.policy
    assert controls.action({"RIGHT"}, CATCH) is None  # the policy chooses; movement keys are ignored
    assert "[policy in control]" in window_title("catch", controls)
    # Restarting or pressing other keys leaves control where it is.
    assert controls.key_down("r") == RESTART and controls.policy
    assert controls.key_down("left") is None and controls.key_down("space") is None and controls.policy
    assert controls.key_down("P") == TOGGLE and controls.controller == "you"
    assert controls.key_down("escape") == QUIT and not controls.policy


def test_play_window_hands_control_to_the_policy(
    right_run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pygame = pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    press_p = [pygame.event.Event(pygame.KEYDOWN, key=pygame.K_p)]
    ticks = iter([press_p, [], press_p, []])  # P before step 1 (policy), P again before step 3 (you)
    titles: list[str] = []
    monkeypatch.setattr(pygame.event, "get", lambda *a, **k: next(ticks, []))
    set_caption = pygame.display.set_caption
    monkeypatch.setattr(pygame.display, "set_caption", lambda t, *a: (titles.append(t), set_caption(t, *a)))
    done = run_play(right_run_dir, fps=1000, max_steps=4, seed=0, warmup=2)
    # The actor always picks RIGHT; nothing is pressed, so the player's steps are NOOP.
    assert done["record"].actions == [2, 2, 0, 0]
    assert [c[0].split()[-1] for c in done["record"].captions] == ["(you)"] + ["(policy)"] * 2 + ["(you)"] * 2
    assert ["[you in control]" in t for t in titles] == [True, False, True]


# --------------------------------------------------------------------------------------- eval images


class RecordingLogger:
    def __init__(self) -> None:
        self.images: list[tuple[str, tuple[int, ...], int]] = []

    def add_image(self, tag: str, image_hwc: np.ndarray, step: int) -> None:
        self.images.append((tag, image_hwc.shape, step))


def test_write_eval_images(agent: Agent, tmp_path: Path) -> None:
    replay = catch_replay(60)
    rng_state = dict(replay.rng.bit_generator.state)
    torch_state = torch.get_rng_state()
    agent.train()
    logger = RecordingLogger()
    out = write_eval_images(agent, replay, tmp_path, 1200, logger, torch.Generator().manual_seed(0))
    assert agent.training and all(m.training for m in agent.modules())
    agent.eval()
    # Nothing of the training's randomness was used.
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert replay.rng.bit_generator.state == rng_state and not replay.visits.any()

    assert out["recon"] == tmp_path / "images" / "recon_001200.png"
    assert out["dream"] == tmp_path / "images" / "dream_001200.png"
    recon, strip = Image.open(out["recon"]), Image.open(out["dream"])
    assert recon.size == (8 * 128, 2 * (caption_height(1, 2) + 128))
    H = agent.cfg.actor_critic.horizon
    assert strip.size == ((H + 1) * 128, 4 * (caption_height(CAPTION_LINES, 2) + 128))
    assert [(tag, shape[:2], step) for tag, shape, step in logger.images] == [
        ("images/reconstruction", (recon.height, recon.width), 1200),
        ("images/dream", (strip.height, strip.width), 1200),
    ]
    for b, row in enumerate(out["dream_captions"]):
        assert [c[0] for c in row[1:]] == [
            f"t={t + 1} {CATCH[a]}" for t, a in enumerate(out["dream_actions"][b])
        ]

    # The same generator seed gives the same pictures.
    again = write_eval_images(agent, replay, tmp_path / "b", 1200, None, torch.Generator().manual_seed(0))
    assert np.array_equal(np.asarray(Image.open(again["dream"])), np.asarray(strip))


def test_eval_images_reach_tensorboard(agent: Agent, tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as logger:
        write_eval_images(
            agent, catch_replay(20), tmp_path, 5, logger, torch.Generator().manual_seed(0), horizon=2
        )
    events = read_tensorboard(tmp_path / "tensorboard")
    assert set(events.Tags()["images"]) == {"images/reconstruction", "images/dream"}
    for tag, name in (("images/reconstruction", "recon_000005.png"), ("images/dream", "dream_000005.png")):
        [image] = events.Images(tag)
        png = np.asarray(Image.open(tmp_path / "images" / name).convert("RGB"))
        assert image.step == 5 and (image.height, image.width) == png.shape[:2]
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        assert np.array_equal(shown, png)  # TensorBoard shows the picture written to images/


def test_write_animation_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(VizError, match=".gif or .mp4"):
        write_animation(tmp_path / "x.webm", [np.zeros((4, 4, 3), np.uint8)], 5)


def test_dream_starts_from_the_runs_replay_buffer(tmp_path: Path) -> None:
    from twm.training import checkpoint as ck

    torch.manual_seed(0)
    cfg = smoke_cfg()
    cfg.to_yaml(tmp_path / "config.yaml")
    agent = Agent(cfg, 3)
    save_checkpoint(tmp_path / "checkpoints" / "final.pt", agent)
    # Only the env is there yet: auto falls back to it, replay is refused in one line.
    assert run_dream(tmp_path, tmp_path / "a.gif", horizon=2, starts=2)["starts_from"] == "the real game"
    with pytest.raises(VizError, match="no usable replay buffer"):
        run_dream(tmp_path, tmp_path / "a.gif", horizon=2, starts=2, source="replay")

    replay = catch_replay(30)
    ck.CheckpointManager(tmp_path).save(agent, replay, 30, {"interactions": 30})
    done = run_dream(tmp_path, tmp_path / "b.gif", horizon=2, starts=2, warmup=3, seed=1)
    assert done["starts_from"].startswith("the replay buffer of step_")
    # Its starts are replay observations.
    everything = replay.stacked_obs(np.arange(len(replay)))[:, -1]
    for frame in done["dream"].real_start:
        assert (everything == frame).all(axis=(1, 2)).any()
    assert (
        run_dream(tmp_path, tmp_path / "c.gif", horizon=2, starts=2, source="env")["starts_from"]
        == "the real game"
    )


# --------------------------------------------------------------------------------------- grids


def test_grid_frames_are_drawn_as_the_games_picture() -> None:
    frames = np.zeros((1, 8, 10, 10), dtype=np.uint8)  # 2 stacked frames of 4 channels
    frames[0, 4 + 1, 2, 3] = 255  # newest frame: channel 1 at row 2, column 3
    frames[0, 0, 5, 5] = 255  # the older frame is not drawn
    image = newest_image(frames, 4, observation="grid")
    state = np.zeros((10, 10, 4), dtype=bool)
    state[2, 3, 1] = True
    np.testing.assert_array_equal(image[0], render_state(state, color=True))
    # Probabilities: a cell is drawn where it is at least half set.
    probs = frames.astype(np.float32) / 255 * 0.6
    probs[0, 4 + 2, 7, 7] = 0.4
    drawn = newest_image(torch.from_numpy(probs), 4, observation="grid")
    assert drawn.dtype == np.float32
    np.testing.assert_array_equal(np.rint(drawn[0] * 255).astype(np.uint8), render_state(state, color=True))


def test_vectors_are_drawn_as_bars_of_their_symlog() -> None:
    e = np.e
    values = np.array([0.0, e - 1, -(e - 1), 1e9], dtype=np.float32)  # symlog 0, 1, -1, ~20.7
    image = vector_picture(values)
    assert image.shape == (64, 64) and image.dtype == np.uint8
    bar = lambda i: image[:, 16 * i + 8]  # noqa: E731  (the middle column of bar i: 16 pixels wide)
    # Heights tanh(symlog(v)) * 31 rows from the middle row 32: 0, 24 up, 24 down, 31 up.
    assert np.flatnonzero(bar(0) == 255).tolist() == [32]
    assert np.flatnonzero(bar(1) == 255).tolist() == list(range(32 - 24, 33))
    assert np.flatnonzero(bar(2) == 255).tolist() == list(range(32, 32 + 25))
    assert np.flatnonzero(bar(3) == 255).tolist() == list(range(1, 33))
    assert (image[:, 15] != 255).all()  # a gap between bars
    # The newest of the stacked vectors is drawn, the same for a frame and its decoded numbers.
    stacked = np.concatenate([np.ones(4, np.float32) * 5, values]).reshape(1, 8, 1, 1)
    np.testing.assert_array_equal(newest_image(stacked, 4, observation="vector")[0], image)
    np.testing.assert_array_equal(newest_image(torch.from_numpy(stacked), 4, observation="vector")[0], image)
    assert to_uint8(image) is image  # pictures pass through to_uint8 unchanged


def test_dream_of_a_grid_run_writes_the_games_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("minatar")
    torch.manual_seed(0)
    cfg = load_config("smoke", ["env.game=minatar/breakout", "env.observation=grid"])
    run = tmp_path / "run"
    run.mkdir()
    cfg.to_yaml(run / "config.yaml")
    save_checkpoint(run / "checkpoints" / "final.pt", Agent(cfg, 3))
    out = tmp_path / "dream.gif"
    code, _, err = run_cli(capsys, "dream", str(run), "--out", str(out), "--horizon", "3", "--starts", "2", "--source", "env")
    assert code == 0, err
    frames = gif_frames(out)
    assert frames.shape[0] == 4  # the start and 3 dreamed steps
