"""Seeing the world model: reconstructions, dreams (GIF/MP4), attention heat maps, playing in the dream.

- ``write_eval_images``: PNG + TensorBoard pictures at each evaluation of a training run;
- ``dream`` / ``Dream``: the policy (or given actions) acting inside the world model from real starts;
- ``attention_view`` / ``attention_heatmap``: what the transformer attended to at an imagined step;
- ``run_dream`` / ``run_play``: the ``twm dream`` and ``twm play`` commands.

pygame (the play window) and imageio-ffmpeg (MP4) are optional: ``pip install 'twm[viz]'``.
"""

from twm.envs import action_meanings_of
from twm.viz.attention import AttentionView, attention_heatmap, attention_image, attention_view
from twm.viz.commands import run_dream, run_play
from twm.viz.dream import (
    Dream,
    DreamSession,
    RealContext,
    context_from_env,
    context_from_replay,
    dream,
)
from twm.viz.eval_images import write_eval_images
from twm.viz.loading import load_run
from twm.viz.play import action_from_keys, parse_actions, record_play
from twm.viz.render import VizError, write_animation

__all__ = [
    "AttentionView",
    "Dream",
    "DreamSession",
    "RealContext",
    "VizError",
    "action_from_keys",
    "action_meanings_of",
    "attention_heatmap",
    "attention_image",
    "attention_view",
    "context_from_env",
    "context_from_replay",
    "dream",
    "load_run",
    "parse_actions",
    "record_play",
    "run_dream",
    "run_play",
    "write_animation",
    "write_eval_images",
]
