"""Typed configuration: one dataclass per section, validation and YAML round-trip.

Every number of the paper configuration (docs/method.md) is a default here, so ``Config()`` *is* the
``atari100k`` preset. Other presets (twm.presets) are small sets of overrides on top of it.

Each field carries a help text and, where it matters, an allowed range or a set of choices;
``Config.from_dict`` checks them (and so does everything built on it) and raises ``ConfigError`` with
a one-line message naming the key and what is allowed.

Building the config a command runs with (preset < config file < ``--set`` overrides) is
twm.config_files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from twm.games import (
    MINATAR_CHANNELS,
    MINATAR_GRID,
    MINATAR_PREFIX,
    UnknownGameError,
    game_family,
    resolve_game,
)

MAX_SEED = 2**32 - 1  # numpy's legacy seeding and many libraries take 32-bit seeds

# How evaluations act (train.eval_policy, twm eval --policy): sample from the policy, or take its mode.
EvalPolicy = Literal["sample", "mode"]
EVAL_POLICIES: tuple[EvalPolicy, ...] = typing.get_args(EvalPolicy)


class ConfigError(ValueError):
    """A configuration problem, phrased as a one-line message for the user."""


def param(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Any:
    """A config field with a help text and an optional range [lo, hi] (or (lo, hi] with lo_open)."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "lo_open": lo_open})


# --------------------------------------------------------------------------------------- sections


@dataclass
class EnvConfig:
    """The environment: the Atari 100k protocol (docs/method.md) and the other families (twm.envs)."""

    game: str = param(
        "Pong",
        "Atari 100k game name, 'catch', 'minatar/<game>', 'crafter' or 'gym:<id>' (see 'twm games')",
    )
    frame_skip: int = param(
        4, "Atari: emulator frames per agent step (the last two are max-pooled)", lo=1
    )
    action_repeat: int = param(
        1, "MinAtar, Crafter, gym: times each action is repeated per agent step (rewards summed)", lo=1
    )
    color: bool = param(
        False,
        "RGB frames instead of grayscale (not Atari): the encoder reads frame_stack x 3 channels",
    )
    sticky_actions: float = param(
        0.1,
        "MinAtar: probability that the previous action is repeated instead of the chosen one (the MinAtar "
        "paper's 0.1, in training and evaluation)",
        lo=0,
        hi=1,
    )
    kwargs: dict = param(
        None, "gym:<id> only: keyword arguments for gymnasium.make, as a YAML mapping"
    )
    wrappers: list = param(
        None,
        "gym:<id> only: wrappers applied after gymnasium.make, innermost first; each a name in "
        "gymnasium.wrappers or a dotted path, as a string or {name: ..., kwargs: {...}}, e.g. "
        "[minigrid.wrappers.RGBImgObsWrapper, minigrid.wrappers.ImgObsWrapper]",
    )
    obs_key: str = param("", "gym:<id> only: the key of a Dict observation that holds the image")
    pixels: Literal["obs", "render"] = param(
        "obs",
        "gym:<id> only: 'obs' reads the observations, 'render' the env's rgb_array frames instead",
    )
    observation: Literal["picture", "grid", "vector"] = param(
        "picture",
        "what the agent sees: 'picture', a 64x64 frame (the paper); 'grid', MinAtar only and beyond the "
        "paper, the game's 10x10 state itself, one 0/255 channel per kind of object, read by a small "
        "conv encoder and reconstructed cell by cell with a Bernoulli likelihood; 'vector', gym:<id> "
        "only, an observation of numbers (a Box, flattened, or a Discrete as its one-hot) read by an "
        "MLP on symlog inputs and reconstructed with a squared error in symlog space (DreamerV3's)",
    )
    vector_size: int = param(
        0,
        "observation=vector: numbers in one observation; 0 = read from the environment when a run "
        "starts (the run's config.yaml then holds it)",
        lo=0,
    )
    frame_stack: int = param(4, "frames stacked into one observation", lo=1)
    noop_max: int = param(30, "maximum random no-ops after a training reset", lo=0)
    episodic_lives: bool = param(True, "a life loss ends a training episode (the game goes on)")
    time_limit: int = param(
        27_000, "agent steps before an episode is truncated (Atari training: per life)", lo=1
    )
    reward_transform: Literal["tanh", "none"] = param("tanh", "squashing of learning rewards")
    discount: float = param(0.99, "discount target of a transition that did not terminate", lo=0, hi=1)

    def __post_init__(self) -> None:
        if self.kwargs is None:  # a dataclass default cannot be a mutable {}
            self.kwargs = {}
        if self.wrappers is None:
            self.wrappers = []

    @property
    def frame_channels(self) -> int:
        """Channels of one frame: 3 for RGB (color), else 1 (grayscale); a grid frame has the game's
        channels (one per kind of object), a vector frame one per number."""
        if self.observation == "grid":
            return MINATAR_CHANNELS[self.game.removeprefix(MINATAR_PREFIX)]
        if self.observation == "vector":
            if self.vector_size < 1:
                raise ConfigError(
                    "env.vector_size is not known yet: it is read from the environment when a run starts "
                    "(twm.envs.check_env), or set it (--set env.vector_size=N)"
                )
            return self.vector_size
        return 3 if self.color else 1

    @property
    def frame_size(self) -> int:
        """Height and width of a frame: 64 for pictures, MinAtar's 10 for grids, 1 for vectors
        (a vector of n numbers is an (n, 1, 1) frame, so stacking and the replay treat it as channels)."""
        return {"grid": MINATAR_GRID, "vector": 1}.get(self.observation, 64)

    @property
    def float_frames(self) -> bool:
        """Frames hold float32 numbers (vectors) rather than uint8 intensities (pictures, grids)."""
        return self.observation == "vector"

    @property
    def frame_dtype(self) -> type[np.generic]:
        """The numpy type of a frame: float32 for vectors, uint8 for pictures and grids."""
        return np.float32 if self.float_frames else np.uint8

    @property
    def grid_size(self) -> int | None:
        """The grid's height and width with ``observation=grid``, else None (64x64 pictures)."""
        return self.frame_size if self.observation == "grid" else None

    @property
    def image_channels(self) -> int:
        """Channels of an observation, which the encoder reads: frame_stack frames of frame_channels."""
        return self.frame_stack * self.frame_channels


