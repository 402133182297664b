"""The 26 Atari 100k games, their human/random reference scores and name resolution.

The reference scores are the standard human and random-policy scores used to compute
human-normalized scores on Atari 100k (first published with DQN, Mnih et al. 2015, and
used unchanged by every method we compare against).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

BUILTIN_GAME = "catch"


@dataclass(frozen=True)
class GameInfo:
    name: str
    human: float
    random: float

    @property
    def ale_id(self) -> str:
        return f"ALE/{self.name}-v5"


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
    """Raised for a game name that is neither an Atari 100k game nor the built-in game."""


def valid_game_names() -> list[str]:
    return [*ATARI100K_GAMES, BUILTIN_GAME]


def resolve_game(name: str) -> str:
    """Return the canonical spelling of a game name (case, '-' and '_' are ignored).

    >>> resolve_game("ms_pacman")
    'MsPacman'
    """
    key = name.replace("-", "").replace("_", "").replace(" ", "").lower()
    for canonical in valid_game_names():
        if canonical.lower() == key:
            return canonical
    close = difflib.get_close_matches(name, valid_game_names(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UnknownGameError(f"unknown game {name!r}{hint}; valid games: {', '.join(valid_game_names())}")


def human_normalized_score(game: str, score: float) -> float | None:
    """(score - random) / (human - random); None for games without reference scores."""
    info = ATARI100K_GAMES.get(game)
    if info is None:
        return None
    return (score - info.random) / (info.human - info.random)
