"""Game names of every family, their reference scores and name resolution.

Families
    - ``atari``: the 26 Atari 100k games (``Pong``, ``MsPacman``, ...). Reference scores are the
      standard human and random-policy scores used to compute human-normalized scores on Atari 100k
      (first published with DQN, Mnih et al. 2015, and used unchanged by every method we compare to).
      Any other ROM that ale-py ships (``Tennis``, ``MontezumaRevenge``, ...) runs under the same
      protocol; those games have no reference scores (reports show their raw scores). Gymnasium's
      ``gym:ALE/<Game>-v5`` ids map to the same protocol (twm's own frame skip, no sticky actions),
      with a warning.
    - ``catch``: the built-in test game (twm.envs.catch).
    - ``minatar``: ``minatar/<game>`` for the five MinAtar games (Young & Tian 2019).
    - ``crafter``: Crafter (Hafner 2021).
    - ``gym``: ``gym:<id>``, any installed Gymnasium environment with image observations and a
      discrete action space (checked when the environment is built).

MinAtar and Crafter have no human scores; their random-policy scores are measured by
``scripts/random_scores.py`` and stored in ``random_scores.json`` beside this file.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

BUILTIN_GAME = "catch"
CRAFTER_GAME = "crafter"
MINATAR_PREFIX = "minatar/"
GYM_PREFIX = "gym:"
MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
# A MinAtar state is a GRID x GRID x C boolean array, one channel per kind of object; C per game
# (the minatar package's state_shape(); twm.envs.minatar checks it when a game is built).
MINATAR_GRID = 10
MINATAR_CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
Family = Literal["atari", "catch", "minatar", "crafter", "gym"]
# What each family needs installed (twm games lists it; a missing one is a one-line error).
FAMILY_REQUIREMENTS: dict[str, str] = {
    "atari": "ale-py (a dependency of twm)",
    "catch": "nothing",
    "minatar": "pip install 'twm[envs]' (the minatar package)",
    "crafter": "pip install 'twm[envs]' (the crafter package)",
    "gym": "gymnasium (a dependency of twm) and the package that registers the id",
}
RANDOM_SCORES_FILE = Path(__file__).with_name("random_scores.json")


@dataclass(frozen=True)
class GameInfo:
    name: str
    human: float
    random: float


# name: (human, random)
_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (7127.7, 227.8),
    "Amidar": (1719.5, 5.8),
    "Assault": (742.0, 222.4),
    "Asterix": (8503.3, 210.0),
    "BankHeist": (753.1, 14.2),
    "BattleZone": (37187.5, 2360.0),
    "Boxing": (12.1, 0.1),
    "Breakout": (30.5, 1.7),
    "ChopperCommand": (7387.8, 811.0),
    "CrazyClimber": (35829.4, 10780.5),
    "DemonAttack": (1971.0, 152.1),
    "Freeway": (29.6, 0.0),
    "Frostbite": (4334.7, 65.2),
    "Gopher": (2412.5, 257.6),
    "Hero": (30826.4, 1027.0),
    "Jamesbond": (302.8, 29.0),
    "Kangaroo": (3035.0, 52.0),
    "Krull": (2665.5, 1598.0),
    "KungFuMaster": (22736.3, 258.5),
    "MsPacman": (6951.6, 307.3),
    "Pong": (14.6, -20.7),
    "PrivateEye": (69571.3, 24.9),
    "Qbert": (13455.0, 163.9),
    "RoadRunner": (7845.0, 11.5),
    "Seaquest": (42054.7, 68.4),
    "UpNDown": (11693.2, 533.4),
}

ATARI100K_GAMES: dict[str, GameInfo] = {
    name: GameInfo(name, human, random) for name, (human, random) in _REFERENCE_SCORES.items()
}


class UnknownGameError(ValueError):
    """Raised for a game name that no family knows."""


@cache
def ale_games() -> tuple[str, ...]:
    """Every ROM ale-py ships, as a game name ('tennis' -> 'Tennis'); empty without ale-py."""
    try:
        from ale_py import roms
    except ImportError:
        return ()
    return tuple("".join(part.capitalize() for part in rom.split("_")) for rom in roms.get_all_rom_ids())


# gym:ALE/<Game>-v5 (optionally gym:ale_py:ALE/<Game>-v5): an Atari game under twm's own protocol.
_ALE_V5 = re.compile(r"^(?:ale_py:)?ALE/(?P<game>[A-Za-z0-9_]+)-v5$")


def valid_game_names() -> list[str]:
    """Every fixed game name (``gym:<id>`` names are open-ended and not listed)."""
    return [*ATARI100K_GAMES, BUILTIN_GAME, *(MINATAR_PREFIX + g for g in MINATAR_GAMES), CRAFTER_GAME]


def _key(name: str) -> str:
    return name.replace("-", "").replace("_", "").replace(" ", "").lower()


def resolve_game(name: str) -> str:
    """Return the canonical spelling of a game name (case, '-' and '_' are ignored).

    >>> resolve_game("ms_pacman")
    'MsPacman'
    >>> resolve_game("MinAtar/SpaceInvaders")
    'minatar/space_invaders'

    ``gym:<id>`` names are returned as given (ids are case-sensitive); whether the id exists is
    checked when the environment is built.
    """
    if name.startswith(GYM_PREFIX):
        env_id = name[len(GYM_PREFIX) :]
        if not env_id.strip():
            raise UnknownGameError("gym: needs an environment id, e.g. gym:MyPixelGame-v0")
        ale = _ALE_V5.match(env_id)
        if ale is None:
            return name
        game = resolve_game(ale["game"])
        warnings.warn(
            f"{name} runs as {game!r} under twm's Atari 100k protocol: v5's own frame skip (4) and sticky "
            "actions (0.25) are not used (env.frame_skip applies, no sticky actions)",
            stacklevel=2,
        )
        return game
    key = _key(name)
    for canonical in valid_game_names():
        if _key(canonical) == key:
            return canonical
    for canonical in ale_games():
        if _key(canonical) == key:
            return canonical
    if key.startswith(MINATAR_PREFIX):
        hint = ", ".join(MINATAR_PREFIX + g for g in MINATAR_GAMES)
        raise UnknownGameError(f"unknown MinAtar game {name!r}; MinAtar games: {hint}")
    close = difflib.get_close_matches(name, valid_game_names(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownGameError(
        f"unknown game {name!r}{hint}; valid games: {', '.join(valid_game_names())}, any other ALE ROM "
        "(e.g. Tennis), or gym:<id>"
    )


def game_family(name: str) -> Family:
    """The family of a (resolved) game name."""
    game = resolve_game(name)
    if game in ATARI100K_GAMES:
        return "atari"
    if game == BUILTIN_GAME:
        return "catch"
    if game == CRAFTER_GAME:
        return "crafter"
    if game.startswith(GYM_PREFIX):
        return "gym"
    if game.startswith(MINATAR_PREFIX):
        return "minatar"
    return "atari"  # resolve_game names nothing else than another ALE ROM


def run_name(game: str) -> str:
    """A game name as one part of a folder name: no ':' or '/' ('gym:ALE/X-v0' -> 'gym-ALE-X-v0')."""
    return re.sub(r"[:/\\]+", "-", game).strip("-") or "game"


@cache
def measured_random_scores() -> dict[str, dict[str, float]]:
    """Random-policy scores we measured (scripts/random_scores.py): game -> {mean, std, episodes, ...}."""
    if not RANDOM_SCORES_FILE.exists():
        return {}
    return json.loads(RANDOM_SCORES_FILE.read_text())["games"]


def random_score(game: str) -> float | None:
    """The random-policy score of a game: the standard table for Atari, our measurement otherwise."""
    info = ATARI100K_GAMES.get(game)
    if info is not None:
        return info.random
    entry = measured_random_scores().get(game)
    return None if entry is None else float(entry["mean"])


def human_normalized_score(game: str, score: float) -> float | None:
    """(score - random) / (human - random); None for games without reference scores."""
    info = ATARI100K_GAMES.get(game)
    if info is None:
        return None
    return (score - info.random) / (info.human - info.random)


def random_normalized_score(game: str, score: float) -> float | None:
    """score / random for games without human scores but with a positive random score ("x random").

    A ratio, not an hns: 1 is the random policy, 3 is three times its score. None for Atari (use
    human_normalized_score), for games without a measured random score, and where the random score
    is not positive (a ratio would be meaningless; e.g. MinAtar Freeway, where random scores 0).
    """
    if game in ATARI100K_GAMES:
        return None
    rnd = random_score(game)
    if rnd is None or rnd <= 0:
        return None
    return score / rnd
