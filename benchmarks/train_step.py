"""Time the reference CNN's training and inference step: tinycnn vs PyTorch CPU, same process, interleaved.

    python benchmarks/train_step.py                   # threads 1 and 2, 10 timed repetitions each
    python benchmarks/train_step.py --threads 2 --reps 20 --json out.json

Each thread count runs in its own subprocess, because NumPy's BLAS fixes its thread pool when it is
first loaded: the child gets OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS in its environment, and also calls
torch.set_num_threads, numba.set_num_threads and (when installed) threadpoolctl. Inside a child the
variants run round-robin, one repetition of each in turn after warm-up, so a slow moment of a shared
machine hits all of them alike. Reported: median, spread (min..max and interquartile range) and
tinycnn / torch ratios of the medians.

Variants: a training step (forward, softmax cross-entropy, backward, Adam) for tinycnn, torch and torch
with channels_last memory format; an inference step (forward under no_grad, eval mode) for the same three;
and the GEMM floor of each step: the very GEMMs tinycnn's step runs (recorded from one real step with
`tinycnn.backends.cpu_numpy.record_gemms`: shapes, transposed operands, output buffers) replayed alone
on preallocated operands. `tinycnn / gemm floor` <= 2 means at least half of the step is BLAS time.
(The reference CNN's first convolution, C_in = 1, runs as direct Numba kernels, not as a GEMM, so
its time counts as non-GEMM time.) Batch 128 of 1x28x28 float32 images.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


def _set_threads(n: int) -> str:
    """Limit every thread pool in this process to n; returns how BLAS was limited."""
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "env vars"
    threadpool_limits(n)
    return "threadpoolctl"


def gemm_replay(calls, seed=0):
    """A zero-argument callable that runs the recorded GEMMs (`GemmCall`s) in order on operands of the
    same shapes, dtypes and memory layouts (random values, allocated once), and their GFLOP total."""
    import numpy as np

    from tinycnn.backends.cpu_numpy import matmul

    rng = np.random.default_rng(seed)
    ops = []
    for c in calls:
        def operand(rows, cols, transposed):
            a = rng.standard_normal((cols, rows) if transposed else (rows, cols)).astype(c.dtype)
            return a.T if transposed else a
        a, b = operand(c.m, c.k, c.a_t), operand(c.k, c.n, c.b_t)
        out = np.empty((c.m, c.n), dtype=c.dtype) if c.has_out else None
        ops.append((a, b, out))

    def run():
        for a, b, out in ops:
            matmul(a, b, out=out)
    return run, sum(c.flops for c in calls) / 1e9


def _variants(batch: int):
    """name -> zero-argument callable running one step."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    import tinycnn
    import tinycnn.nn.functional as F
    from benchmarks.reference_cnn import model_pair, random_batch

    ours, theirs = model_pair(seed=0)
    _, theirs_cl = model_pair(seed=0, channels_last=True)
    x, y = random_batch(batch, seed=0)
    tx, ty = tinycnn.tensor(x), tinycnn.tensor(y)
    px, py = torch.tensor(x), torch.tensor(y)
    px_cl = px.contiguous(memory_format=torch.channels_last)
    opt = tinycnn.optim.Adam(ours.parameters(), lr=1e-3)
    topt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    topt_cl = torch.optim.Adam(theirs_cl.parameters(), lr=1e-3)

    def tinycnn_train():
        opt.zero_grad()
        loss = F.cross_entropy(ours(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()

    def torch_train(model=theirs, optimizer=topt, inp=px):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inp), py)
        loss.backward()
        optimizer.step()
        return loss.item()

    def tinycnn_infer():
        with tinycnn.no_grad():
            return ours(tx).numpy()

    def torch_infer(model=theirs, inp=px):
        with torch.no_grad():
            return model(inp).numpy()

    def train_mode(flag):
        ours.train(flag)
        theirs.train(flag)
        theirs_cl.train(flag)

    from tinycnn.backends.cpu_numpy import record_gemms

    train_mode(True)
    with record_gemms() as train_calls:
        tinycnn_train()
    train_mode(False)
    with record_gemms() as infer_calls:
        tinycnn_infer()
    gemm_train, gemm_train_gflop = gemm_replay(train_calls)
    gemm_infer, gemm_infer_gflop = gemm_replay(infer_calls)
    _ = np  # NumPy is loaded (under the thread limits) before any timing
    return {
        "train/tinycnn": (tinycnn_train, True),
        "train/torch": (torch_train, True),
        "train/torch_channels_last": (lambda: torch_train(theirs_cl, topt_cl, px_cl), True),
        "infer/tinycnn": (tinycnn_infer, False),
        "infer/torch": (torch_infer, False),
        "infer/torch_channels_last": (lambda: torch_infer(theirs_cl, px_cl), False),
        "train/gemm_floor": (gemm_train, True),
        "infer/gemm_floor": (gemm_infer, False),
    }, train_mode, {"train": [c._asdict() for c in train_calls], "infer": [c._asdict() for c in infer_calls],
                    "train_gflop": gemm_train_gflop, "infer_gflop": gemm_infer_gflop}


