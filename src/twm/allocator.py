"""Keep freed memory in the process: glibc's allocator tuned for training loops (``train.keep_freed_memory``).

A world-model update on a CPU allocates and frees the same few hundred large tensors (activations,
gradients) every time. glibc serves blocks above its mmap threshold with fresh ``mmap`` calls and
unmaps them on free, and it trims the heap top back to the OS; each reuse then page-faults every
4 KiB page in again (zeroed by the kernel). That was about a quarter of a paper-configuration
world-model step on the 2-core CPU of docs/speed.md (4.5 M minor faults in 3 updates).

``keep_freed_memory()`` asks glibc (``mallopt``) to serve every block from its heap and to trim
the heap top only when more than 1 GiB of it is free, so freed blocks are mostly reused without
faults. (With no trimming at all, an allocate/free loop of one large tensor grew the heap by the
tensor's size in every iteration measured: docs/speed.md.) The arithmetic is untouched:
only where the bytes live changes. The price is a higher resident size (freed blocks stay mapped,
and fragmentation can hold several times a large block). The setting is process-wide and lasts
until the process ends; elsewhere than glibc (macOS, musl, Windows) it is a no-op. An allocator
loaded with ``LD_PRELOAD`` (tcmalloc, jemalloc) replaces ``malloc`` and then this does nothing
useful either.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc to reuse freed memory (see the module docstring); True if it applied.

    Idempotent. Returns False where the C library is not glibc or refuses a setting.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it (musl has mallopt as a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (
        mallopt(_M_MMAP_MAX, 0) == 1  # no block from mmap: all from the heap, so it can be reused
        and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1  # never give the heap top back (< 1 GiB free)
        and mallopt(_M_TOP_PAD, 64 << 20) == 1  # grow the heap in 64 MiB steps, fewer brk calls
    )
    _applied = ok
    return ok
