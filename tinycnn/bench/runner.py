"""Run per-op cases: build every implementation, check it against the reference, then time it.

Order of work for one case (the order is the point):
1. make the inputs once (seeded); every implementation gets its own copy (some ops work in place);
2. call each implementation once and compare its outputs with the reference's (PyTorch CPU when
   installed, else our NumPy family); an implementation that disagrees is marked "wrong" with its
   largest error and is never timed; one that is missing (primitive not registered, API not written)
   is marked "unavailable";
3. time the correct ones together with the peer, interleaved (`timing.interleaved`).
"""
from __future__ import annotations

import copy
import traceback
from typing import Callable

import numpy as np

from .. import backends
from .opcases import Case
from .timing import interleaved

__all__ = ["Impl", "implementations", "check_outputs", "run_case", "to_numpy"]

CPU_FAMILIES = ("numpy", "numba")
GPU_FAMILIES = {"cupy": "cupy", "numba_cuda": "numba"}   # registry family -> set_gpu_kernels name


class Impl:
    """One way to run a case: a builder (inputs -> closure), where its inputs live, how to sync."""

    def __init__(self, name: str, build: Callable[[dict], Callable[[], tuple]], device: str = "cpu",
                 sync: Callable[[], None] | None = None, peer: bool = False, note: str = ""):
        self.name, self.build, self.device, self.sync, self.peer, self.note = name, build, device, sync, peer, note


def to_numpy(a):
    """Any output (ndarray, cupy array, torch tensor, tinycnn Tensor, scalar) as a NumPy array copy."""
    if hasattr(a, "detach"):          # torch
        return a.detach().cpu().numpy().copy()
    if hasattr(a, "data") and type(a).__name__ == "Tensor" and type(a).__module__.startswith("tinycnn"):
        a = a.data
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.array(a, copy=True)


def check_outputs(got: tuple, ref: tuple, case: Case) -> tuple[bool, str, float]:
    """Compare an implementation's outputs with the reference's; (ok, message, max relative error)."""
    if len(got) != len(ref):
        return False, f"returned {len(got)} outputs, expected {len(ref)}", float("inf")
    worst = 0.0
    for j, (g, r) in enumerate(zip(got, ref)):
        g, r = to_numpy(g), to_numpy(r)
        if g.shape != r.shape and g.size == r.size == 1:
            g, r = g.reshape(()), r.reshape(())
        if g.shape != r.shape:
            return False, f"output {j}: shape {g.shape}, expected {r.shape}", float("inf")
        if j in case.int_outputs:
            bad = int(np.count_nonzero(g.astype(np.int64) != r.astype(np.int64)))
            if bad:
                return False, f"output {j}: {bad} of {g.size} indices differ", float("inf")
            continue
        if g.dtype != r.dtype:
            return False, f"output {j}: dtype {g.dtype}, expected {r.dtype}", float("inf")
        if not np.all(np.isfinite(g)):
            return False, f"output {j}: non-finite values", float("inf")
        scale = max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
        err = np.abs(g.astype(np.float64) - r.astype(np.float64))
        tol = case.atol_scale * scale + case.rtol * np.abs(r.astype(np.float64))
        rel = float(np.max(err) / scale) if err.size else 0.0
        worst = max(worst, rel)
        if np.any(err > tol):
            k = int(np.argmax(err - tol))
            return (False, f"output {j}: max |error| {float(err.max()):.3g} (at flat index {k}: got "
                    f"{g.ravel()[k]!r}, expected {r.ravel()[k]!r}); tolerance rtol={case.rtol} "
                    f"atol={case.atol_scale}*{scale:.3g}", rel)
    return True, "", worst


# ----------------------------------------------------------------------------- implementations
def _family_kernel(name: str, family: str, like):
    """The `family` implementation of primitive `name`, or None when that family lacks it.

    Uses only the public dispatch: select the family, look the primitive up, restore the selection.
    On the CPU, `kernel` falls back to NumPy when Numba lacks a primitive, so "numba" counts as
    present only when it returns a different function than the NumPy lookup.
    """
    if family in CPU_FAMILIES:
        prev = backends.get_cpu_kernels()
        try:
            backends.set_cpu_kernels("numpy")
            ref = backends.kernel(name, like)
            if family == "numpy":
                return ref
            backends.set_cpu_kernels("numba")
            fn = backends.kernel(name, like)
            return None if fn is ref else fn
        except (KeyError, ImportError):
            return None
        finally:
            backends.set_cpu_kernels(prev)
    prev = backends.get_gpu_kernels()
    try:
        backends.set_gpu_kernels(GPU_FAMILIES[family])
        return backends.kernel(name, like)
    except (KeyError, RuntimeError, ImportError):
        return None
    finally:
        backends.set_gpu_kernels(prev)


def _in_cpu_family(family: str, closure):
    # primitives may look up other primitives at call time (conv -> im2col), so the family stays
    # selected for the whole call
    def call():
        prev = backends.get_cpu_kernels()
        backends.set_cpu_kernels(family)
        try:
            return closure()
        finally:
            backends.set_cpu_kernels(prev)
    return call


def _in_gpu_family(family: str, closure, gemm: str | None = None):
    from ..backends import cuda_common  # noqa: PLC0415

    def call():
        prev, prev_gemm = backends.get_gpu_kernels(), cuda_common.gemm_policy()
        backends.set_gpu_kernels(family)
        if gemm is not None:
            cuda_common.set_gemm(gemm)
        try:
            return closure()
        finally:
            backends.set_gpu_kernels(prev)
            cuda_common.set_gemm(prev_gemm)
    return call


