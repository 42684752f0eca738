"""Keep NumPy's BLAS threads and Numba's threads from spinning against each other.

A CPU training step alternates BLAS GEMMs (OpenBLAS's pthreads pool) with Numba `parallel=True`
kernels (Numba's GNU OpenMP pool). Both pools, by default, keep their idle worker threads
busy-waiting after each call: OpenBLAS for 2^28 cycles (about 0.1 s) and GNU OpenMP for
GOMP_SPINCOUNT = 300000 pause loops (a few ms). On a machine with few cores, the idle workers of one
pool then occupy the cores that the other pool's next call needs; on the 2-core benchmark machine a
2-thread step was slower than a 1-thread step (GEMMs did not speed up at all, and small Numba kernels
became 5-40x slower). Letting idle workers sleep costs a futex wake-up (microseconds) per call.

Both settings are environment variables that each library reads once, when it loads, so:

* `before_numpy()` runs first thing in `import tinycnn`: if NumPy is not loaded yet and the user has
  not set ``OPENBLAS_THREAD_TIMEOUT``, it is set to 4 (idle OpenBLAS workers sleep after 2^4 cycles)
  while NumPy (and its OpenBLAS) loads, then removed again;
* `start_numba_threads()` runs when the Numba kernels are first loaded: unless the user set
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, it sets ``OMP_WAIT_POLICY=passive`` while Numba starts its
  threading layer (which loads libgomp), then removes it, so libraries loaded later (PyTorch ships
  its own libgomp) keep their defaults.

Sleeping workers have a second cost on some virtual machines: when the calling thread wakes a worker,
Linux may queue it on the caller's own (busy) CPU, and with two CPUs the idle one often does not pull it
for milliseconds; the caller and "its" worker then take turns on one CPU. On the 2-core benchmark machine
(a KVM guest) two threads each running half of 16 GEMMs shared a CPU in 30 of 40 tries (5.5 ms instead of
3.1), a 2-thread 128 x 3136 x 128 GEMM after 10 ms of idle took 9.8 ms instead of 0.7, and a 2-thread
inference step of the reference CNN had a median of 16 ms where 8 ms was possible. So

* `keep_apart()`, called as a parallel kernel, a GEMM or a block of worker-thread jobs starts, keeps
  every other thread of the process off the CPU the calling thread is on (its affinity becomes the
  allowed CPUs minus that one). It reads the caller's CPU each time (`sched_getcpu`, well under a
  microsecond) and changes affinities only when that CPU changed, or to take in threads started
  since the last look (it looks again every 256 calls); a move costs ~16 us, so regions too small to
  gain from a second thread (GEMMs under 2^20 multiply-adds, kernels under 2^20 element-operations)
  do not call it. The calling thread itself is never pinned,
  so processes and threads it starts keep the whole machine; tinycnn's own worker threads
  (`mark_pool_thread`) work for their caller and never take the placement over. Only on Linux with 2
  to 8 allowed CPUs: the problem and the fix were measured on 2, and on a machine with many CPUs a move
  would touch two threads per CPU while an idle CPU is easier for the scheduler to find.

Set ``TINYCNN_THREAD_TUNING=0`` to leave every library at its defaults. None of these settings changes
any result: only how idle threads wait and where they run.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

_applied: dict[str, str] = {}


def _enabled() -> bool:
    return os.environ.get("TINYCNN_THREAD_TUNING", "1").strip() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def _env_while(name: str, value: str, unless=()):
    """Set environment variable `name` for the duration of the block, unless it (or one of `unless`) is set."""
    if not _enabled() or name in os.environ or any(u in os.environ for u in unless):
        yield False
        return
    os.environ[name] = value
    try:
        yield True
    finally:
        os.environ.pop(name, None)
    _applied[name] = value


def before_numpy() -> None:
    """Import NumPy with OpenBLAS's idle workers set to sleep at once (see the module docstring)."""
    if "numpy" in sys.modules:
        return
    with _env_while("OPENBLAS_THREAD_TIMEOUT", "4", unless=("GOTO_THREAD_TIMEOUT",)):
        import numpy  # noqa: F401, PLC0415 - loads OpenBLAS, which reads the variable now


def start_numba_threads() -> None:
    """Start Numba's threading layer with passive (sleeping) idle OpenMP workers."""
    from numba.np.ufunc import parallel  # noqa: PLC0415

    if parallel._is_initialized:
        return
    with _env_while("OMP_WAIT_POLICY", "passive", unless=("GOMP_SPINCOUNT",)):
        parallel._launch_threads()  # loads the threading layer (libgomp reads OMP_WAIT_POLICY here)


def applied() -> dict[str, str]:
    """The settings this process applied (name -> value), for machine-info reports."""
    return dict(_applied)


class _Apart:
    """What `keep_apart` last did: the caller's CPU it kept the others from, and which threads it moved."""

    def __init__(self):
        self.on = None          # decided on first use
        self.getcpu = None
        self.allowed = frozenset()
        self.cpu = -1
        self.caller = -1
        self.calls = 0
        self.moved = set()


_apart = _Apart()
_LOOK_EVERY = 256
# measured on 2 CPUs only; with many CPUs a move touches ~2 threads per CPU and idle CPUs are easier to find
_APART_MAX_CPUS = 8
_local = threading.local()


def mark_pool_thread() -> None:
    """Mark the calling thread as one of tinycnn's own workers (their pool's initializer calls this):
    `keep_apart` ignores calls from such threads, which run on behalf of the thread that handed them work."""
    _local.pool = True


def _apart_setup() -> bool:
    st = _apart
    try:
        st.allowed = frozenset(os.sched_getaffinity(0))
        libc = ctypes.CDLL(None, use_errno=True)
        getcpu = libc.sched_getcpu
        getcpu.restype = ctypes.c_int
        getcpu.argtypes = []
        if getcpu() < 0:
            return False
        st.getcpu = getcpu
    except (AttributeError, OSError):       # not Linux / no sched_getcpu
        return False
    return _enabled() and 2 <= len(st.allowed) <= _APART_MAX_CPUS and os.path.isdir("/proc/self/task")


def keep_apart() -> None:
    """Keep the process's other threads (the pools' workers) off the calling thread's CPU (module docstring)."""
    st = _apart
    if st.on is None:
        st.on = _apart_setup()
    if not st.on or getattr(_local, "pool", False):
        return
    cpu = st.getcpu()
    st.calls += 1
    caller = threading.get_native_id()
    if cpu == st.cpu and caller == st.caller and st.calls % _LOOK_EVERY:
        return
    moved_cpu = cpu != st.cpu or caller != st.caller
    others = st.allowed - {cpu}
    if not others:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return
    for tid in tids:
        if tid == caller or (not moved_cpu and tid in st.moved):
            continue
        try:
            os.sched_setaffinity(tid, others)
            st.moved.add(tid)
        except OSError:                      # the thread ended meanwhile, or is not ours to move
            st.moved.discard(tid)
    if caller != st.caller and caller in st.moved:   # a thread that now calls runs anywhere again
        with contextlib.suppress(OSError):
            os.sched_setaffinity(caller, st.allowed)
        st.moved.discard(caller)
    st.moved &= set(tids)
    st.cpu, st.caller = cpu, caller
