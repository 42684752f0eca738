"""Output arrays of the CPU kernels, recycled across training steps.

A training step allocates the same multi-megabyte arrays every time (activations, pooling indices,
gradients). Fresh memory costs one page fault per 4 KiB page on first touch, which on the benchmark
machine was about 5,000 faults and 10-20% of a reference-CNN step. `empty(shape, dtype)` instead
returns a buffer that an earlier call handed out, once nothing references it any more.

"Nothing references it" is read from CPython's reference count: the pool holds one reference, and
every other holder (a Tensor, a saved activation, a NumPy view, whose `.base` points at the buffer,
a `memoryview`, `torch.from_numpy`) holds another. So a buffer is reused only when the pool's
reference is the last one, and the caller gets it as if freshly allocated (uninitialised contents).
Python 3.14+ may skip reference counts for borrowed references, so there the pool is off and
`empty` is `numpy.empty`.

The pool keeps at most `max_bytes` (default 512 MiB, environment variable ``TINYCNN_BUFFER_POOL_MB``;
0 turns it off) and at most `max_per_shape` buffers of one shape and dtype; `clear()` drops them.
Pooled buffers stay resident while free, so the cap bounds what the pool adds to a training loop's
peak memory: for the reference CNN at batch 32 and 224x224 (`tinycnn bench`'s scaling table) the
loop's peak RSS was 1860 MB with a 1 GiB cap and 1613 MB with 512 MiB or no pool (PyTorch: 1418 MB),
while the 28x28 training steps of the benchmarks and recipes pool well under 512 MiB.
"""
from __future__ import annotations

import os
import sys
import threading

import numpy as np

__all__ = ["empty", "clear", "pool_bytes"]

# references to a free pooled buffer during the check: the pool's list, the loop variable, and
# getrefcount's own argument (CPython 3.11-3.13)
_FREE_REFS = 3
_ENABLED = sys.version_info < (3, 14)


def _max_bytes_from_env() -> int:
    raw = os.environ.get("TINYCNN_BUFFER_POOL_MB", "").strip()
    if not raw:
        return 512 << 20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"TINYCNN_BUFFER_POOL_MB must be a number of MiB >= 0, got {raw!r}") from None
    if mb < 0:
        raise ValueError(f"TINYCNN_BUFFER_POOL_MB must be a number of MiB >= 0, got {raw!r}")
    return int(mb * 2**20)


class _Pool:
    def __init__(self, max_bytes: int, max_per_shape: int = 16, min_bytes: int = 1 << 16):
        self.max_bytes = max_bytes
        self.max_per_shape = max_per_shape
        self.min_bytes = min_bytes      # small arrays come from malloc's free lists without faults
        self.bytes = 0
        self.free = {}
        self.lock = threading.Lock()

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d
        if not _ENABLED or nbytes < self.min_bytes or self.max_bytes == 0:
            return np.empty(shape, dtype=dtype)
        key = (shape, dtype.str)
        with self.lock:
            bufs = self.free.setdefault(key, [])
            for buf in bufs:
                if sys.getrefcount(buf) <= _FREE_REFS:
                    return buf
            out = np.empty(shape, dtype=dtype)
            if len(bufs) < self.max_per_shape and self.bytes + nbytes <= self.max_bytes:
                bufs.append(out)
                self.bytes += nbytes
            return out

    def clear(self):
        with self.lock:
            self.free.clear()
            self.bytes = 0


_pool = _Pool(_max_bytes_from_env())


def empty(shape, dtype):
    """An uninitialised C-contiguous array, reusing a pooled buffer that nothing references any more."""
    return _pool.empty(shape, dtype)


def clear() -> None:
    """Forget every pooled buffer (the memory is freed once nothing else holds it)."""
    _pool.clear()


def pool_bytes() -> int:
    """Bytes of the buffers the pool holds (free or in use)."""
    return _pool.bytes
