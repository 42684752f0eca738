"""The one place that knows about array modules, devices and kernel families.

Op code never imports numpy or cupy for array math: it asks `xp_of(array)` for the
module that owns an array and calls `kernel(name, array)` for the primitives that
NumPy does not give directly (im2col, col2im, pooling, fused losses, optimizer steps).

Kernel implementations register themselves by family:

* ``"numpy"``  - the reference, always present (``cpu_numpy.py``)
* ``"numba"``  - Numba-compiled CPU fast paths (``cpu_numba.py``)
* ``"cupy"``   - CUDA C in ``kernels/*.cu`` loaded by ``cupy.RawModule`` (``cuda_cupy.py``)
* ``"numba_cuda"`` - the same kernels written with Numba CUDA (``cuda_numba.py``)

On the CPU a primitive uses the Numba version when one is registered (unless
``TINYCNN_CPU_KERNELS=numpy``), else NumPy. On the GPU the family is chosen with
`set_gpu_kernels("cupy" | "numba")` or the environment variable ``TINYCNN_GPU_KERNELS``.
"""
from __future__ import annotations

import importlib
import os

import numpy

__all__ = [
    "xp_of", "device_of", "array_module", "normalize_device", "to_device", "cupy_module",
    "register", "kernel", "set_gpu_kernels", "get_gpu_kernels", "set_cpu_kernels", "get_cpu_kernels",
]

_GPU_FAMILIES = ("cupy", "numba")
_CPU_FAMILIES = ("numba", "numpy")
_gpu_family = os.environ.get("TINYCNN_GPU_KERNELS", "cupy").strip().lower() or "cupy"
_cpu_family = os.environ.get("TINYCNN_CPU_KERNELS", "numba").strip().lower() or "numba"
if _gpu_family not in _GPU_FAMILIES:
    raise ValueError(f"TINYCNN_GPU_KERNELS must be one of {_GPU_FAMILIES}, got {_gpu_family!r}")
if _cpu_family not in _CPU_FAMILIES:
    raise ValueError(f"TINYCNN_CPU_KERNELS must be one of {_CPU_FAMILIES}, got {_cpu_family!r}")

# implementation family -> module that registers it (imported on first use)
_FAMILY_MODULES = {
    "numpy": "tinycnn.backends.cpu_numpy",
    "numba": "tinycnn.backends.cpu_numba",
    "cupy": "tinycnn.backends.cuda_cupy",
    "numba_cuda": "tinycnn.backends.cuda_numba",
}
_loaded: set[str] = set()
_registry: dict[tuple[str, str], object] = {}

_cupy = None


def cupy_module(required: bool = True):
    """Return the cupy module, or raise a RuntimeError that says how to install it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy  # noqa: PLC0415 - optional dependency, imported only when cuda is used
        except ImportError as exc:
            if not required:
                return None
            raise RuntimeError(
                "device='cuda' needs CuPy, which is not installed: "
                "pip install 'tinycnn[cuda13]' (CUDA 13) or 'tinycnn[cuda12]' (CUDA 12)") from exc
        _cupy = cupy
    return _cupy


def _is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def xp_of(a):
    """The array module (numpy or cupy) that owns array `a`."""
    if _is_cupy_array(a):
        return cupy_module()
    return numpy


def device_of(a) -> str:
    return "cuda" if _is_cupy_array(a) else "cpu"


def normalize_device(device) -> str:
    """Map 'cpu', 'cuda', 'cuda:0', None to 'cpu' / 'cuda'; reject anything else."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def array_module(device):
    """The array module for a device name; for 'cuda' checks that a GPU is usable."""
    if normalize_device(device) == "cpu":
        return numpy
    cp = cupy_module()
    if not cp.is_available():
        raise RuntimeError(
            "device='cuda' was requested but no usable NVIDIA GPU/driver was found by CuPy "
            "(cupy.is_available() is False); use device='cpu', or on a machine with a GPU install the CuPy "
            "build for its CUDA version: pip install 'tinycnn[cuda13]' (CUDA 13) or 'tinycnn[cuda12]' (CUDA 12)")
    return cp


def to_device(a, device):
    """Copy array `a` to `device` ('cpu' or 'cuda'); returns `a` itself when it is already there."""
    device = normalize_device(device)
    if device == device_of(a):
        return a
    if device == "cpu":
        return a.get()
    return array_module("cuda").asarray(a)


# --------------------------------------------------------------------------- kernel families
def set_gpu_kernels(family: str) -> None:
    """Choose the GPU kernel family: 'cupy' (CUDA C via cupy.RawModule) or 'numba' (Numba CUDA)."""
    global _gpu_family
    if not isinstance(family, str):
        raise TypeError(f"family must be a str, one of {_GPU_FAMILIES}, got {type(family).__name__} {family!r}")
    if family not in _GPU_FAMILIES:
        raise ValueError(f"family must be one of {_GPU_FAMILIES}, got {family!r}")
    _gpu_family = family


def get_gpu_kernels() -> str:
    return _gpu_family


def set_cpu_kernels(family: str) -> None:
    """Choose the CPU kernels: 'numba' (compiled fast paths where they exist) or 'numpy' (reference)."""
    global _cpu_family
    if not isinstance(family, str):
        raise TypeError(f"family must be a str, one of {_CPU_FAMILIES}, got {type(family).__name__} {family!r}")
    if family not in _CPU_FAMILIES:
        raise ValueError(f"family must be one of {_CPU_FAMILIES}, got {family!r}")
    _cpu_family = family


def get_cpu_kernels() -> str:
    return _cpu_family


def register(name: str, family: str):
    """Decorator: register `fn` as the `family` implementation of primitive `name`."""
    if family not in _FAMILY_MODULES:
        raise ValueError(f"family must be one of {tuple(_FAMILY_MODULES)}, got {family!r}")

    def deco(fn):
        _registry[(name, family)] = fn
        return fn
    return deco


_load_errors: dict[str, ImportError] = {}


def _load(family: str) -> bool:
    if family not in _loaded:
        _loaded.add(family)
        try:
            importlib.import_module(_FAMILY_MODULES[family])
        except ImportError as exc:
            if family in ("numpy",):
                raise
            _load_errors[family] = exc
    return family not in _load_errors


def kernel(name: str, like):
    """The implementation of primitive `name` for the device of array `like`.

    CPU: the Numba version when registered and selected, else the NumPy reference.
    GPU: the selected family ('cupy' or 'numba'), which must implement every primitive.
    """
    if _is_cupy_array(like):
        family = "cupy" if _gpu_family == "cupy" else "numba_cuda"
        _load(family)
        fn = _registry.get((name, family))
        if fn is None:
            why = _load_errors.get(family)
            raise RuntimeError(f"GPU kernel family {_gpu_family!r} has no kernel {name!r}"
                               + (f" ({why})" if why is not None else ""))
        return fn
    if _cpu_family == "numba" and _load("numba"):
        fn = _registry.get((name, "numba"))
        if fn is not None:
            return fn
    _load("numpy")
    fn = _registry.get((name, "numpy"))
    if fn is None:
        raise KeyError(f"no kernel named {name!r} is registered")
    return fn
