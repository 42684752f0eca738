"""Time training-mode batch norm (forward + backward through F.batch_norm) against PyTorch CPU.

    python benchmarks/batch_norm_ops.py [--threads 2] [--reps 15]

For each shape (VGG-BN / ResNet-like activations, batch 128, float32) the NumPy reference, the Numba
kernels and PyTorch run in this process, interleaved; medians (ms) and ratios are printed.
Results are checked against PyTorch before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

SHAPES = [(128, 32, 28, 28), (128, 64, 14, 14), (128, 128, 7, 7), (128, 256)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import torch

    import tinycnn
    import tinycnn.nn.functional as F
    from tinycnn import backends

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{'shape':>22} {'numpy ms':>9} {'numba ms':>9} {'torch ms':>9} {'numba/torch':>12}")
    for shape in SHAPES:
        c = shape[1]
        x = rng.standard_normal(shape, dtype=np.float32)
        gy = rng.standard_normal(shape, dtype=np.float32)
        w = rng.standard_normal(c).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        ours = [tinycnn.tensor(a, requires_grad=True) for a in (x, w, b)]
        rm, rv = tinycnn.zeros(c), tinycnn.ones(c)
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        trm, trv = torch.zeros(c), torch.ones(c)
        g_ours, g_torch = tinycnn.tensor(gy), torch.tensor(gy)

        def run_ours():
            for t in ours:
                t.grad = None
            F.batch_norm(ours[0], rm, rv, ours[1], ours[2], training=True).backward(g_ours)

        def run_torch():
            for t in theirs:
                t.grad = None
            torch.nn.functional.batch_norm(theirs[0], trm, trv, theirs[1], theirs[2], training=True).backward(g_torch)

        for family in ("numpy", "numba"):
            backends.set_cpu_kernels(family)
            run_ours()
            run_torch()
            for a, t in zip(ours, theirs):
                np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-3, atol=1e-3)
        times = {"numpy": [], "numba": [], "torch": []}
        for _ in range(args.reps):
            for family in ("numpy", "numba"):
                backends.set_cpu_kernels(family)
                t0 = time.perf_counter()
                run_ours()
                times[family].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_torch()
            times["torch"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{str(shape):>22} {med['numpy']:9.2f} {med['numba']:9.2f} {med['torch']:9.2f} "
              f"{med['numba'] / med['torch']:12.2f}")
    backends.set_cpu_kernels("numba")


if __name__ == "__main__":
    main()
