"""What the numbers were measured on, and the two ceilings the roofline view compares against.

The ceilings are measured in the same run as the benchmarks (clock and neighbours change between
runs): the GEMM peak as the best GFLOP/s of a large square float32 `numpy.matmul` (what BLAS can do
on this machine with these threads), and the memory bandwidth as the best GB/s of a large array copy
(bytes read + bytes written; write-allocate traffic is not counted, so this is the copy bandwidth a
NumPy user sees, a slight under-estimate of the bus).
"""
from __future__ import annotations

import io
import os
import platform
import time
from contextlib import redirect_stdout

import numpy as np

__all__ = ["machine_info", "cpu_label", "gemm_peak", "memory_bandwidth", "set_threads"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _simd(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The widest x86 vector extension the CPU reports ("AVX-512", "AVX2", ...), or "" when unknown. The
    model name alone can hide it: cloud machines sold as "AMD EPYC" came with and without AVX-512, and
    the same code ran 1.5-2x apart on them."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
                        if flag in flags:
                            return name
                    return ""
    except OSError:
        pass
    return ""


def cpu_label() -> str:
    """The CPU's model name with its vector extension, e.g. "AMD EPYC (AVX2)", for report headers."""
    simd = _simd()
    return f"{_cpu_model()} ({simd})" if simd else _cpu_model()


def _blas_info() -> dict:
    info: dict = {}
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - optional
        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer",
                                                      "architecture", "filepath")} for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    try:
        cfg = np.show_config(mode="dicts")
        info["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas", {})
    except TypeError:  # numpy < 1.25 prints only
        buf = io.StringIO()
        with redirect_stdout(buf):
            np.show_config()
        info["numpy_blas"] = buf.getvalue()
    return info


def _version(mod: str):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception:  # noqa: BLE001 - any import failure just means "absent"
        return None


def set_threads(n: int | None) -> dict:
    """Use `n` threads in BLAS, Numba and PyTorch alike (None: leave the defaults). Returns what is set."""
    got = {}
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        try:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415
            threadpool_limits(n)
            got["blas"] = n
        except ImportError:
            got["blas"] = "unchanged (threadpoolctl not installed)"
        try:
            import numba  # noqa: PLC0415

            from tinycnn import _threads  # noqa: PLC0415
            # set_num_threads starts Numba's pool if nothing has; started here instead, its idle
            # OpenMP workers sleep rather than spin and steal the other core from BLAS
            _threads.start_numba_threads()
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            got["numba"] = numba.get_num_threads()
        except ImportError:
            pass
        try:
            import torch  # noqa: PLC0415
            torch.set_num_threads(n)
            got["torch"] = torch.get_num_threads()
        except ImportError:
            pass
    return got


def machine_info() -> dict:
    """CPU model, cores, OS, Python, BLAS and library versions, GPU (if any)."""
    info = {
        "cpu": _cpu_model(),
        "simd": _simd(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("numpy", "numba", "torch", "cupy", "tinycnn", "threadpoolctl")},
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS", "OPENBLAS_CORETYPE", "TINYCNN_CPU_KERNELS",
                                           "TINYCNN_GPU_KERNELS") if k in os.environ},
        "blas": _blas_info(),
    }
    try:
        import torch  # noqa: PLC0415
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import numba  # noqa: PLC0415
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        pass
    from .. import cuda  # noqa: PLC0415
    if cuda.is_available():
        cp = __import__("cupy")
        props = cp.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    else:
        info["gpu"] = None
    return info


def gemm_peak(n: int = 2048, reps: int = 5, dtype=np.float32) -> dict:
    """Best GFLOP/s of an n x n x n `numpy.matmul` (2 n^3 flops) over `reps` timed calls."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    np.matmul(a, b, out=c)  # warm-up: BLAS thread start, page faults of c
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    return {"n": n, "dtype": np.dtype(dtype).name, "best_s": min(times), "median_s": float(np.median(times)),
            "gflops": flops / min(times) / 1e9, "gflops_median": flops / float(np.median(times)) / 1e9}


def memory_bandwidth(mbytes: int = 256, reps: int = 5) -> dict:
    """Best GB/s of `np.copyto` between two `mbytes` MB float32 arrays (2 x mbytes moved per copy)."""
    n = mbytes * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.zeros(n, np.float32)
    np.copyto(dst, src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    moved = 2.0 * n * 4
    return {"mbytes": mbytes, "best_s": min(times), "gbps": moved / min(times) / 1e9,
            "gbps_median": moved / float(np.median(times)) / 1e9}
