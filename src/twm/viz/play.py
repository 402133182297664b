"""``twm play``: a person (or the agent's policy) plays the game inside the world model.

The dream starts from a real, seeded start (``context_from_env``); then every tick (1/fps s) the
keys held down are mapped to the game's action and the world model takes one step, whether a key is
pressed or not (NOOP), as the real game would. The window shows the decoded frame, the action (and
who chose it), the predicted reward, the running score (sum of predicted rewards; the learning
rewards are tanh-squashed on Atari) and the predicted discount. P hands control to the agent's
policy (the actor of the checkpoint, sampling with the seeded generator) and back, R restarts from
the next real start, Esc quits. ``Controls`` is that key handling, apart from pygame.

``record_play`` runs the same loop without any window (and without pygame), from a fixed list of
actions or with the policy choosing every action, writing the frames the window would show; the
policy's step is ``DreamSession.policy_actions`` + ``DreamSession.step``, as in ``twm dream``.
``run_play_policy`` is ``twm play RUN --record FILE`` without ``--actions``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twm.agent import Agent
from twm.config import Config
from twm.envs import action_meanings_of
from twm.viz.dream import END_DISCOUNT, DreamSession, RealContext, context_from_env
from twm.viz.loading import LoadedRun, load_run
from twm.viz.render import VizError, check_animation_path, panel, write_animation

PLAY_CAPTION_LINES = 3
# Components of the Atari action names, e.g. "UPRIGHTFIRE" = {UP, RIGHT, FIRE}.
ACTION_PARTS = ("UP", "DOWN", "LEFT", "RIGHT", "FIRE")
PYGAME_HINT = (
    "twm play needs pygame for its window: pip install 'twm[viz]' (or pip install pygame); "
    "--record FILE.gif (with or without --actions SPEC) works without it"
)
KEY_HELP = "arrows/WASD move, space FIRE, P policy on/off, R restart, Esc quit"
# Who chooses the actions, as the captions name it.
PLAYER, POLICY = "you", "policy"
# Keys of the window by their pygame names (pygame.key.name) and what they do.
QUIT_KEY, RESTART_KEY, POLICY_KEY = "escape", "r", "p"
QUIT, RESTART, TOGGLE = "quit", "restart", "toggle"
# Steps the policy plays in a recording without --actions, unless --steps says otherwise.
POLICY_STEPS = 50


# --------------------------------------------------------------------------------------- actions


def action_parts(meaning: str) -> frozenset[str]:
    """The buttons of an action name: 'NOOP' -> {}, 'UPLEFTFIRE' -> {UP, LEFT, FIRE}.

    A name that is not made of the Atari buttons (a custom game) is a button of its own.
    """
    name = meaning.upper()
    if name == "NOOP":
        return frozenset()
    parts, rest = set(), name
    while rest:
        part = next((p for p in ACTION_PARTS if rest.startswith(p)), None)
        if part is None:
            return frozenset({name})
        parts.add(part)
        rest = rest[len(part) :]
    return frozenset(parts)


def action_from_keys(pressed: Collection[str], meanings: Sequence[str]) -> int:
    """The action for the buttons held down: the one with the most buttons, all of them pressed.

    Nothing pressed gives NOOP; LEFT+FIRE gives LEFTFIRE where the game has it, else LEFT or FIRE
    (the first in the game's order); a combination a game lacks never yields a wrong button.
    """
    held = {p.upper() for p in pressed}
    best, best_size = 0, -1
    for index, meaning in enumerate(meanings):
        parts = action_parts(meaning)
        if parts <= held and len(parts) > best_size:
            best, best_size = index, len(parts)
    return best


MAX_RECORDED_ACTIONS = 10_000  # a recording holds every frame in memory


def parse_actions(spec: str, meanings: Sequence[str], seed: int = 0) -> list[int]:
    """Actions from ``--actions``: comma-separated names (any case) or indices, or ``random:N``."""
    spec = spec.strip()
    if spec.lower().startswith("random:"):
        count = spec.split(":", 1)[1]
        if not count.isdigit() or not 1 <= int(count) <= MAX_RECORDED_ACTIONS:
            raise VizError(f"--actions random:N needs an integer N in [1, {MAX_RECORDED_ACTIONS}]; got {spec!r}")
        rng = np.random.Generator(np.random.PCG64(seed))
        return [int(a) for a in rng.integers(len(meanings), size=int(count))]
    upper = [m.upper() for m in meanings]
    actions = []
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit() and int(token) < len(meanings):
            actions.append(int(token))
        elif token.upper() in upper:
            actions.append(upper.index(token.upper()))
        else:
            valid = ", ".join(f"{i}={m}" for i, m in enumerate(meanings))
            raise VizError(
                f"--actions: unknown action {token!r}; this game's actions are {valid}, or random:N"
            )
    if not actions:
        raise VizError("--actions is empty")
    return actions


# --------------------------------------------------------------------------------------- frames


def play_caption(
    t: int,
    action: str | None,
    reward: float,
    score: float,
    discount: float | None,
    controller: str | None = None,
) -> list[str]:
    """The three caption lines of a play frame; ``controller`` (you, policy) follows the action."""
    by = "" if controller is None else f" ({controller})"
    if action is None or discount is None:
        return [f"t={t} start{by}", f"score={score:+.2f}", "(real start)"]
    end = " END" if discount < END_DISCOUNT else ""
    return [f"t={t} {action}{by}", f"r={reward:+.2f} score={score:+.2f}", f"disc={discount:.2f}{end}"]


@dataclass
class Controls:
    """The window's key handling without pygame: who chooses the actions, what a key press does.

    Keys are pygame key names (``pygame.key.name``): Esc quits, R restarts, P hands control to the
    policy and back; while the policy plays, the movement keys are ignored.
    """

    policy: bool = False

    @property
    def controller(self) -> str:
        return POLICY if self.policy else PLAYER

    def key_down(self, key: str) -> str | None:
        """One key press: QUIT, RESTART, TOGGLE (control has switched) or None (no command)."""
        key = key.lower()
        if key == QUIT_KEY:
            return QUIT
        if key == RESTART_KEY:
            return RESTART
        if key == POLICY_KEY:
            self.policy = not self.policy
            return TOGGLE
        return None

    def action(self, pressed: Collection[str], meanings: Sequence[str]) -> int | None:
        """The action of the buttons held down, or None when the policy chooses it."""
        return None if self.policy else action_from_keys(pressed, meanings)


def window_title(game: str, controls: Controls) -> str:
    """The window's title: the game, who is in control, and the keys."""
    return f"twm play {game} [{controls.controller} in control]: {KEY_HELP}"


@dataclass
class PlayRecord:
    """What a played game showed: captions and actions of every frame (the start + one per action);
    frames holds every panel for ``record_play``, only the last one for the window."""

    frames: list[np.ndarray]
    captions: list[list[str]]
    actions: list[int]
    score: float


class PlayState:
    """One dream (B = 1) with its score and the panel it currently shows."""

    def __init__(
        self,
        agent: Agent,
        meanings: Sequence[str],
        new_context: Callable[[int], RealContext],
        generator: torch.Generator,
        scale: int,
        controller: str | None = None,
    ) -> None:
        self.session = DreamSession(agent, generator)
        self.meanings = list(meanings)
        self.new_context = new_context
        self.scale = scale
        # Named in the captions when set (the window, policy recordings); scripted recordings leave it out.
        self.controller = controller
        self.restarts = 0
        self.restart()

    def restart(self) -> None:
        """A new real start (the next seed each time: R shows a different situation)."""
        self.session.start(self.new_context(self.restarts))
        self.restarts += 1
        self.score = 0.0
        self.caption = play_caption(0, None, 0.0, 0.0, None, self.controller)

    def step(self, action: int | None) -> int:
        """One dream step with ``action``, or with the policy's action when None; returns the action.

        The policy's step is the one ``twm dream`` takes: the actor samples a_t for the current latent
        (``DreamSession.policy_actions``, with the session's seeded generator), then the world model steps.
        """
        if action is None:
            action = int(self.session.policy_actions()[0])
        out = self.session.step([action])
        reward, discount = float(out.rewards[0]), float(out.discounts[0])
        self.score += reward
        self.caption = play_caption(
            self.session.t, self.meanings[action], reward, self.score, discount, self.controller
        )
        return action

    def image(self) -> np.ndarray:
        """(caption + 64 * scale, 64 * scale, 3) uint8: what the window shows now."""
        return panel(self.session.frame()[0], self.caption, self.scale, PLAY_CAPTION_LINES)


def record_play(
    agent: Agent,
    meanings: Sequence[str],
    new_context: Callable[[int], RealContext],
    actions: Sequence[int] | None,
    generator: torch.Generator,
    out: str | Path | None = None,
    *,
    fps: float = 10.0,
    scale: int = 4,
    steps: int | None = None,
) -> PlayRecord:
    """Play ``actions`` without a window; frames = the start + one per action (written to ``out``).

    With ``actions`` None the agent's policy chooses every action for ``steps`` steps (sampled with
    ``generator``, so a recording is reproducible) and the captions say so ("t=3 RIGHT (policy)").
    """
    if actions is None:
        if steps is None or steps < 1:
            raise ValueError(f"the policy needs a positive number of steps; got {steps}")
        plan: list[int | None] = [None] * steps
    else:
        plan = [int(a) for a in actions]
    controller = POLICY if actions is None else None
    state = PlayState(agent, meanings, new_context, generator, scale, controller)
    frames, captions, taken = [state.image()], [state.caption], []
    for action in plan:
        taken.append(state.step(action))
        frames.append(state.image())
        captions.append(state.caption)
    if out is not None:
        write_animation(out, frames, fps)
    return PlayRecord(frames=frames, captions=captions, actions=taken, score=state.score)


def run_play_policy(
    run_dir: str | Path,
    record: str | Path,
    *,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    warmup: int = 8,
    fps: float = 10.0,
    scale: int | None = None,
    steps: int = POLICY_STEPS,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """``twm play RUN --record FILE`` without ``--actions``: the policy plays ``steps`` dream steps.

    The same start and seeding as ``run_play`` (the real start of seed ``seed``, one generator seeded
    with ``seed`` for the warm-up, the actor and the world model), so the same seed writes the same file.
    """
    record = check_animation_path(record)
    for name, value in (("--fps", fps), ("--warmup", warmup), ("--scale", scale or 1), ("--steps", steps)):
        if value <= 0:
            raise VizError(f"{name} must be positive; got {value}")
    run: LoadedRun = load_run(run_dir, checkpoint, device)
    meanings = action_meanings_of(run.cfg.env)
    generator = torch.Generator(device=run.agent.device).manual_seed(seed)

    def new_context(restart: int) -> RealContext:
        return context_from_env(run.agent, run.cfg.env, 1, warmup, seed + restart, generator)

    played = record_play(
        run.agent, meanings, new_context, None, generator, record, fps=fps, scale=scale or 4, steps=steps
    )
    return {"out": record, "frames": len(played.frames), "score": played.score, "record": played}


def has_display() -> bool:
    """Whether a window can be shown: always off Linux; on Linux an X or Wayland display, or an SDL
    video driver chosen by hand (SDL_VIDEODRIVER)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"))


def import_pygame() -> Any:
    """The pygame module, or a one-line ``VizError`` telling how to install it."""
    # pygame prints a greeting on import unless told not to; it would clutter the CLI's output.
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        raise VizError(PYGAME_HINT) from None
    return pygame


def play_window(
    agent: Agent,
    cfg: Config,
    meanings: Sequence[str],
    new_context: Callable[[int], RealContext],
    generator: torch.Generator,
    *,
    fps: float = 10.0,
    scale: int = 6,
    max_steps: int | None = None,
) -> PlayRecord:
    """The interactive game in a pygame window; ``max_steps`` stops it (for headless tests)."""
    if max_steps is None and not has_display():
        raise VizError(
            "twm play needs a display for its window (none here: DISPLAY and WAYLAND_DISPLAY are unset); "
            "--record FILE.gif plays without one"
        )
    pygame = import_pygame()
    keys = {
        "UP": (pygame.K_UP, pygame.K_w),
        "DOWN": (pygame.K_DOWN, pygame.K_s),
        "LEFT": (pygame.K_LEFT, pygame.K_a),
        "RIGHT": (pygame.K_RIGHT, pygame.K_d),
        "FIRE": (pygame.K_SPACE,),
    }
    pygame.init()
    try:
        controls = Controls()
        state = PlayState(agent, meanings, new_context, generator, scale, controls.controller)
        first = state.image()
        screen = pygame.display.set_mode((first.shape[1], first.shape[0]))
        pygame.display.set_caption(window_title(cfg.env.game, controls))
        clock = pygame.time.Clock()
        # Only the captions and actions are kept: storing every frame would grow without bound.
        captions, taken = [state.caption], []
        image = first
        running = True
        while running:
            for event in pygame.event.get():
                command = None
                if event.type == pygame.KEYDOWN:
                    command = controls.key_down(pygame.key.name(event.key))
                if event.type == pygame.QUIT or command == QUIT:
                    running = False
                elif command == RESTART:
                    state.restart()
                elif command == TOGGLE:
                    state.controller = controls.controller
                    pygame.display.set_caption(window_title(cfg.env.game, controls))
            if not running:
                break
            held = pygame.key.get_pressed()
            pressed = {button for button, codes in keys.items() if any(held[c] for c in codes)}
            taken.append(state.step(controls.action(pressed, meanings)))
            image = state.image()
            captions.append(state.caption)
            # surfarray is (W, H, 3): transpose the (H, W, 3) image.
            screen.blit(pygame.surfarray.make_surface(np.ascontiguousarray(image.transpose(1, 0, 2))), (0, 0))
            pygame.display.flip()
            clock.tick(fps)
            if max_steps is not None and len(taken) >= max_steps:
                break
        return PlayRecord(frames=[image], captions=captions, actions=taken, score=state.score)
    finally:
        pygame.quit()