@dataclass
class ObservationModelConfig:
    """Categorical VAE (docs/method.md, "Observation model")."""

    channels: int = param(48, "encoder channels of the first conv layer (then x2, x4, x8)", lo=1)
    mlp_hidden: int = param(512, "width of the encoder's 2-layer MLP", lo=1)
    categoricals: int = param(32, "number of categorical latent variables", lo=1)
    classes: int = param(32, "classes per categorical latent", lo=2)
    entropy_coef: float = param(5.0, "weight of the entropy hinge (alpha_1)", lo=0)
    entropy_threshold: float = param(0.1, "normalised entropy below which the hinge acts", lo=0, hi=1)
    consistency_coef: float = param(0.01, "weight of the consistency term (alpha_2)", lo=0)
    unimix: float = param(
        0.0,
        "beyond the paper: mix this share of the uniform distribution into every latent categorical "
        "(encoder and next-latent prediction), so each class keeps probability >= unimix / classes "
        "(DreamerV3: 0.01; 0 is the paper)",
        lo=0,
        hi=1,
    )
    moved_weight: float = param(
        1.0,
        "beyond the paper: the decoder's loss counts this many times on the pixels (grid cells) that "
        "change anywhere within the frame stack, in every frame of it, so small moving objects "
        "(bullets, a ball) weigh in the latent as much as large still ones; needs a stack of at least "
        "two frames (1 = the paper: every pixel alike)",
        lo=1,
    )
    lr: float = param(1e-4, "Adam learning rate", lo=0, lo_open=True)
    eps: float = param(1e-5, "Adam epsilon", lo=0, lo_open=True)
    weight_decay: float = param(1e-6, "Adam weight decay", lo=0)
    grad_clip: float = param(100.0, "gradient-norm clip", lo=0, lo_open=True)
    sampler: Literal["multinomial", "inverse_cdf"] = param(
        "multinomial",
        "how latent categoricals are sampled: 'multinomial' (torch.multinomial, one exponential draw per "
        "class) or 'inverse_cdf' (one uniform draw per categorical against the cumulative "
        "probabilities: the same distribution, another draw, about 15x cheaper on a CPU)",
    )
    fast_convs: bool = param(
        True,
        "same function, faster kernels: encoder convs in channels-last memory format, the decoder's first "
        "transposed conv (on a 1x1 map) as one matrix product (false: plain nn.Sequential calls)",
    )


