"""Scaling: training-step time and peak memory against batch size and image size.

Peak resident memory is a per-process high-water mark, so each (implementation, batch, image
size) point runs in a fresh Python process: `python -m tinycnn.bench.scaling '<json spec>'`.
The worker builds the model, runs the warm-up steps (Numba compilation, lazily created optimizer
state and work buffers happen there), then resets the kernel's high-water mark (Linux: write "5"
to /proc/self/clear_refs) and runs the timed steps. It reports
* `loop_peak_rss_mb`: peak RSS during the steady training loop (VmHWM after the reset): the
  "peak resident memory of a training loop" - it includes the interpreter and libraries;
* `base_rss_mb`: RSS just before the timed steps (libraries + model + optimizer state + buffers
  kept between steps);
* `step_extra_mb` = loop peak - base: what one step allocates on top (activations, gradients,
  temporaries) - the part that scales with batch and image size, free of import-size differences;
* `setup_peak_rss_mb`: VmHWM before the reset (imports, model, compilation and the warm-up steps).
(`ru_maxrss` is not used: Linux carries it over from the parent across fork + exec, so a child
started by a big benchmark process would report the parent's size.) Where clear_refs cannot be
written, the loop peak falls back to VmHWM over the whole process (`hwm_reset: false`).
The model is the reference CNN (`simplecnn`) sized for the image; a step is forward, cross-entropy,
backward, Adam. Points run one process at a time, alternating implementations per point.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

__all__ = ["scaling_points", "run_scaling", "worker"]


def _maxrss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


def _proc_status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    """Run one scaling point in this (fresh) process and return its measurements."""
    impl, batch, size = spec["impl"], int(spec["batch"]), int(spec["input_size"])
    steps, warmup = int(spec.get("steps", 3)), int(spec.get("warmup", 1))
    from .machine import set_threads  # noqa: PLC0415
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 2, batch).astype(np.int64)
    if impl == "torch":
        import torch  # noqa: PLC0415
        from .torch_models import build_torch_model  # noqa: PLC0415
        set_threads(spec.get("threads"))
        torch.manual_seed(0)
        model = build_torch_model("simplecnn", 1, 2, size)
        if spec.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt = torch.from_numpy(x)
        if spec.get("channels_last"):
            xt = xt.contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(y)
        F = torch.nn.functional

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(xt), yt)
            loss.backward()
            opt.step()
    else:
        import tinycnn  # noqa: PLC0415
        from tinycnn import backends  # noqa: PLC0415
        set_threads(spec.get("threads"))
        backends.set_cpu_kernels(spec.get("family", backends.get_cpu_kernels()))
        tinycnn.manual_seed(0)
        from tinycnn.models import get_model  # noqa: PLC0415
        model = get_model("simplecnn", 1, 2, input_size=size)
        opt = tinycnn.optim.Adam(model.parameters(), lr=1e-3)
        xt = tinycnn.Tensor._wrap(x)
        F = tinycnn.nn.functional

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(xt), y)
            loss.backward()
            opt.step()
    setup_rss = _proc_status_mb("VmRSS")
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    base = _proc_status_mb("VmRSS")
    setup_peak = _proc_status_mb("VmHWM")
    reset = _reset_hwm()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    loop_peak = _proc_status_mb("VmHWM")
    return {"impl": spec.get("name", impl), "batch": batch, "input_size": size, "first_step_s": first,
            "step_s": times, "median_s": float(np.median(times)), "images_per_s": batch / float(np.median(times)),
            "setup_rss_mb": setup_rss, "setup_peak_rss_mb": setup_peak, "base_rss_mb": base,
            "loop_peak_rss_mb": loop_peak if loop_peak is not None else _maxrss_mb(),
            "step_extra_mb": (loop_peak - base) if (base is not None and loop_peak is not None) else None,
            "hwm_reset": bool(reset)}


def scaling_points(quick: bool) -> list[tuple[int, int]]:
    """(batch, image size) points: a batch sweep at 28x28 and an image-size sweep at one batch."""
    if quick:
        batches, sizes, fixed_batch = [16, 64], [28, 56], 16
    else:
        batches, sizes, fixed_batch = [1, 8, 32, 128, 512], [28, 56, 112, 224], 32
    pts = [(b, 28) for b in batches] + [(fixed_batch, s) for s in sizes]
    return list(dict.fromkeys(pts))


def run_scaling(*, quick: bool, impls: dict[str, dict], threads: int | None = None,
                timeout_s: float = 300.0, progress=None) -> dict:
    """Run every point for every implementation in its own process; returns {"points", "results"}."""
    points = scaling_points(quick)
    steps, warmup = (3, 1) if quick else (5, 2)
    names = list(impls)
    results = []
    for k, (batch, size) in enumerate(points):
        for name in names[k % len(names):] + names[:k % len(names)]:
            spec = dict(impls[name], name=name, batch=batch, input_size=size, steps=steps, warmup=warmup,
                        threads=threads)
            env = dict(os.environ)
            try:
                proc = subprocess.run([sys.executable, "-m", "tinycnn.bench.scaling", json.dumps(spec)],
                                      capture_output=True, text=True, timeout=timeout_s, env=env)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    results.append({"impl": name, "batch": batch, "input_size": size, "status": "error",
                                    "message": err[:500]})
                else:
                    results.append(dict(json.loads(lines[-1]), status="ok"))
            except subprocess.TimeoutExpired:
                results.append({"impl": name, "batch": batch, "input_size": size, "status": "error",
                                "message": f"timed out after {timeout_s:.0f} s"})
            if progress is not None:
                progress(results[-1])
    return {"points": points, "results": results, "steps": steps, "warmup": warmup}


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
