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

Set ``TINYCNN_THREAD_TUNING=0`` to leave every library at its defaults. Neither setting changes any
result: only how idle threads wait.
"""
from __future__ import annotations

import contextlib
import os
import sys

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
