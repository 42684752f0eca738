"""GPU queries and helpers: `is_available`, `device_count`, `synchronize`, and `graph_capture`,
which records one call of a training step as a CUDA graph and replays it with one launch."""
from __future__ import annotations

from . import backends
from .backends import cuda_common

__all__ = ["is_available", "device_count", "synchronize", "graph_capture", "CUDAGraph"]


def is_available() -> bool:
    """True when CuPy is installed and can reach an NVIDIA GPU."""
    cp = backends.cupy_module(required=False)
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:  # driver problems surface as various CUDA errors
        return False


def device_count() -> int:
    if not is_available():
        return 0
    return int(backends.cupy_module().cuda.runtime.getDeviceCount())


def _cupy():
    """CuPy with a usable GPU, or the RuntimeError that says what is missing and how to install it."""
    return backends.array_module("cuda")


def synchronize() -> None:
    """Block the host until every kernel queued on the GPU has finished (for timing, or before exit).

    The training step itself never needs this: kernels are queued on one stream in order.
    """
    _cupy().cuda.Device().synchronize()


def _join(cp, waiter, signaller) -> None:
    """Make stream `waiter` wait (on the GPU, not the host) for the work queued so far on `signaller`."""
    ev = cp.cuda.Event(disable_timing=True)
    ev.record(signaller)
    waiter.wait_event(ev)


class CUDAGraph:
    """A captured call: `replay()` runs all its kernels again with one graph launch.

    The graph reads and writes the very buffers the captured call used: to feed a new batch, copy
    it into the input tensors in place (``x.data[...] = batch``) and call `replay()`; `outputs` (what
    the call returned, e.g. the loss tensor) is updated in place by every replay. Replays are queued
    on the GPU in order with the caller's stream; nothing waits on the host.
    """

    def __init__(self, graph, stream, pool, outputs, keep):
        self._graph = graph
        self._stream = stream
        self._pool = pool      # the graph's private buffers live here: never shared with other allocations
        self._keep = keep      # the captured inputs: their buffers must outlive the graph
        self.outputs = outputs

    def replay(self):
        """Launch the captured graph once (asynchronously); returns `outputs`."""
        cp = _cupy()
        current = cp.cuda.get_current_stream()
        _join(cp, self._stream, current)
        self._graph.launch(stream=self._stream)
        _join(cp, current, self._stream)
        return self.outputs


def graph_capture(fn, *args, warmup: int = 2, **kwargs) -> CUDAGraph:
    """Capture ``fn(*args, **kwargs)`` - e.g. forward, backward and optimizer step - as a CUDA graph.

    `fn` is first run `warmup` times (at least 1) on a private stream with a private memory pool, so
    that every kernel is compiled and loaded and the pool holds every buffer the call needs; then
    one more call is recorded with CuPy stream capture (``Stream.begin_capture``) and not executed.
    Replaying the returned `CUDAGraph` costs one launch instead of one per kernel.

    GEMMs run on our own SGEMM (``kernels/gemm.cu`` or its Numba twin) during the warm-up and the
    capture, whatever ``TINYCNN_GEMM`` says: CuPy refuses cuBLAS calls while a stream is capturing
    (NotImplementedError), and our kernels are plain launches that a graph can record.

    What `fn` may do: launch GPU work only. Host round trips (``.item()``, ``.numpy()``, printing a
    cuda tensor) and host-side state that must change per step are frozen or fail under capture - an
    optimizer step counter must live on the GPU (``adam_step`` accepts a device array for ``step``);
    dropout masks are drawn from a device-side Philox offset, so they change on every replay.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an int >= 1 (kernels must be loaded before capture), got {warmup!r}")
    cp = _cupy()
    current = cp.cuda.get_current_stream()
    stream = cp.cuda.Stream(non_blocking=True)
    pool = cp.cuda.MemoryPool()
    _join(cp, stream, current)
    with cp.cuda.using_allocator(pool.malloc), stream, cuda_common.gemm_override("ours"):
        for _ in range(warmup):
            fn(*args, **kwargs)
        stream.synchronize()   # once, before capture: the warm-up's frees have reached the pool
        stream.begin_capture()
        try:
            outputs = fn(*args, **kwargs)
        except BaseException:
            try:
                stream.end_capture()   # leave the stream usable; the original error is the one to see
            except Exception:  # noqa: BLE001
                pass
            raise
        graph = stream.end_capture()
    _join(cp, current, stream)
    return CUDAGraph(graph, stream, pool, outputs, (fn, args, kwargs))
