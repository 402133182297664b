"""Atomic writes (``twm.files``): a torn write never replaces a file, and a stop is never an error."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import pytest
import torch

from twm.files import CheckpointWriteError, atomic_write


class _Interrupt(BaseException):
    """Stands for ``Interrupted``: what the signal handler raises on a second SIGINT."""


class _FailingFile(io.RawIOBase):
    """Passes writes to ``f`` and raises ``error`` at the ``at``-th one, as a signal handler or a full
    disk would in the middle of ``torch.save``."""

    def __init__(self, f: IO[bytes], error: BaseException, at: int = 2) -> None:
        self.f, self.error, self.at, self.calls = f, error, at, 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.f.write(b)


def _save_through(error: BaseException):  # noqa: ANN202
    payload = {"a": torch.zeros(50_000), "b": torch.ones(50_000)}
    return lambda f: torch.save(payload, _FailingFile(f, error))


def test_a_signal_inside_torch_save_propagates_as_itself(tmp_path: Path) -> None:
    # torch's zip writer turns any exception of a Python write into RuntimeError("unexpected pos");
    # a second Ctrl-C there must still leave as the interrupt (exit 130), not as a write error.
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"previous")
    with pytest.raises(_Interrupt):
        atomic_write(path, _save_through(_Interrupt()))
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # the temporary file is gone


def test_an_os_error_inside_torch_save_is_a_checkpoint_write_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointWriteError, match=f"cannot write {path}"):
        atomic_write(path, _save_through(OSError(5, "Input/output error")))
    assert list(tmp_path.iterdir()) == []


def test_a_complete_write_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"previous")
    atomic_write(path, lambda f: torch.save({"x": torch.arange(3)}, f))
    assert torch.equal(torch.load(path)["x"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
