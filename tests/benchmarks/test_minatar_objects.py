"""benchmarks/minatar_objects.py: which cells count as shown, by hand, and a MinAtar run read end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.benchmarks.scripts import load_script

from twm.config_files import load_config
from twm.envs.minatar import BACKGROUND_GRAY, BORDER, CELL, COLORS, GRAY_LEVELS, render_state
from twm.training.trainer import Trainer

SCRIPT, objects_mod = load_script("minatar_objects.py")


def cell(picture: np.ndarray, i: int, j: int) -> np.ndarray:
    """The 6x6 block of cell (i, j) of a (64, 64) or (3, 64, 64) picture, as a view."""
    y, x = BORDER + CELL * i, BORDER + CELL * j
    return picture[..., y : y + CELL, x : x + CELL]


def test_a_picture_shows_a_cell_nearer_the_object_than_the_background() -> None:
    state = np.zeros((10, 10, 2), dtype=bool)
    state[0, 0, 1] = state[5, 5, 1] = state[9, 9, 1] = True  # three cells of channel 1
    state[2, 2, 0] = state[2, 2, 1] = True  # channel 1 drawn over channel 0: counted for 1 only
    picture = render_state(state).astype(np.float64)  # the true picture shows all of them
    cell(picture, 5, 5)[...] = BACKGROUND_GRAY  # dropped
    # 40 % of the way from the background to channel 1's gray (0): not shown; 60 %: shown.
    level = GRAY_LEVELS[1]
    cell(picture, 9, 9)[...] = BACKGROUND_GRAY + 0.4 * (level - BACKGROUND_GRAY)
    cell(picture, 0, 0)[...] = BACKGROUND_GRAY + 0.6 * (level - BACKGROUND_GRAY)
    out = objects_mod.object_visibility(picture, state, grid=False, color=False)
    assert out[0][0].size == 0  # channel 0's only cell is drawn over
    assert sorted(zip(*np.nonzero(state[..., 1]), strict=True)) == [(0, 0), (2, 2), (5, 5), (9, 9)]
    assert out[1][0].tolist() == [True, True, False, False]  # (0, 0), (2, 2), (5, 5), (9, 9) in row order
    colour = render_state(state, color=True).astype(np.float64).transpose(2, 0, 1)  # (3, 64, 64)
    cell(colour, 2, 2)[...] = np.array(COLORS[0], dtype=np.float64)[:, None, None]  # the wrong object's colour
    shown = objects_mod.object_visibility(colour, state, grid=False, color=True)[1][0]
    # Channel 0's red seen from channel 1's green: (255, -128, -128) . (-128, 127, -128) < 0.
    assert shown.tolist() == [True, False, True, True]


def test_a_grid_shows_a_cell_above_one_half_and_counts_false_cells() -> None:
    state = np.zeros((10, 10, 1), dtype=bool)
    state[1, 1, 0] = state[3, 3, 0] = True
    probs = np.full((1, 10, 10), 0.1)
    probs[0, 1, 1], probs[0, 3, 3] = 0.9, 0.4  # one shown, one not
    probs[0, 0, 0] = 0.7  # one of the 98 empty cells set
    shown, false = objects_mod.object_visibility(probs, state, grid=True, color=False)[0]
    assert shown.tolist() == [True, False] and false.sum() == 1 and false.size == 98


def test_a_minatar_run_read_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "si"
    settings = ["env.game=minatar/space_invaders", "train.total_steps=150", "train.budget=5000"]
    Trainer(load_config("smoke", settings), run_dir, device="cpu", progress=False).run()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--episodes", "2", "--max-steps", "30", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["episodes"] == 2 and 1 <= r["mean_length"] <= 30 and r["interactions"] == 150
    assert set(r["objects"]) == {"cannon", "alien", "alien_left", "alien_right", "friendly_bullet", "enemy_bullet"}
    assert r["objects"]["cannon"]["cells"] >= 2  # the cannon is on the board at every step
    for o in r["objects"].values():
        assert o["cells"] == 0 or 0 <= o["shown"] <= 1
    assert sum(r["ends"].values()) == 2
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


def test_a_run_of_another_game_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    catch = SimpleNamespace(agent=None, cfg=load_config("smoke", ["env.game=catch"]), checkpoint=Path("final.pt"), state={})
    monkeypatch.setattr(objects_mod, "load_run", lambda *args: catch)
    assert objects_mod.main(["runs/catch"]) == 2
    err = capsys.readouterr().err
    assert err == "minatar_objects: catch is not a MinAtar game; this reads MinAtar's object channels\n"