def _to_torch(inputs: dict, torch, device: str = "cpu") -> dict:
    return {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}


def implementations(case: Case, *, torch=None, gpu: bool = False, families=CPU_FAMILIES) -> list[Impl]:
    """Every implementation of `case` that exists in this process (peers last)."""
    impls: list[Impl] = []
    probe = case.make_inputs(np.random.default_rng(0)) if case.kind == "primitive" else None
    for fam in families:
        if case.kind == "primitive":
            fn = _family_kernel(case.op, fam, next(iter(probe.values())))
            if fn is None and case.op == "matmul" and fam == "numpy":
                # no CPU matmul primitive registered: the CPU ops call numpy.matmul (BLAS) directly
                fn = np.matmul
            if fn is None:
                impls.append(Impl(fam, None, note=f"no {fam!r} kernel {case.op!r} registered"))
                continue
            impls.append(Impl(fam, lambda i, fn=fn, fam=fam: _in_cpu_family(fam, case.tiny(i, fn))))
        else:
            impls.append(Impl(fam, lambda i, fam=fam: _in_cpu_family(fam, case.api(i))))
    if gpu:
        import cupy as cp  # noqa: PLC0415
        sync = cp.cuda.Device().synchronize
        like = cp.zeros(1, cp.float32)
        for reg, fam in GPU_FAMILIES.items():
            gemms = ("ours", "cublas") if case.op == "matmul" else (None,)
            for gemm in gemms:
                name = reg if gemm is None else f"{reg}[{gemm}]"
                if case.kind == "primitive":
                    fn = _family_kernel(case.op, reg, like)
                    if fn is None:
                        impls.append(Impl(name, None, "cuda", note=f"no {reg!r} kernel {case.op!r}"))
                        continue
                    build = (lambda i, fn=fn, fam=fam, gemm=gemm:
                             _in_gpu_family(fam, case.tiny({k: cp.asarray(v) for k, v in i.items()}, fn), gemm))
                else:
                    build = (lambda i, fam=fam:
                             _in_gpu_family(fam, case.api({k: cp.asarray(v) for k, v in i.items()})))
                impls.append(Impl(name, build, "cuda", sync=sync))
    if torch is not None:
        impls.append(Impl("torch", lambda i: case.torch(_to_torch(i, torch), torch), peer=True))
        if gpu and torch.cuda.is_available():
            impls.append(Impl("torch_cuda", lambda i: case.torch(_to_torch(i, torch, "cuda"), torch), "cuda",
                              sync=torch.cuda.synchronize, peer=True))
    return impls


# ----------------------------------------------------------------------------- one case
def run_case(case: Case, impls: list[Impl], *, timing: dict, seed: int = 0, reference: str = "torch") -> dict:
    """Check then time one case; returns its JSON record (see module docstring)."""
    inputs = case.make_inputs(np.random.default_rng(seed))
    rec = {"op": case.op, "kind": case.kind, "label": case.label, "params": case.params, "flops": case.flops,
           "bytes": case.bytes, "reference": None, "impls": {}}
    closures: dict[str, Callable] = {}
    outs: dict[str, tuple] = {}
    for im in impls:
        r = rec["impls"][im.name] = {"device": im.device, "peer": im.peer}
        if im.build is None:
            r.update(status="unavailable", message=im.note)
            continue
        try:
            fn = im.build(copy.deepcopy(inputs))
            out = fn()
            if not isinstance(out, tuple):
                out = (out,)
            outs[im.name] = tuple(to_numpy(o) for o in out)
            closures[im.name] = fn
            r["status"] = "ok"
        except (AttributeError, ImportError, NotImplementedError) as exc:
            r.update(status="unavailable", message=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a crashing implementation is a result, not a suite abort
            r.update(status="error", message=f"{type(exc).__name__}: {exc}",
                     traceback=traceback.format_exc(limit=4))
    ref_name = reference if reference in outs else ("numpy" if "numpy" in outs else None)
    rec["reference"] = ref_name
    ours = [n for n in outs if not rec["impls"][n]["peer"]]
    if ref_name is None or not ours:
        rec["note"] = "no reference output" if ref_name is None else "no tinycnn implementation available"
        for n in outs:
            rec["impls"][n]["status"] = "not timed"
        return rec
    for name in list(outs):
        if name == ref_name:
            continue
        ok, msg, err = check_outputs(outs[name], outs[ref_name], case)
        rec["impls"][name]["max_rel_err"] = err
        if not ok:
            rec["impls"][name].update(status="wrong", message=msg)
            closures.pop(name)
    res = interleaved(closures, syncs={im.name: im.sync for im in impls if im.sync is not None}, **timing)
    for name, t in res.items():
        r = rec["impls"][name]
        r.update(t)
        med = t["median"]
        if med:
            if case.flops:
                r["gflops"] = case.flops / med / 1e9
            if case.bytes:
                r["gbps"] = case.bytes / med / 1e9
    peer = rec["impls"].get("torch", {}).get("median")
    gpu_peer = rec["impls"].get("torch_cuda", {}).get("median")
    for name, r in rec["impls"].items():
        if r.get("median") and peer:
            r["ratio_vs_torch"] = r["median"] / peer
        if r.get("median") and gpu_peer and r.get("device") == "cuda":
            r["ratio_vs_torch_cuda"] = r["median"] / gpu_peer
    return rec
