"""Games in resume checkpoints (twm.envs.saved_state): bytes rebuilt with an allowlist.

What a checkpoint from elsewhere could ask the unpickler to call is refused before anything runs;
the games themselves round-trip (tests/envs/test_minatar.py, test_crafter.py and
test_gym_pixel_games.py step MinAtar, Crafter and gym envs on
after a ``weights_only`` checkpoint load).
"""

from __future__ import annotations

import collections
import fractions
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twm.envs.saved_state import UnsafeGameState, dump_game, load_game


class _Call:
    """Unpickles as ``function(*args)``: what a crafted checkpoint would do."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def test_a_plain_game_round_trips_as_a_snapshot() -> None:
    game = {
        "rng": np.random.RandomState(3),
        "gen": np.random.default_rng(4),
        "board": np.arange(12, dtype=np.int16).reshape(3, 4),
        "scalar": np.float32(1.5),
        "seen": {1, 2},
        "counts": collections.defaultdict(int, {"a": 2}),
        "third": fractions.Fraction(1, 3),  # a class of an allowed package ("fractions" below)
    }
    data = dump_game(game)
    game["board"][0, 0] = 99  # a snapshot: later changes are not in it
    expected = (np.random.RandomState(3).rand(), np.random.default_rng(4).random())
    back = load_game(data, ("fractions",))
    assert (back["rng"].rand(), back["gen"].random()) == expected  # generators continue
    np.testing.assert_array_equal(back["board"], np.arange(12, dtype=np.int16).reshape(3, 4))
    assert back["scalar"] == np.float32(1.5) and back["seen"] == {1, 2} and back["counts"]["b"] == 0
    assert back["third"] == fractions.Fraction(1, 3)


@pytest.mark.parametrize(
    ("payload", "packages", "named"),
    [
        (_Call(os.system, "touch {marker}"), ("minatar",), "system"),
        (_Call(eval, "open({marker!r}, 'w')"), ("minatar",), "builtins.eval"),
        # A function of an allowed package is not called either: classes only.
        (_Call(json.loads, "1"), ("json",), "json.loads"),
        (_Call(np.save, "{marker}", np.zeros(1)), ("minatar",), "numpy.save"),
    ],
    ids=["os.system", "eval", "package-function", "numpy-function"],
)
def test_globals_outside_the_allowlist_are_refused_before_running(
    tmp_path: Path, payload: _Call, packages: tuple[str, ...], named: str
) -> None:
    marker = tmp_path / "ran"
    payload.args = tuple(a.format(marker=str(marker)) if isinstance(a, str) else a for a in payload.args)
    data = pickle.dumps(payload)
    with pytest.raises(UnsafeGameState, match=named):
        load_game(data, packages)
    assert not marker.exists()
    assert not list(tmp_path.iterdir())