@dataclass
class DynamicsConfig:
    """Transformer-XL dynamics model (docs/method.md, "Dynamics model")."""

    d_model: int = param(256, "model width (token embedding size)", lo=1)
    layers: int = param(10, "number of transformer layers", lo=1)
    heads: int = param(4, "attention heads", lo=1)
    head_dim: int = param(64, "dimension of each attention head", lo=1)
    ff_dim: int = param(1024, "hidden width of the feed-forward block", lo=1)
    dropout: float = param(0.1, "dropout on embeddings, positions, attention and blocks", lo=0, hi=1)
    memory_steps: int = param(16, "time steps the attention reaches back", lo=1)
    input_rewards: bool = param(True, "feed rewards back in as a third token per step")
    z_head_hidden: int = param(512, "hidden width of the next-latent head", lo=1)
    z_head_layers: int = param(4, "hidden layers of the next-latent head", lo=0)
    reward_head_hidden: int = param(256, "hidden width of the reward head", lo=1)
    reward_head_layers: int = param(4, "hidden layers of the reward head", lo=0)
    discount_head_hidden: int = param(256, "hidden width of the discount head", lo=1)
    discount_head_layers: int = param(4, "hidden layers of the discount head", lo=0)
    latent_loss: bool = param(
        True,
        "train the next-latent head with the cross-entropy to the encoder's z_{t+1} (the paper); false is "
        "the released code's behaviour (jrobine/twm issue 4: its loss never contains this term)",
    )
    reward_head: Literal["gaussian", "twohot"] = param(
        "gaussian",
        "reward prediction: 'gaussian' regresses r_t with a unit-variance Gaussian (the paper); 'twohot' "
        "classifies symlog(r_t) over 255 bins with a zero-initialised output layer (beyond the paper, "
        "DreamerV3)",
    )
    reward_bins: Literal["symlog", "symexp"] = param(
        "symlog",
        "with reward_head 'twohot', how the predicted reward is read from the bins: 'symlog' = symexp of "
        "the expected bin in symlog space (DreamerV3's paper), which shrinks a reward paid at random "
        "(1 with chance p reads as 2^p - 1); 'symexp' = bins at symexp of those points, two-hot weights "
        "and the mean in the reward's own units, so it reads p (DreamerV3's released code)",
    )
    imagined_inputs: float = param(
        0.0,
        "beyond the paper: in each world-model update, this share of the latents z_1..z_T that the "
        "dynamics model reads is replaced by a sample of its own one-step prediction from a first pass "
        "(eval mode) over the real latents (scheduled sampling; no replacement right after an episode "
        "end), so the heads learn to read latents like those imagination feeds them; the targets stay "
        "the real ones (0 = the paper: it reads the encoder's latents only)",
        lo=0,
        hi=1,
    )
    encoder_grad: float = param(
        0.0,
        "beyond the paper: share of the dynamics losses' gradient that reaches the encoder through the "
        "latents z_1..z_T the dynamics model reads, so the latents keep what predicts rewards and episode "
        "ends (0 = the paper: they are detached; DreamerV3 trains its world model end to end, 1)",
        lo=0,
        hi=1,
    )
    reward_coef: float = param(10.0, "weight of the reward NLL (beta_1)", lo=0)
    discount_coef: float = param(50.0, "weight of the discount NLL (beta_2)", lo=0)
    lr: float = param(1e-4, "Adam learning rate", lo=0, lo_open=True)
    eps: float = param(1e-5, "Adam epsilon", lo=0, lo_open=True)
    weight_decay: float = param(1e-6, "Adam weight decay", lo=0)
    grad_clip: float = param(100.0, "gradient-norm clip", lo=0, lo_open=True)
    attention: Literal["plain", "fused"] = param(
        "plain", "attention path: 'plain' (explicit matmuls) or 'fused' (scaled_dot_product_attention)"
    )
    kv_cache: bool = param(
        True,
        "imagination keeps each layer's keys and values in preallocated buffers instead of re-projecting "
        "the memory every step (same function; false: the plain Transformer-XL memory)",
    )


