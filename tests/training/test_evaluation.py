"""evaluate_agent: aggregates of eval episodes played by a stand-in agent (no networks needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import obs_policy, sequential_eval_scores
from twm.config import EnvConfig
from twm.envs.catch import CELL_WIDTH, FRAME_SIZE, PADDLE_TOP
from twm.training.evaluation import EvalResult, evaluate_agent


class OptimalCatchAgent:
    """Reads ball and paddle off the newest frame and walks towards the ball (no drift: it falls straight)."""

    def act(
        self, obs: np.ndarray, generator: torch.Generator | None = None, memory: None = None, greedy: bool = False
    ) -> np.ndarray:
        actions = []
        for stack in obs:
            frame = stack[-1]
            ball_x = np.flatnonzero((frame[6:PADDLE_TOP] == 255).any(axis=0))
            # The paddle fills its column's cell, so its left edge gives the column.
            paddle = int(np.flatnonzero(frame[FRAME_SIZE - 1] == 255).min()) // CELL_WIDTH
            target = int(ball_x.min()) // CELL_WIDTH if ball_x.size else paddle
            actions.append(0 if target == paddle else (1 if target < paddle else 2))
        return np.asarray(actions, dtype=np.int64)


class RandomAgent:
    """Uniform actions drawn with the generator evaluate_agent hands in."""

    def __init__(self) -> None:
        self.generators: list[torch.Generator | None] = []
        self.greedy: list[bool] = []

    def act(
        self, obs: np.ndarray, generator: torch.Generator | None = None, memory: None = None, greedy: bool = False
    ) -> np.ndarray:
        self.generators.append(generator)
        self.greedy.append(greedy)
        return torch.randint(0, 3, (len(obs),), generator=generator).numpy()


CATCH = EnvConfig(game="catch")


def test_optimal_policy_scores_the_maximum() -> None:
    result = evaluate_agent(OptimalCatchAgent(), CATCH, num_episodes=5, seed=3, num_envs=2)
    assert result == EvalResult(scores=[10.0] * 5, mean=10.0, std=0.0, min=10.0, max=10.0, hns=None)


def test_aggregates_match_the_scores_and_the_seed_fixes_them() -> None:
    agent = RandomAgent()
    result = evaluate_agent(agent, CATCH, num_episodes=6, seed=11, num_envs=3)
    scores = np.asarray(result.scores)
    assert len(scores) == 6 and all(s == int(s) and -10 <= s <= 10 for s in scores)
    assert result.mean == pytest.approx(scores.mean())
    assert result.std == pytest.approx(scores.std())  # population std
    assert (result.min, result.max) == (scores.min(), scores.max())
    assert result.hns is None  # catch has no reference scores
    # One seeded CPU generator for the whole evaluation, so the same seed replays the same games.
    assert agent.generators and all(g is agent.generators[0] for g in agent.generators)
    assert agent.generators[0] is not None and agent.generators[0].device.type == "cpu"
    assert evaluate_agent(RandomAgent(), CATCH, 6, seed=11, num_envs=3).scores == result.scores
    assert evaluate_agent(RandomAgent(), CATCH, 6, seed=12, num_envs=3).scores != result.scores
    # Random play loses most balls: the expected return is -7.5 per game.
    assert result.mean < 0


def test_the_evaluation_policy_reaches_the_agent() -> None:
    sampling, greedy = RandomAgent(), RandomAgent()
    evaluate_agent(sampling, CATCH, num_episodes=2, seed=1, num_envs=2)
    evaluate_agent(greedy, CATCH, num_episodes=2, seed=1, num_envs=2, policy="mode")
    assert sampling.greedy and not any(sampling.greedy)
    assert greedy.greedy and all(greedy.greedy)
    with pytest.raises(ValueError, match="must be one of sample, mode; got 'greedy'"):
        evaluate_agent(RandomAgent(), CATCH, num_episodes=2, seed=1, policy="greedy")  # type: ignore[arg-type]


class ObsAgent:
    """Deterministic per observation (ignores the generator) but plays each game differently, so the
    scores depend on which seeded env plays which episode."""

    def __init__(self) -> None:
        self.policy = obs_policy(3)

    def act(
        self, obs: np.ndarray, generator: torch.Generator | None = None, memory: None = None, greedy: bool = False
    ) -> np.ndarray:
        return self.policy(obs)


@pytest.mark.parametrize("num_envs", [1, 2, 3, 8])
def test_scores_are_the_slot_seeded_games_played_one_after_another(num_envs: int) -> None:
    num_episodes, seed = 5, 4
    result = evaluate_agent(ObsAgent(), CATCH, num_episodes=num_episodes, seed=seed, num_envs=num_envs)
    expected = sequential_eval_scores(CATCH, obs_policy(3), num_episodes, num_envs, seed)
    assert result.scores == expected
    assert len(set(expected)) > 1  # the games differ, so a wrong seed or order shows


def test_human_normalized_score_of_the_mean() -> None:
    # Pong: random -20.7, human 14.6; the mean -3.05 lies half way.
    result = EvalResult.from_scores("pong", [-20.7, 14.6])
    assert result.mean == pytest.approx(-3.05)
    assert result.hns == pytest.approx(0.5)
    assert result.std == pytest.approx(17.65)
    assert result.to_dict()["scores"] == [-20.7, 14.6]
    with pytest.raises(ValueError, match="at least one episode"):
        EvalResult.from_scores("Pong", [])
