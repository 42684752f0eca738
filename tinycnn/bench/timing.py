"""Interleaved timing: every implementation of a case is timed in the same loop, in rotating order.

Why interleaved: on a shared 2-core VM the clock speed, cache state and neighbours drift over
seconds, so timing A for ten seconds and then B for ten seconds measures the drift as much as the
code. Alternating single samples of A, B, C (rotating who goes first) spreads any drift evenly.

Each implementation gets:
  * one cold call, timed on its own (it includes Numba compilation or CUDA module loading: the
    cold-start cost a user pays once per process, reported separately);
  * warm-up calls, untimed;
  * a repeat count `number` chosen so one sample lasts at least `min_sample_s` (tiny ops are
    timed in batches so the clock's resolution and Python's call overhead do not dominate);
  * `reps` samples of `number` calls each; a sample is the mean time of one call in that batch.
The summary is the median and the inter-quartile range (IQR = q75 - q25) of the samples.

Between samples of different implementations the loop sleeps `gap_s`: idle OpenMP (PyTorch) and
OpenBLAS / Numba worker threads spin for a few milliseconds before they sleep, and on a 2-core
machine that spinning would otherwise steal the cores from whichever implementation runs next.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["interleaved", "summarize"]


def summarize(samples) -> dict:
    """Median, quartiles, IQR, min and count of a list of per-call times (seconds)."""
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        return {"median": None, "q25": None, "q75": None, "iqr": None, "min": None, "n": 0}
    q25, med, q75 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "iqr": float(q75 - q25),
            "min": float(a.min()), "n": int(a.size)}


def _timed(fn, number: int, sync) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) / number


def interleaved(fns: dict[str, Callable[[], object]], *, reps: int = 11, warmup: int = 2,
                min_sample_s: float = 0.005, max_number: int = 1000, budget_s: float | None = None,
                min_reps: int = 3, syncs: dict[str, Callable[[], None]] | None = None,
                gap_s: float = 0.0) -> dict[str, dict]:
    """Time each callable in `fns` with alternating samples; returns name -> record.

    record = {"first_call_s", "number", "samples" (seconds per call), **summarize(samples)}.
    `syncs[name]` (e.g. a CUDA device synchronise) runs before each clock read of that
    implementation so asynchronous work is counted. `budget_s` stops the loop early (after at
    least `min_reps` rounds) so one slow case cannot eat the whole suite's time.
    """
    if not fns:
        return {}
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    syncs = syncs or {}
    names = list(fns)
    start = time.perf_counter()
    out: dict[str, dict] = {}
    for name in names:
        sync = syncs.get(name)
        first = _timed(fns[name], 1, sync)
        for _ in range(warmup):
            _timed(fns[name], 1, sync)
        # calibrate: double the batch until one batch is long enough to time well
        number = 1
        t = _timed(fns[name], 1, sync)
        while t * number < min_sample_s and number < max_number:
            number = min(max_number, max(number * 2, int(np.ceil(min_sample_s / max(t, 1e-9)))))
            t = _timed(fns[name], number, sync)
        out[name] = {"first_call_s": first, "number": number, "samples": []}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if gap_s > 0 and len(names) > 1:
                time.sleep(gap_s)
            out[name]["samples"].append(_timed(fns[name], out[name]["number"], syncs.get(name)))
        if budget_s is not None and r + 1 >= min_reps and time.perf_counter() - start > budget_s:
            break
    for rec in out.values():
        rec.update(summarize(rec["samples"]))
    return out
