"""The Python API end to end, as a notebook would run it (smoke size: about a minute on one CPU core).

    python examples/api_quickstart.py [OUT_DIR]

Each block below is a notebook cell.
"""

import sys
from pathlib import Path

import twm

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/api-quickstart")

# --- train: overrides as keyword arguments; a callback sees every metric line and evaluation
evals = []


def watch(event: twm.RunEvent) -> bool:
    if event.kind == "eval":
        evals.append((event.step, event.metrics["eval/mean_score"]))
    return False  # True would stop the run (with a checkpoint) at the next safe point


result = twm.train(
    "catch", preset="smoke", run_dir=out / "catch", callbacks=[watch], dynamics={"layers": 1}, **{"train.seed": 1}
)
print("final mean score", result.mean, "evaluations", evals)

# --- load the agent: act on the run's own environment, evaluate, dream
agent = twm.load(result.run_dir)
env = agent.make_env(seed=0)
obs, _ = env.reset()
score, done = 0.0, False
while not done:
    obs, reward, terminated, truncated, info = env.step(agent.act(obs))
    score += info["raw_reward"]
    done = terminated or truncated
print("one episode:", score)
print("evaluation:", agent.evaluate(episodes=2).mean)
print("dream:", agent.dream(out / "dream.gif", horizon=5, starts=2)["out"])
