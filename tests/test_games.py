"""Game names of the families (twm.games): resolution, unknown names, random-normalised scores and the
config errors of each family.
"""

from __future__ import annotations

import pytest

from twm import games as games_mod
from twm.config import ConfigError
from twm.config_files import load_config
from twm.games import (
    MINATAR_GAMES,
    UnknownGameError,
    game_family,
    random_normalized_score,
    resolve_game,
)

# ============================================================================ names and config


def test_game_names_resolve() -> None:
    assert resolve_game("MinAtar/SpaceInvaders") == "minatar/space_invaders"
    assert resolve_game("minatar/space-invaders") == "minatar/space_invaders"
    assert resolve_game("MINATAR/BREAKOUT") == "minatar/breakout"
    assert resolve_game("Crafter") == "crafter"
    assert resolve_game("gym:TwmTestPixel-v0") == "gym:TwmTestPixel-v0"  # ids are case-sensitive
    families = {
        "Pong": "atari",
        "catch": "catch",
        "minatar/seaquest": "minatar",
        "crafter": "crafter",
        "gym:Anything-v0": "gym",
    }
    for name, family in families.items():
        assert game_family(name) == family
    for bad in ("gym:", "gym:  "):
        with pytest.raises(UnknownGameError, match="environment id"):
            resolve_game(bad)


@pytest.mark.parametrize("name", ["minatar/pong", "MinAtar/Tetris"])
def test_unknown_minatar_game_lists_the_five(name: str) -> None:
    with pytest.raises(UnknownGameError) as info:
        resolve_game(name)
    message = str(info.value)
    assert "MinAtar" in message and name in message
    for game in MINATAR_GAMES:
        assert f"minatar/{game}" in message
    with pytest.raises(ConfigError, match="minatar/space_invaders"):
        load_config("smoke", [f"env.game={name}"])


def test_random_normalized_score(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"minatar/breakout": {"mean": 0.5}, "minatar/freeway": {"mean": 0.0}, "crafter": {"mean": 2.0}}
    monkeypatch.setattr(games_mod, "measured_random_scores", lambda: table)
    assert random_normalized_score("minatar/breakout", 3.0) == pytest.approx(6.0)
    assert random_normalized_score("crafter", 1.0) == pytest.approx(0.5)
    assert random_normalized_score("minatar/freeway", 5.0) is None  # random scores 0: no ratio
    assert random_normalized_score("minatar/asterix", 5.0) is None  # not measured
    assert random_normalized_score("Pong", 5.0) is None  # Atari: human-normalized instead
    assert random_normalized_score("gym:TwmTestPixel-v0", 5.0) is None


def test_config_errors_of_the_families() -> None:
    with pytest.raises(ConfigError, match="gym:<id> games only"):
        load_config("smoke", ["env.game=minatar/breakout", "env.kwargs={size: 16}"])
    with pytest.raises(ConfigError, match="gym:<id> games only"):
        load_config("smoke", ["env.game=crafter", "env.kwargs={a: 1}"])
    for game in ("Pong", "catch"):
        with pytest.raises(ConfigError, match="grayscale only"):
            load_config("smoke", [f"env.game={game}", "env.color=true"])
    cfg = load_config("smoke", ["env.game=gym:TwmTestPixel-v0", "env.kwargs={size: 16}", "env.color=true"])
    assert cfg.env.kwargs == {"size": 16} and cfg.frame_channels == 3
    assert load_config("smoke", ["env.game=MinAtar/SpaceInvaders"]).env.game == "minatar/space_invaders"
    for bad in ("env.sticky_actions=1.5", "env.action_repeat=0"):
        with pytest.raises(ConfigError):
            load_config("smoke", ["env.game=minatar/breakout", bad])