@dataclass
class ActorCriticConfig:
    """Policy learned in imagination (docs/method.md, "Policy learning in imagination")."""

    hidden: int = param(512, "hidden width of actor and critic MLPs", lo=1)
    layers: int = param(4, "hidden layers of actor and critic MLPs", lo=1)
    num_starts: int = param(400, "imagined rollouts per update", lo=1)
    horizon: int = param(15, "imagined steps per rollout", lo=1)
    lam: float = param(0.95, "lambda of the lambda-returns (GAE)", lo=0, hi=1)
    discount_threshold: float = param(0.1, "imagined episode ends below this discount product", lo=0, hi=1)
    fresh_pool: int = param(
        0,
        "fresh starts after imagined episode ends: 0 draws them when needed (a host sync per imagined "
        "step); N > 0 draws N once per rollout and hands them out with masks (no host sync, for GPUs "
        "and captured steps; the same draws, in another order; beyond N ends the pool is reused, "
        "logged as ac/fresh_reused)",
        lo=0,
    )
    entropy_coef: float = param(0.01, "weight of the actor's entropy term (see entropy)", lo=0)
    entropy_threshold: float = param(0.1, "normalised entropy below which the hinge acts", lo=0, hi=1)
    entropy: Literal["hinge", "bonus"] = param(
        "hinge",
        "the actor's entropy term: 'hinge' = coef * relu(threshold - normalised entropy) (the paper); "
        "'bonus' = -coef * entropy in nats at every step (beyond the paper, DreamerV3; pair with "
        "return_norm)",
    )
    critic: Literal["gaussian", "twohot"] = param(
        "gaussian",
        "critic output: 'gaussian' regresses the lambda-return with a unit-variance Gaussian (the paper); "
        "'twohot' classifies symlog(return) over 255 bins, zero-initialised (beyond the paper, DreamerV3)",
    )
    critic_bins: Literal["symlog", "symexp"] = param(
        "symlog",
        "with critic 'twohot', how the value is read from the bins: 'symlog' = symexp of the expected "
        "bin in symlog space (DreamerV3's paper; below the mean of uncertain returns), 'symexp' = the "
        "mean over bins at symexp of those points (DreamerV3's released code)",
    )
    slow_critic_rate: float = param(
        0.0,
        "beyond the paper: keep an EMA copy of the critic, moved this fraction towards the critic after "
        "each update, and pull the critic towards its predictions (DreamerV3: 0.02; 0 = off)",
        lo=0,
        hi=1,
    )
    slow_critic_coef: float = param(1.0, "weight of the slow-critic regulariser (with slow_critic_rate)", lo=0)
    return_norm: Literal["none", "percentile"] = param(
        "none",
        "advantage scaling: 'none' (the paper); 'percentile' divides advantages by max(floor, S), S an EMA of "
        "the 95th minus the 5th percentile of the imagined lambda-returns (beyond the paper, DreamerV3)",
    )
    return_norm_decay: float = param(0.99, "EMA decay of the return percentiles (return_norm)", lo=0, hi=1)
    return_norm_floor: float = param(
        1.0,
        "the least scale return_norm divides by: max(floor, S) (DreamerV3's 1 keeps the small returns of "
        "sparse rewards from being blown up; below 1, beyond it, lets a policy follow returns that "
        "tanh-squashed, rare rewards keep small)",
        lo=0,
        lo_open=True,
    )
    inputs: Literal["z", "zh"] = param(
        "z",
        "what actor and critic read: 'z' the latent z_t alone (the paper: acting needs only the encoder); "
        "'zh' z_t and the transformer's state h_{t-1} from the previous step (zeros at an episode's first "
        "step; beyond the paper, as STORM), so acting in the real game also runs the transformer",
    )
    unimix: float = param(
        0.0,
        "beyond the paper: mix this share of the uniform distribution into the policy, so each action "
        "keeps probability >= unimix / actions (DreamerV3: 0.01; 0 is the paper)",
        lo=0,
        hi=1,
    )
    replay_value_coef: float = param(
        0.0,
        "beyond the paper: weight of a second critic loss on the world-model batch's real steps (their "
        "latents, real rewards and episode ends; lambda-returns bootstrapped by the critic), beside the "
        "imagined ones, so the values also learn the rewards the world model misses (DreamerV3's replay "
        "value loss: 0.3; 0 = off, the paper; needs inputs 'z')",
        lo=0,
    )
    reset_every: int = param(
        0,
        "beyond the paper: every this many interactions, actor, critic and slow critic start again from "
        "new weights and fresh Adam states, then take reset_updates policy-only updates in the world "
        "model before acting goes on (a policy whose entropy collapsed early can learn again what the "
        "world model has learned since; resets as in Nikishin et al. 2022; 0 = never, the paper)",
        lo=0,
    )
    reset_updates: int = param(
        500,
        "policy-only updates (a replay batch's latents, imagination, the actor-critic step; no world-model "
        "step) right after each reset of reset_every",
        lo=0,
    )
    actor_lr: float = param(1e-4, "actor Adam learning rate", lo=0, lo_open=True)
    critic_lr: float = param(1e-5, "critic Adam learning rate", lo=0, lo_open=True)
    eps: float = param(1e-5, "Adam epsilon", lo=0, lo_open=True)
    weight_decay: float = param(1e-6, "Adam weight decay", lo=0)
    grad_clip: float = param(1.0, "gradient-norm clip", lo=0, lo_open=True)