def _child(threads: int, reps: int, warmup: int, batch: int) -> dict:
    # tinycnn first, as in a user's script or `tinycnn train`: it sets how NumPy's OpenBLAS threads
    # wait before NumPy loads (tinycnn/_threads.py); PyTorch keeps its own defaults either way
    sys.path.insert(0, str(ROOT))
    import tinycnn  # noqa: F401, PLC0415

    limiter = _set_threads(threads)
    variants, train_mode, gemms = _variants(batch)
    times = {name: [] for name in variants}
    for rep in range(warmup + reps):
        for name, (fn, training) in variants.items():
            train_mode(training)
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if rep >= warmup:
                times[name].append(dt)
    return {"threads": threads, "limiter": limiter, "batch": batch, "reps": reps, "times": times,
            "gemms": gemms}


def _summary(ts):
    q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) >= 2 else [ts[0]] * 3
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "q1": q[0], "q3": q[2]}


def _report(result: dict) -> dict:
    rows = {name: _summary(ts) for name, ts in result["times"].items()}
    print(f"\n== threads={result['threads']} (BLAS limited by {result['limiter']}), batch {result['batch']}, "
          f"{result['reps']} timed reps, interleaved ==")
    print(f"{'variant':28s} {'median ms':>10s} {'min..max ms':>18s} {'IQR ms':>16s}")
    for name, s in rows.items():
        print(f"{name:28s} {s['median'] * 1e3:10.1f} {s['min'] * 1e3:8.1f}..{s['max'] * 1e3:<8.1f} "
              f"{s['q1'] * 1e3:7.1f}..{s['q3'] * 1e3:<7.1f}")
    ratios = {}
    for kind in ("train", "infer"):
        ours = rows[f"{kind}/tinycnn"]["median"]
        for ref in ("torch", "torch_channels_last", "gemm_floor"):
            ratios[f"{kind}: tinycnn / {ref.replace('_', ' ')}"] = ours / rows[f"{kind}/{ref}"]["median"]
    for k, v in ratios.items():
        print(f"ratio {k:38s} {v:6.2f}x")
    gemms = result["gemms"]
    for kind in ("train", "infer"):
        gflop = gemms[f"{kind}_gflop"]
        print(f"gemm floor {kind}: {len(gemms[kind])} GEMMs, {gflop:.3f} GFLOP, "
              f"{gflop / rows[f'{kind}/gemm_floor']['median']:.0f} GFLOP/s")
    return {"threads": result["threads"], "limiter": result["limiter"], "batch": result["batch"],
            "reps": result["reps"], "summary": rows, "ratios": ratios, "times": result["times"],
            "gemms": gemms}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per variant (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", help="also write all timings to this JSON file")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        p.error(f"--reps must be >= 1 and --warmup >= 0, got {args.reps} and {args.warmup}")

    if args.child is not None:
        print(json.dumps(_child(args.child, args.reps, args.warmup, args.batch)))
        return 0

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    out = []
    for n in threads:
        env = dict(os.environ, **{v: str(n) for v in THREAD_VARS})
        proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--reps", str(args.reps),
                               "--warmup", str(args.warmup), "--batch", str(args.batch)],
                              env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        out.append(_report(json.loads(proc.stdout.strip().splitlines()[-1])))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
