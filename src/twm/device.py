"""Which torch device a command runs on."""

from __future__ import annotations

import torch


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine (a one-line message)."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without CUDA -> DeviceUnavailableError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceUnavailableError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} requested but CUDA is not available on this machine")
    return device