@dataclass
class ReplayConfig:
    """Replay buffer and world-model batches (docs/method.md, "World model", "Training loop")."""

    batch_size: int = param(100, "sequences per world-model batch", lo=1)
    sequence_length: int = param(16, "steps per world-model sequence", lo=1)
    obs_batch_size: int = param(1600, "frames per observation-model pretraining batch", lo=1)
    visit_temperature: float = param(20.0, "softmax(-visits / T) sampling temperature", lo=0, lo_open=True)
    visit_rate: float = param(
        0.0,
        "beyond the paper: draw world-model sequences by expected visits, as if visit_rate starts were "
        "drawn per interaction (the paper draws 131.6: 100 sequences per 0.76 interactions), so a run "
        "with fewer updates keeps the paper's preference for new data; 0 counts the real draws (the paper)",
        lo=0,
    )
    rewarded_share: float = param(
        0.0,
        "beyond the paper: this share of each world-model batch's sequences (rounded) is drawn among "
        "the windows that hold a nonzero reward, the rest as the paper does (0 is the paper)",
        lo=0,
        hi=1,
    )

    @property
    def rewarded_sequences(self) -> int:
        """Sequences per batch drawn among windows that hold a reward: round(rewarded_share * batch_size)."""
        return round(self.rewarded_share * self.batch_size)


