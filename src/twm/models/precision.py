"""The arithmetic of ``train.precision`` for the networks' forward passes."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16"]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The arithmetic of ``train.precision``: nothing for float32, else bfloat16 autocast on the device.

    Under autocast, matrix products and convolutions run in bfloat16; the networks return their
    outputs (logits, pixel means, predictions) in float32 (``full_precision``), so losses, sampling
    and everything after them stay float32. Backward passes run outside the context.
    """
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
