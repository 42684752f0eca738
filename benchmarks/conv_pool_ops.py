"""Time the reference CNN's conv and max-pool primitives (forward + backward) against PyTorch CPU.

    python benchmarks/conv_pool_ops.py [--threads 2] [--reps 15] [--family numba|numpy]

Both run in this process, interleaved (one tinycnn rep, one PyTorch rep), float32, batch 128;
the medians and their ratio are printed. Correctness is asserted before anything is timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--family", choices=["numba", "numpy"], default="numba")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process_time (CPU seconds of all threads) instead of wall time: "
                         "steadier on a busy machine, but it does not credit parallel speed-up")
    args = ap.parse_args()
    # thread counts are read when the libraries load, so set them before importing numpy
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch
    from tinycnn import backends

    torch.set_num_threads(args.threads)
    backends.set_cpu_kernels(args.family)
    tf = torch.nn.functional
    rng = np.random.default_rng(0)
    n = args.batch
    cases = []

    def conv_case(name, xs, ws, need_dx):
        x = rng.standard_normal(xs, dtype=np.float32)
        w = (rng.standard_normal(ws, dtype=np.float32) * 0.1)
        gy = rng.standard_normal((xs[0], ws[0]) + xs[2:], dtype=np.float32)
        opts = ((1, 1), (1, 1), (1, 1), 1)
        fwd = backends.kernel("conv2d_forward", x)
        bwd_d = backends.kernel("conv2d_backward_data", x)
        bwd_w = backends.kernel("conv2d_backward_weight", x)
        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        tx.requires_grad_(need_dx)
        tw.requires_grad_(True)

        def ours_f():
            return fwd(x, w, *opts)

        def ours_b():
            dx = bwd_d(gy, w, x.shape, *opts) if need_dx else None
            return dx, bwd_w(gy, x, w.shape, *opts)

        def torch_f():
            with torch.no_grad():
                return tf.conv2d(tx, tw, padding=1)

        def torch_b():
            y = tf.conv2d(tx, tw, padding=1)
            # torch's backward here includes its forward: time the forward alone and subtract below
            grads = torch.autograd.grad(y, [tx, tw] if need_dx else [tw], tgy)
            return grads

        ref = torch_f().numpy()
        np.testing.assert_allclose(ours_f(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        tg = torch_b()
        dx, dw = ours_b()
        np.testing.assert_allclose(dw, tg[-1].numpy(), rtol=1e-3, atol=1e-4 * np.abs(tg[-1].numpy()).max())
        if need_dx:
            np.testing.assert_allclose(dx, tg[0].numpy(), rtol=1e-3, atol=1e-4 * np.abs(tg[0].numpy()).max())
        cases.append((f"{name} fwd", ours_f, torch_f, None))
        cases.append((f"{name} bwd" + (" (dx+dw)" if need_dx else " (dw)"), ours_b, torch_b, torch_f))

    def pool_case(name, xs):
        x = rng.standard_normal(xs, dtype=np.float32)
        fwd = backends.kernel("max_pool2d_forward", x)
        bwd = backends.kernel("max_pool2d_backward", x)
        y, idx = fwd(x, (2, 2), (2, 2), (0, 0))
        gy = rng.standard_normal(y.shape, dtype=np.float32)
        tx = torch.from_numpy(x).requires_grad_(True)
        tgy = torch.from_numpy(gy)
        ty = tf.max_pool2d(tx, 2)
        np.testing.assert_array_equal(y, ty.detach().numpy())
        (tdx,) = torch.autograd.grad(ty, [tx], tgy)
        np.testing.assert_array_equal(bwd(gy, idx, x.shape), tdx.numpy())

        def torch_f():
            with torch.no_grad():
                return tf.max_pool2d(tx, 2)

        def torch_b():
            return torch.autograd.grad(tf.max_pool2d(tx, 2), [tx], tgy)

        cases.append((f"{name} fwd", lambda: fwd(x, (2, 2), (2, 2), (0, 0)), torch_f, None))
        cases.append((f"{name} bwd", lambda: bwd(gy, idx, x.shape), torch_b, torch_f))

    def layer_case(name, xs, ws, need_dx):
        """The whole op through autograd (bias, kept columns, bias gradient): forward + backward."""
        from tinycnn.nn import functional as F
        from tinycnn.tensor import Tensor
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * 0.1
        b = rng.standard_normal(ws[0], dtype=np.float32)
        gy = rng.standard_normal((xs[0], ws[0]) + xs[2:], dtype=np.float32)
        X, W, B = Tensor(x, requires_grad=need_dx), Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
        G = Tensor(gy)
        tx = torch.from_numpy(x).requires_grad_(need_dx)
        tw, tb = torch.from_numpy(w).requires_grad_(True), torch.from_numpy(b).requires_grad_(True)
        tgy = torch.from_numpy(gy)

        def ours():
            X.grad = W.grad = B.grad = None
            F.conv2d(X, W, B, padding=1).backward(G)
            return W.grad.data

        def theirs():
            y = tf.conv2d(tx, tw, tb, padding=1)
            return torch.autograd.grad(y, [tx, tw, tb] if need_dx else [tw, tb], tgy)

        ref = theirs()
        np.testing.assert_allclose(ours(), ref[-2].numpy(), rtol=1e-3, atol=1e-4 * np.abs(ref[-2].numpy()).max())
        cases.append((f"{name} layer fwd+bwd", ours, theirs, None))

    conv_case("conv1 1->32 28x28", (n, 1, 28, 28), (32, 1, 3, 3), need_dx=False)
    conv_case("conv2 32->64 14x14", (n, 32, 14, 14), (64, 32, 3, 3), need_dx=True)
    pool_case("maxpool (N,32,28,28)", (n, 32, 28, 28))
    pool_case("maxpool (N,64,14,14)", (n, 64, 14, 14))
    layer_case("conv1", (n, 1, 28, 28), (32, 1, 3, 3), need_dx=False)
    layer_case("conv2", (n, 32, 14, 14), (64, 32, 3, 3), need_dx=True)

    clock = time.process_time if args.cpu_time else time.perf_counter
    times = {}
    for name, ours, theirs, extra in cases:
        for fn in (ours, theirs):
            fn()      # warm-up
        o, t = [], []
        for _ in range(args.reps):
            t0 = clock(); ours(); o.append(clock() - t0)
            t0 = clock(); theirs(); t.append(clock() - t0)
            if extra is not None:
                t0 = clock(); extra(); t[-1] -= clock() - t0
        times[name] = (statistics.median(o) * 1e3, statistics.median(t) * 1e3, min(o) * 1e3, min(t) * 1e3)
    print(f"threads={args.threads} batch={n} family={args.family} float32, "
          f"{'CPU' if args.cpu_time else 'wall'} time, medians of {args.reps} "
          f"(torch bwd = fwd+bwd minus fwd)")
    print(f"{'op':34s} {'tinycnn ms':>11s} {'torch ms':>9s} {'ratio':>6s} {'min ratio':>9s}")
    tot_o = tot_t = 0.0
    for name, (o, t, omin, tmin) in times.items():
        if "layer" not in name:     # the layer rows repeat the primitives' work
            tot_o += o
            tot_t += t
        print(f"{name:34s} {o:11.2f} {t:9.2f} {o / t:6.2f} {omin / tmin:9.2f}")
    print(f"{'total (primitives)':34s} {tot_o:11.2f} {tot_t:9.2f} {tot_o / tot_t:6.2f}")


if __name__ == "__main__":
    main()
