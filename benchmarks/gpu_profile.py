"""Where a GPU training step spends its time: per-kernel GPU time of the reference CNN's step.

    python benchmarks/gpu_profile.py [--steps 20] [--top 25]

Runs the step (batch 128, 1x28x28, float32, SGD momentum) eagerly for each kernel family and GEMM
choice, and PyTorch's for comparison, under ``torch.profiler``: CUPTI records every kernel launched in
the process, so CuPy's RawKernels, Numba's kernels and cuBLAS calls show up beside PyTorch's own.
Prints, per configuration, the kernels sorted by total GPU time per step, the sum of GPU time per
step and the wall time per step (the difference is host overhead: Python, launches, allocation).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _profile(step, steps, top, label):
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / steps
    kernels = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(ev.name, [0, 0.0])
            k[0] += 1
            k[1] += ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
    gpu = sum(v[1] for v in kernels.values()) / steps
    launches = sum(v[0] for v in kernels.values()) / steps
    print(f"\n== {label}: wall {wall * 1e3:.3f} ms/step, GPU busy {gpu / 1e3:.3f} ms/step, "
          f"{launches:.0f} kernels/step")
    for name, (n, us) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {us / steps:9.1f} us  {n / steps:5.1f}x  {name[:110]}")
    return {"wall_ms": wall * 1e3, "gpu_ms": gpu / 1e3, "kernels_per_step": launches}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    import tinycnn

    if not tinycnn.cuda.is_available():
        print("no GPU: tinycnn.cuda.is_available() is False", file=sys.stderr)
        return 2
    import torch

    import reference_cnn
    from gpu_bench import CONFIGS, Families
    from tinycnn.nn import functional as F

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((128, 1, 28, 28)).astype(np.float32)
    yb = rng.integers(0, 2, 128)

    tm = reference_cnn.torch_model().cuda()
    topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(xb).cuda(), torch.from_numpy(yb).cuda()

    def torch_step():
        topt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(tm(tx), ty).backward()
        topt.step()

    _profile(torch_step, args.steps, args.top, "torch eager")
    for fam, gemm in CONFIGS:
        with Families(fam, gemm):
            tinycnn.manual_seed(0)
            model = reference_cnn.tinycnn_model().to("cuda")
            opt = tinycnn.optim.SGD(list(model.parameters()), lr=0.01, momentum=0.9)
            x, y = tinycnn.tensor(xb, device="cuda"), tinycnn.tensor(yb, device="cuda")

            def step():
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

            _profile(step, args.steps, args.top, f"tinycnn {fam}+{gemm} eager")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
