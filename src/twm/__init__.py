"""twm: Transformer-based World Models for sample-efficient reinforcement learning on Atari 100k."""

__version__ = "0.1.0"