@dataclass
class TrainConfig:
    """Training loop, budgets and evaluation schedule (docs/method.md: protocol, "Training loop")."""

    total_steps: int = param(100_000, "agent steps (interactions) in the run, prefill included", lo=1)
    prefill_steps: int = param(5_000, "uniformly random steps before training starts", lo=1)
    budget: float = param(1e9, "total sample budget; sizes the number of updates", lo=0)
    pretrain_budget: float = param(5e7, "sample budget of pretraining on the prefill data", lo=0)
    pretrain_obs_fraction: float = param(0.6, "share of the pretrain budget for the observation model", lo=0)
    pretrain_dyn_fraction: float = param(0.3, "share of the pretrain budget for the dynamics model", lo=0)
    pretrain_ac_fraction: float = param(0.7, "share of the pretrain budget for the actor-critic", lo=0)
    eval_interval: int = param(5_000, "agent steps between evaluations", lo=1)
    eval_episodes: int = param(10, "episodes per periodic evaluation", lo=1)
    final_eval_episodes: int = param(100, "episodes of the final evaluation", lo=1)
    eval_policy: EvalPolicy = param(
        "sample",
        "how evaluations act: 'sample' draws each action from the policy (the paper); 'mode', beyond "
        "the paper, takes its most likely action, as greedy evaluations of value-based agents do "
        "(the DQN baseline); training always samples",
    )
    checkpoint_interval: int = param(10_000, "agent steps between checkpoints", lo=1)
    eval_images: bool = param(
        True, "after each periodic evaluation write a reconstruction grid and a dream strip to images/"
    )
    log_interval: int = param(500, "agent steps between metric lines", lo=1)
    status_seconds: float = param(
        60.0, "seconds between plain status lines on stderr when it is not a terminal (0 = none)", lo=0
    )
    loggers: list = param(
        None, "extra metric sinks besides metrics.jsonl and TensorBoard: any of wandb, mlflow"
    )
    seed: int = param(0, "random seed (torch and numpy take seeds below 2^32)", lo=0, hi=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = param("auto", "torch device ('auto' picks cuda if present)")
    precision: Literal["float32", "bfloat16"] = param(
        "float32",
        "arithmetic of the world-model update and imagination: bfloat16 autocasts matrix products and "
        "convolutions (losses stay float32; fast on GPUs and CPUs with bf16 units, slow on others)",
    )
    compile: bool = param(
        False, "torch.compile the networks of the update (GPU-oriented; the first updates compile)"
    )
    capture: bool = param(
        False,
        "run each part of an update as one whole compiled region with static shapes (twm.captured): "
        "CUDA graphs on a GPU, inductor on a CPU; draws from torch's global generator; needs "
        "actor_critic.fresh_pool > 0 and train.optimizer_impl=foreach; the first updates compile",
    )
    compile_backend: Literal["inductor", "aot_eager", "eager"] = param(
        "inductor",
        "torch.compile backend of train.compile and train.capture (aot_eager traces and differentiates "
        "but generates no code, eager only traces: both for checks, not speed)",
    )
    optimizer_impl: Literal["for_loop", "foreach", "fused"] = param(
        "fused",
        "how torch runs Adam and the gradient-norm clip (the same update rule): a loop over the "
        "parameter tensors with a host sync each (for_loop), batched over tensors (foreach), or "
        "one fused kernel with no host sync (fused)",
    )
    keep_freed_memory: bool = param(
        True,
        "glibc only: serve tensors from the heap and never trim it, so freed memory is reused without "
        "page faults (same arithmetic, higher resident size; twm.allocator)",
    )

    def __post_init__(self) -> None:
        if self.loggers is None:  # a dataclass default cannot be a mutable []
            self.loggers = []


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    obs_model: ObservationModelConfig = field(default_factory=ObservationModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    actor_critic: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ derived quantities

    @property
    def latent_dim(self) -> int:
        return self.obs_model.categoricals * self.obs_model.classes

    @property
    def policy_input_dim(self) -> int:
        """What actor and critic read: the latent, and with ``actor_critic.inputs`` 'zh' also h."""
        return self.latent_dim + (self.dynamics.d_model if self.actor_critic.inputs == "zh" else 0)

    @property
    def frame_channels(self) -> int:
        """Channels of one frame (EnvConfig.frame_channels)."""
        return self.env.frame_channels

    @property
    def image_channels(self) -> int:
        """Channels the encoder reads (EnvConfig.image_channels)."""
        return self.env.image_channels

    @property
    def frame_size(self) -> int:
        """Height and width of a frame (EnvConfig.frame_size)."""
        return self.env.frame_size

    @property
    def samples_per_update(self) -> int:
        """Samples one update counts against the budget: world-model sequences + imagined steps."""
        wm = self.replay.batch_size * self.replay.sequence_length
        ac = self.actor_critic.num_starts * self.actor_critic.horizon
        return wm + ac

    @property
    def num_updates(self) -> int:
        """Updates after pretraining: (budget - pretrain_budget) / samples per update (125,000 in the paper)."""
        return max(0, int((self.train.budget - self.train.pretrain_budget) // self.samples_per_update))

    @property
    def steps_per_update(self) -> float:
        """Interactions between updates on average (0.76 in the paper: 95,000 steps / 125,000 updates)."""
        steps = self.train.total_steps - self.train.prefill_steps
        return math.inf if self.num_updates == 0 else steps / self.num_updates

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, dict[str, Any]]:
        data = dataclasses.asdict(self)
        data["env"]["kwargs"] = dict(self.env.kwargs or {})
        data["env"]["wrappers"] = [dict(w) for w in self.env.wrappers or []]
        data["train"]["loggers"] = list(self.train.loggers or [])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Config | None = None) -> Config:
        """Build a config from nested mappings on top of ``base`` (default: the paper config)."""
        cfg = _deepcopy(base) if base is not None else cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
        for section_name, values in data.items():
            section = _get_section(cfg, section_name)
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {section_name!r} must be a mapping of keys to values")
            for key, value in values.items():
                _set_value(section, section_name, key, value)
        cfg.validate()
        return cfg

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """A whole config from a YAML file, on top of the paper's defaults (a run's ``config.yaml``)."""
        return cls.from_dict(read_config_file(path))

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        """Checks across fields (single fields are checked when set)."""
        given = self.env.game
        try:
            self.env.game = resolve_game(self.env.game)
            family = game_family(self.env.game)
        except UnknownGameError as exc:
            raise ConfigError(f"env.game: {exc}") from None
        if self.env.kwargs is None:
            self.env.kwargs = {}
        renamed = given != self.env.game and given.startswith("gym:")  # gym:ALE/<Game>-v5
        game_words = f"{given} runs as {self.env.game} and" if renamed else self.env.game
        if self.env.kwargs and family != "gym":
            raise ConfigError(f"env.kwargs is for gym:<id> games only; {game_words} takes none")
        self.env.wrappers = normalized_wrappers(self.env.wrappers)
        for key, is_set in (
            ("wrappers", bool(self.env.wrappers)),
            ("obs_key", bool(self.env.obs_key)),
            ("pixels", self.env.pixels != "obs"),
        ):
            if is_set and family != "gym":
                raise ConfigError(f"env.{key} is for gym:<id> games only; {game_words} takes none")
        if self.env.obs_key and self.env.pixels == "render":
            raise ConfigError("env.obs_key picks from the observations; env.pixels=render does not read them")
        self.train.loggers = normalized_loggers(self.train.loggers)
        if self.env.color and family in ("atari", "catch"):
            raise ConfigError(f"env.color: {self.env.game} is grayscale only (the Atari 100k protocol)")
        if self.env.observation == "grid" and family != "minatar":
            raise ConfigError(f"env.observation=grid is for minatar/<game> only; {game_words} is seen as pictures")
        if self.env.observation == "grid" and self.env.color:
            raise ConfigError("env.color draws pictures; env.observation=grid reads the game's state and has no colours")
        if self.env.observation == "vector":
            if family != "gym":
                raise ConfigError(f"env.observation=vector is for gym:<id> games only; {game_words} is seen as pictures")
            if self.env.color or self.env.pixels == "render":
                what = "env.color" if self.env.color else "env.pixels=render"
                raise ConfigError(f"{what} is about pictures; env.observation=vector reads the observation's numbers")
        elif self.env.vector_size:
            raise ConfigError("env.vector_size is for env.observation=vector only")
        if self.obs_model.moved_weight != 1:
            if self.env.observation == "vector":
                raise ConfigError("obs_model.moved_weight weighs pixels or grid cells; env.observation=vector has neither")
            if self.env.frame_stack < 2:
                raise ConfigError("obs_model.moved_weight finds what moved between stacked frames; it needs env.frame_stack >= 2")
        t = self.train
        if t.prefill_steps >= t.total_steps:
            raise ConfigError(
                f"train.prefill_steps ({t.prefill_steps}) must be smaller than train.total_steps ({t.total_steps})"
            )
        if t.pretrain_budget > t.budget:
            raise ConfigError("train.pretrain_budget must not exceed train.budget")
        # The prefill alone must hold one full world-model batch and one observation batch.
        starts = t.prefill_steps - self.replay.sequence_length - 1
        if self.replay.batch_size > starts:
            raise ConfigError(
                f"replay.batch_size ({self.replay.batch_size}) needs at least that many sequence starts in "
                f"the prefill; train.prefill_steps must be >= {self.replay.batch_size + self.replay.sequence_length + 1}"
            )
        ac = self.actor_critic
        if self.dynamics.reward_bins != "symlog" and self.dynamics.reward_head != "twohot":
            raise ConfigError("dynamics.reward_bins reads a two-hot head; it needs dynamics.reward_head=twohot")
        if ac.critic_bins != "symlog" and ac.critic != "twohot":
            raise ConfigError("actor_critic.critic_bins reads a two-hot critic; it needs actor_critic.critic=twohot")
        if ac.replay_value_coef > 0 and ac.inputs != "z":
            raise ConfigError("actor_critic.replay_value_coef needs actor_critic.inputs=z (real steps carry no h)")
        pairs = self.replay.batch_size * self.replay.sequence_length
        if ac.num_starts > pairs:
            raise ConfigError(
                f"actor_critic.num_starts ({ac.num_starts}) must not exceed the {pairs} start pairs of a "
                "world-model batch (replay.batch_size x replay.sequence_length)"
            )
        if ac.num_starts > t.prefill_steps - ac.horizon - 1:
            raise ConfigError(
                f"actor_critic.num_starts ({ac.num_starts}) real sequences of actor_critic.horizon steps must fit "
                f"in the prefill; train.prefill_steps must be >= {ac.num_starts + ac.horizon + 1}"
            )
        if t.capture:
            needs = []
            if ac.fresh_pool <= 0:
                needs.append("actor_critic.fresh_pool > 0 (fresh starts without a host sync)")
            if t.optimizer_impl != "foreach":
                needs.append("train.optimizer_impl=foreach (fused Adam is not traceable)")
            if t.compile:
                needs.append("train.compile=false (the captured regions are compiled whole)")
            if needs:
                raise ConfigError("train.capture needs " + " and ".join(needs))
        if self.replay.obs_batch_size > t.prefill_steps:
            raise ConfigError(
                f"replay.obs_batch_size ({self.replay.obs_batch_size}) must not exceed train.prefill_steps "
                f"({t.prefill_steps})"
            )


LOGGERS = ("wandb", "mlflow")


def normalized_wrappers(value: Any) -> list[dict[str, Any]]:
    """``env.wrappers`` as a list of ``{"name": str, "kwargs": dict}`` (a string is a wrapper without
    arguments; one string or mapping alone is a list of one)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | Mapping) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"env.wrappers must be a list of wrapper names or {{name, kwargs}} mappings; got {value!r}")
    out = []
    for item in items:
        if isinstance(item, str) and item.strip():
            out.append({"name": item.strip(), "kwargs": {}})
            continue
        if isinstance(item, Mapping) and isinstance(item.get("name"), str) and set(item) <= {"name", "kwargs"}:
            kwargs = item.get("kwargs") or {}
            if isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs):
                out.append({"name": item["name"].strip(), "kwargs": dict(kwargs)})
                continue
        raise ConfigError(
            f"env.wrappers: each wrapper is a name or {{name: ..., kwargs: {{...}}}}; got {item!r}"
        )
    return out


def normalized_loggers(value: Any) -> list[str]:
    """``train.loggers`` as a list of known logger names (one name alone is a list of one)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or any(item not in LOGGERS for item in items):
        raise ConfigError(f"train.loggers must be a list of {', '.join(LOGGERS)}; got {value!r}")
    return list(dict.fromkeys(items))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of sections in a YAML config file (empty for an empty file)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must be a mapping of sections, got {type(data).__name__}")
    return dict(data)


def all_keys() -> list[str]:
    """Every ``section.key`` of the config, for help and error messages."""
    return [
        f"{s.name}.{f.name}"
        for s in dataclasses.fields(Config)
        for f in dataclasses.fields(_section_type(s.name))
    ]


def closest_keys(key: str) -> str:
    """The keys closest to a mistyped ``key``, as the end of an error message."""
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    if not close:
        # Fall back to matching the last component, e.g. 'lr' -> every '*.lr'.
        last = key.split(".")[-1]
        close = [k for k in all_keys() if k.split(".")[-1] == last][:3]
    return f"did you mean {', '.join(close)}?" if close else "run 'twm config --keys' to list valid keys"


# --------------------------------------------------------------------------------------- helpers


def _deepcopy(cfg: Config) -> Config:
    return Config(**{s.name: dataclasses.replace(getattr(cfg, s.name)) for s in dataclasses.fields(Config)})


def _section_type(name: str) -> type:
    hints = typing.get_type_hints(Config)
    return hints[name]


def _get_section(cfg: Config, name: Any) -> Any:
    names = [s.name for s in dataclasses.fields(Config)]
    if not isinstance(name, str):  # YAML keys such as 1: or true:
        raise ConfigError(f"config section names are words; got {name!r}; valid sections: {', '.join(names)}")
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown config section {name!r}{hint}; valid sections: {', '.join(names)}")
    return getattr(cfg, name)


def _set_value(section: Any, section_name: str, key: str, value: Any) -> None:
    fields = {f.name: f for f in dataclasses.fields(section)}
    dotted = f"{section_name}.{key}"
    if key not in fields:
        raise ConfigError(f"unknown config key {dotted!r}; {closest_keys(dotted)}")
    f = fields[key]
    hint = typing.get_type_hints(type(section))[key]
    setattr(section, key, _coerce(dotted, value, hint, f.metadata))


def _coerce(dotted: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{dotted} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted} must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                as_float = math.nan
            if as_float.is_integer():
                value = int(as_float)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{dotted} must be an integer; got {value!r}")
    elif hint is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{dotted} must be a number; got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{dotted} must be finite; got {value!r}")
    elif hint is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{dotted} must be a mapping of names to values; got {value!r}")
        return dict(value)
    elif hint is list:
        return value  # checked as a whole by Config.validate (normalized_wrappers, normalized_loggers)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted} must be a string; got {value!r}")
        return value
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        left = "(" if lo_open else "["
        lo_s = "-inf" if lo is None else (str(lo) if isinstance(lo, int) else f"{lo:g}")
        hi_s = "inf" if hi is None else (str(hi) if isinstance(hi, int) else f"{hi:g}")
        raise ConfigError(f"{dotted} must be in {left}{lo_s}, {hi_s}]; got {value!r}")
    return value
