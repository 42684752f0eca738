"""Winograd F(2x2, 3x3), F(4x4, 3x3) and the im2col GEMM path of the Numba convolution, primitive by primitive.

    python benchmarks/winograd_ab.py [--threads 1,2] [--rounds 2] [--reps 20] [--shape N,C,O,H]
                                     [--paths im2col,f2,f4]

For each thread count, in one process: forward (training: keeping what backward needs),
backward-data and backward-weight of a 3x3, padding-1 convolution (default: the reference CNN's conv2,
128 x 32 x 14 x 14 -> 64 channels), through each path in turn (im2col; Winograd with 2x2 output tiles;
with 4x4 output tiles), alternating for `--rounds` rounds (this machine's speed drifts; compare rounds
side by side). NumPy's BLAS is limited to the same thread count. Prints the median milliseconds of each
part. All paths are checked against the first one before anything is timed.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--shape", default="128,32,64,14", help="N,C,O,H: batch, in and out channels, size")
    ap.add_argument("--paths", default="im2col,f2,f4", help="comma-separated: im2col, f2 (Winograd F(2x2, 3x3)), "
                    "f4 (F(4x4, 3x3)); default all three")
    args = ap.parse_args()
    import tinycnn  # noqa: F401 - first, so NumPy's BLAS threads sleep when idle (tinycnn/_threads.py)
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    from tinycnn import _threads
    from tinycnn.backends import cpu_numba as NB
    from tinycnn.backends import cpu_numba_winograd as W

    _threads.start_numba_threads()
    n, c, o, h = (int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c, 3, 3), dtype=np.float32) * 0.1
    b = rng.standard_normal(o, dtype=np.float32)
    gy = rng.standard_normal((n, o, h, h), dtype=np.float32)
    opts = ((1, 1), (1, 1), (1, 1), 1)
    real = W.applies, W.applies_backward_data
    paths = args.paths.split(",")
    tiles = {"f2": 2, "f4": 4}
    bad = [p for p in paths if p != "im2col" and p not in tiles]
    if bad:
        ap.error(f"--paths: unknown {', '.join(bad)} (choose from im2col, f2, f4)")

    def use(path):
        W.applies, W.applies_backward_data = real if path != "im2col" else ((lambda *a: False),) * 2
        W.TILE = tiles.get(path)

    def step():
        keep, shared = {}, {}
        t0 = time.perf_counter()
        y = NB.conv2d_forward(x, w, *opts, bias=b, keep=keep)
        t1 = time.perf_counter()
        dx = NB.conv2d_backward_data(gy, w, x.shape, *opts, shared=shared)
        t2 = time.perf_counter()
        dw = NB.conv2d_backward_weight(gy, x, w.shape, *opts, kept=keep, shared=shared)
        t3 = time.perf_counter()
        return (t1 - t0, t2 - t1, t3 - t2), (y, dx, dw)

    outs = []
    for path in paths:
        use(path)
        outs.append([a.copy() for a in step()[1]])
    for path, out in zip(paths[1:], outs[1:]):
        for name, a, r in zip(("y", "dx", "dW"), out, outs[0]):
            scale = np.abs(r).max()
            assert np.abs(a - r).max() <= 1e-4 * scale, f"{name}: {path} and {paths[0]} disagree"
    print(f"conv 3x3 pad 1: x {n}x{c}x{h}x{h} -> {o} channels, float32; median ms of {args.reps} reps")
    print(f"{'threads':>7} {'round':>5} {'path':>9} {'forward':>8} {'bwd data':>9} {'bwd weight':>10} {'total':>7}")
    for t in (int(v) for v in args.threads.split(",")):
        numba.set_num_threads(t)
        with threadpool_limits(t):
            for r in range(args.rounds):
                for path in paths:
                    use(path)
                    for _ in range(3):
                        step()
                    ms = np.median([step()[0] for _ in range(args.reps)], axis=0) * 1e3
                    print(f"{t:>7} {r + 1:>5} {path:>9} {ms[0]:8.2f} {ms[1]:9.2f} {ms[2]:10.2f} {ms.sum():7.2f}")
    W.applies, W.applies_backward_data = real
    W.TILE = None


if __name__ == "__main__":
    main()
