"""tinycnn.bench: the benchmark suite behind `tinycnn bench [--quick] [--out DIR]`.

Sections (all in one process, one run, so every ratio compares numbers taken minutes apart at most):
* ``ops``: every primitive of docs/kernels.md and the public ops (forward + backward) over a grid
  of small-medical-CNN shapes, for each kernel family we have and PyTorch CPU, interleaved,
  correctness-checked against PyTorch before timing (`opcases`, `runner`, `timing`);
* ``e2e``: the reference CNN and ResNet-18 (28x28) training and inference steps (`endtoend`);
* ``epoch``: images/second of a real training epoch on PneumoniaMNIST;
* ``scaling``: step time and peak memory against batch and image size, one process per point;
plus the machine description and the roofline ceilings (GEMM peak, copy bandwidth) measured in the
same run. Writes ``results.json`` (every sample) and PNG plots to the output folder and prints the
tables. Python use: ``tinycnn.bench.run(quick=True, out_dir="bench-results")``; command line:
``tinycnn bench`` or ``python -m tinycnn.bench``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .. import backends

__all__ = ["run", "main", "SECTIONS"]

SECTIONS = ("ops", "e2e", "epoch", "scaling")

_TIMING = {True: dict(reps=7, warmup=1, min_sample_s=0.003, budget_s=1.0, gap_s=0.005),
           False: dict(reps=15, warmup=2, min_sample_s=0.01, budget_s=8.0, gap_s=0.01)}


def _load_torch(use_torch: bool):
    if not use_torch:
        return None
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    return torch


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run(quick: bool = False, out_dir: str | os.PathLike = "bench-results", **options) -> dict:
    """Run the suite (see `_run` for the options), leaving the caller's kernel-family choices as they were:
    the implementations under test switch the process-wide CPU/GPU families."""
    from tinycnn import backends

    cpu, gpu = backends.get_cpu_kernels(), backends.get_gpu_kernels()
    try:
        return _run(quick, out_dir, **options)
    finally:
        backends.set_cpu_kernels(cpu)
        backends.set_gpu_kernels(gpu)


def _run(quick: bool = False, out_dir: str | os.PathLike = "bench-results", *, sections=SECTIONS,
         ops: list[str] | None = None, threads: int | None = None, data_dir: str | None = None,
         use_torch: bool = True, timing: dict | None = None, seed: int = 0, quiet: bool = False,
         plots: bool = True, command: str | None = None) -> dict:
    """Run the suite; write ``results.json`` and the PNGs to `out_dir`; print the tables; return the results.

    quick: the small grid (< 2 minutes on a 2-core machine); else the full suite.
    sections: any of "ops", "e2e", "epoch", "scaling". ops: only these op names (e.g. "conv2d_forward").
    threads: threads for BLAS, Numba and PyTorch alike (default: leave each library's default).
    timing: overrides of `timing.interleaved`'s options for the per-op section.
    """
    from . import endtoend, machine, opcases, report, runner, scaling  # noqa: PLC0415
    from .. import cuda  # noqa: PLC0415

    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"sections must be among {SECTIONS}, got {bad}")
    known = {c.op for c in opcases.grid(quick)}
    unknown = sorted(set(ops or ()) - known)
    if unknown:
        raise ValueError(f"--ops: unknown op name(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch = _load_torch(use_torch)
    threads_set = machine.set_threads(threads)
    gpu = cuda.is_available()
    results: dict = {
        "suite": "quick" if quick else "full", "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": threads, "threads_set": threads_set,
        "cpu_kernels_default": backends.get_cpu_kernels(), "torch": torch is not None, "gpu": gpu,
        "loadavg_start": list(os.getloadavg()), "machine": machine.machine_info(),
    }
    cores = results["machine"]["usable_cores"] or 1
    if results["loadavg_start"][0] > cores:
        _say(f"warning: load average {results['loadavg_start'][0]:.1f} on {cores} cores: other processes are "
             f"running, absolute times will be inflated (interleaving keeps ratios comparable)", quiet)

    # ceilings for the roofline, measured now and again at the end; the better of the two is used
    gemm_n, bw_mb = (1024, 64) if quick else (2048, 256)
    ceil = {"gemm": [machine.gemm_peak(gemm_n)], "bandwidth": [machine.memory_bandwidth(bw_mb)]}

    tim = dict(_TIMING[quick], **(timing or {}))
    section_s = results["section_seconds"] = {}
    t_sec = time.perf_counter()

    def lap(name):
        nonlocal t_sec
        section_s[name] = time.perf_counter() - t_sec
        t_sec = time.perf_counter()
        if not quiet and sys.stdout.isatty():   # progress on stderr: stdout carries only the tables
            print(f"[bench] {name} done in {section_s[name]:.0f} s", file=sys.stderr, flush=True)

    if "ops" in sections:
        cases = opcases.grid(quick, set(ops) if ops else None)
        recs = []
        try:
            from tqdm import tqdm  # noqa: PLC0415
            it = tqdm(cases, desc="ops", disable=quiet or not sys.stdout.isatty(), leave=False)
        except ImportError:
            it = cases
        for case in it:
            impls = runner.implementations(case, torch=torch, gpu=gpu)
            recs.append(runner.run_case(case, impls, timing=tim, seed=seed))
        results["ops"] = recs
        lap("ops")
    if "e2e" in sections:
        fams = ("numpy", "numba") if not quick else (backends.get_cpu_kernels(),)
        recs = []
        for point in endtoend.model_cases(quick):
            recs += endtoend.run_model_case(point, torch=torch, gpu=gpu, seed=seed, families=fams,
                                            budget_s=20.0 if quick else 90.0)
        results["e2e"] = recs
        lap("e2e")
    if "epoch" in sections:
        ep = endtoend.epoch_throughput(quick=quick, torch=torch, gpu=gpu, data_dir=data_dir, seed=seed)
        results["epoch"] = ep
        if "note" in ep:
            _say(f"note: {ep['note']}", quiet)
        lap("epoch")
    if "scaling" in sections:
        impls = {f"tinycnn[{backends.get_cpu_kernels()}]": {"impl": "tinycnn", "family": backends.get_cpu_kernels()}}
        if torch is not None:
            impls["torch"] = {"impl": "torch"}
        results["scaling"] = scaling.run_scaling(quick=quick, impls=impls, threads=threads)
        lap("scaling")

    ceil["gemm"].append(machine.gemm_peak(gemm_n))
    ceil["bandwidth"].append(machine.memory_bandwidth(bw_mb))
    results["ceilings"] = {"gemm_gflops": max(c["gflops"] for c in ceil["gemm"]),
                           "bandwidth_gbps": max(c["gbps"] for c in ceil["bandwidth"]), "samples": ceil}
    results["loadavg_end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - t_start

    text = _tables(results, report)
    _say(text, quiet)
    (out / "table.txt").write_text(text + "\n", encoding="utf-8")
    if plots:
        results["plots"] = report.write_plots(results, out)
    report.write_json(results, out / "results.json")
    _say(f"\nwrote {out / 'results.json'}, {out / 'table.txt'}"
         + (f" and {len(results.get('plots', []))} PNG plots" if plots else "")
         + f" in {results['seconds']:.0f} s", quiet)
    return results


def _tables(results: dict, report) -> str:
    m = results["machine"]
    c = results["ceilings"]
    v = m["versions"]
    blas = m["blas"].get("numpy_blas", {})
    blas_name = blas.get("name", "?") + " " + str(blas.get("version", "")) if isinstance(blas, dict) else "?"
    cpu = f"{m['cpu']} ({m['simd']})" if m.get("simd") else m["cpu"]
    parts = [
        f"{results.get('command') or 'tinycnn.bench.run'} ({results['suite']} suite), {results['started']}, "
        f"{results['seconds']:.0f} s",
        f"machine: {cpu}, {m['usable_cores']} cores, GPU: {m['gpu'] or 'none'}; BLAS: {blas_name}; "
        f"threads: torch {m.get('torch_threads')}, numba {m.get('numba_threads')}",
        f"versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"load average at start/end: {results['loadavg_start'][0]:.1f} / {results['loadavg_end'][0]:.1f}",
        f"ceilings: float32 GEMM peak {c['gemm_gflops']:.0f} GFLOP/s (numpy.matmul "
        f"{c['samples']['gemm'][0]['n']}^3), copy bandwidth {c['bandwidth_gbps']:.1f} GB/s",
        "cells: median ms per call (time / PyTorch CPU time); '-' = not implemented, WRONG = failed the "
        "correctness check (not timed)",
    ]
    if results.get("ops"):
        parts += ["", "== per-op ==", report.op_table(results["ops"], c)]
    if results.get("e2e"):
        parts += ["", "== end-to-end steps (train: forward + cross-entropy + backward + Adam) ==",
                  report.e2e_table(results["e2e"])]
        cold = report.cold_table(results["e2e"])
        if cold:
            parts += ["", "cold start: the first calls of each model in this process (Numba compile or cache load included):", cold]
    if results.get("epoch"):
        parts += ["", "== training epoch ==", report.epoch_table(results["epoch"])]
    if results.get("scaling"):
        parts += ["", "== scaling (reference CNN training step; fresh process per point) ==",
                  report.scaling_table(results["scaling"])]
    return "\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinycnn bench", description="Run the tinycnn benchmark suite: per-op "
                                "kernels, whole-model steps, a training epoch and scaling, against PyTorch CPU "
                                "when installed. Writes results.json, table.txt and PNG plots to --out.")
    p.add_argument("--quick", action="store_true", help="small grid, finishes in under 2 minutes on 2 cores")
    p.add_argument("--out", default="bench-results", help="output folder (default: ./bench-results)")
    p.add_argument("--only", default=None, help=f"comma-separated sections among {','.join(SECTIONS)}")
    p.add_argument("--ops", default=None, help="comma-separated op names to run in the ops section")
    p.add_argument("--threads", type=int, default=None, help="threads for BLAS, Numba and PyTorch alike")
    p.add_argument("--data-dir", default=None, help="folder holding pneumoniamnist.npz (else $TINYCNN_DATA_DIR)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv=None) -> int:
    """Command-line entry point (`tinycnn bench ...`); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        sections = tuple(s.strip() for s in args.only.split(",")) if args.only else SECTIONS
        ops = [s.strip() for s in args.ops.split(",")] if args.ops else None
        run(args.quick, args.out, sections=sections, ops=ops, threads=args.threads, data_dir=args.data_dir,
            use_torch=not args.no_torch, quiet=args.quiet, plots=not args.no_plots,
            command=" ".join(["tinycnn", "bench"] + argv))
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"tinycnn bench: error: {exc}", file=sys.stderr)
        return 2
    return 0
