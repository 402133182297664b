"""Parameter counts of the agent's networks for a config and game (``twm info``)."""

from __future__ import annotations

from torch import nn

from twm.config import Config
from twm.envs import check_env
from twm.models.actor_critic import Actor, Critic
from twm.models.dynamics import DynamicsModel
from twm.models.observation import ObservationModel


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def num_actions_of(cfg: Config) -> int:
    """The size of the game's minimal action set (and, for vector observations, ``env.vector_size``
    filled in from the environment: ``check_env``)."""
    return check_env(cfg.env)


def parameter_counts(cfg: Config, num_actions: int | None = None) -> dict[str, int]:
    """Counts per network and in total; with the paper config and Pong they equal the paper's model."""
    if num_actions is None:
        num_actions = num_actions_of(cfg)
    om = cfg.obs_model
    obs_model = ObservationModel.from_config(cfg)
    dynamics = DynamicsModel(cfg.dynamics, cfg.latent_dim, om.categoricals, om.classes, num_actions)
    actor = Actor(cfg.actor_critic, cfg.latent_dim, num_actions)
    critic = Critic(cfg.actor_critic, cfg.latent_dim)
    counts = {
        "observation_model": count_parameters(obs_model),
        "encoder": count_parameters(obs_model.encoder),
        "decoder": count_parameters(obs_model.decoder),
        "dynamics_model": count_parameters(dynamics),
        "actor": count_parameters(actor),
        "critic": count_parameters(critic),
    }
    counts["total"] = (
        counts["observation_model"] + counts["dynamics_model"] + counts["actor"] + counts["critic"]
    )
    return counts
