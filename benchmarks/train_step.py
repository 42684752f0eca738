"""Time the reference CNN's training and inference step: tinycnn vs PyTorch CPU, one worker process each.

    python benchmarks/train_step.py                   # threads 1 and 2, 10 timed repetitions each
    python benchmarks/train_step.py --model resnet18 --reps 5 --lead 0   # ResNet-18 (28x28 form)
    python benchmarks/train_step.py --threads 2 --reps 20 --json out.json
    python benchmarks/train_step.py --same-process    # the old way: both libraries in one process

For each thread count the parent starts two worker processes with the same thread settings
(OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS in the environment, then torch.set_num_threads,
numba.set_num_threads and, when installed, threadpoolctl): one imports only tinycnn (its steps and
the GEMM floor), the other only PyTorch (its steps, default and channels_last layout). So neither
library's thread pools exist in the other's process, and tinycnn's worker lets tinycnn start Numba's
pool (idle workers sleep) before limiting it, as a training run does. (In one process PyTorch's OpenMP workers, which
spin after each parallel region, took cores from tinycnn's next kernels: a tinycnn step took 46-50 ms
alone but 59-72 ms next to PyTorch, 2 threads.)

The parent drives the repetitions: it asks one worker for one timed sample of one variant (by default
one untimed step and then the timed one, `--lead 1`, so the timed step finds its threads and caches as
in a training loop, not after a long idle wait), waits for the answer, then waits until that worker's
threads have gone idle, then asks the next. "Idle" is measured, not guessed: the parent sums the on-CPU
time of every thread of the worker (/proc/PID/task/*/schedstat) and waits until it grows by less than 2%
of a core over a 20 ms window (at least --gap seconds, default 0.1; at most 2 s; on systems without
/proc it just sleeps --gap). The waits are reported (median per library). Measured on the 2-core machine
with 2 threads: PyTorch's workers kept running for up to ~26 ms after a step returned (GNU OpenMP's
spin-wait), tinycnn's for ~5-10 ms (its idle OpenBLAS and OpenMP workers sleep, tinycnn/_threads.py);
the Intel OpenMP default of 200 ms (KMP_BLOCKTIME) does not apply, as PyTorch's CPU wheel uses GNU
OpenMP. Each round runs every variant once, in an order rotated by one from round to round, so every
variant goes first in turn and a slow moment of a shared machine hits all of them alike. Reported:
median, spread (min..max and interquartile range) and tinycnn / reference ratios of the medians.

Before anything is timed both workers compute the eval logits of the same batch from the same
weights (drawn here with NumPy: PyTorch's default U(+-1/sqrt(fan_in)) initialisation), and the run
stops if they disagree.

Variants: a training step (zero_grad, forward, softmax cross-entropy, backward, Adam) for tinycnn,
torch and torch with channels_last memory format; an inference step (forward under no_grad, eval
mode) for the same three; and the GEMM floor of each step: the very GEMMs tinycnn's step runs
(recorded from one real step with `tinycnn.backends.cpu_numpy.record_gemms`: shapes, transposed
operands, output buffers) replayed alone on preallocated operands, in the tinycnn worker; and the same
GEMMs replayed through `torch.matmul` in the PyTorch worker (`gemm_floor_torch`: MKL in PyTorch's x86
wheels), which tells whether another BLAS would lower the floor.
`tinycnn / gemm floor` <= 2 means at least half of the step is BLAS time. (The reference CNN's
first convolution, C_in = 1, runs as direct Numba kernels, not as a GEMM, so its time counts as
non-GEMM time.) Batch 128 of 1x28x28 float32 images.

`--model resnet18`: the same for ResNet-18 in its MedMNIST 28x28 form (`tinycnn.models`, PyTorch twin
from `tinycnn.bench.torch_models`, tinycnn's seeded initial weights in both), the issue's
"ResNet-18 training step <= 1.0x PyTorch" target. Its steps take seconds, so `--lead 0` suffices.

`--same-process` keeps the previous harness's setting (one process holding both libraries, its
variants still driven one sample at a time with the idle waits) for comparison.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
KINDS = ("train", "infer")
# every variant, in the order of one round (before rotation) and of the report
VARIANTS = tuple(f"{kind}/{impl}" for kind in KINDS
                 for impl in ("tinycnn", "torch", "torch_channels_last", "gemm_floor", "gemm_floor_torch"))
# which worker runs a variant
LIBRARY = {"tinycnn": "tinycnn", "gemm_floor": "tinycnn", "torch": "torch", "torch_channels_last": "torch",
           "gemm_floor_torch": "torch"}

# the reference CNN's parameters (benchmarks/reference_cnn.py): state_dict name -> shape
PARAM_SHAPES = {"0.weight": (32, 1, 3, 3), "0.bias": (32,), "3.weight": (64, 32, 3, 3), "3.bias": (64,),
                "7.weight": (128, 3136), "7.bias": (128,), "9.weight": (2, 128), "9.bias": (2,)}


MODELS = ("reference", "resnet18")
# eval logits must agree this closely before anything is timed (ResNet-18: 20 layers of float32 sums)
LOGIT_TOL = {"reference": dict(rtol=1e-4, atol=1e-5), "resnet18": dict(rtol=1e-3, atol=1e-4)}


def model_weights(model="reference", seed=0):
    """The starting weights of `model` (name -> float32 array), for both libraries."""
    if model == "reference":
        return reference_weights(seed)
    from tinycnn.bench.endtoend import reference_weights as seeded_weights
    return seeded_weights(model, 1, 2, 28, seed=seed)


def _tinycnn_model(model):
    """A fresh tinycnn `model` (its weights are loaded by the caller)."""
    if model == "reference":
        from benchmarks.reference_cnn import tinycnn_model
        return tinycnn_model()
    from tinycnn import models
    return models.get_model(model, 1, 2)


def _torch_model(model, weights, channels_last):
    """The PyTorch twin of `model` holding `weights`, in the default or channels_last memory format."""
    import torch
    if model == "reference":
        from benchmarks.reference_cnn import torch_model
        m = torch_model(channels_last=channels_last)
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
        return m
    from tinycnn.bench.torch_models import build_torch_model, load_tinycnn_weights
    m = build_torch_model(model, 1, 2)
    load_tinycnn_weights(m, weights)
    return m.to(memory_format=torch.channels_last) if channels_last else m


def reference_weights(seed=0):
    """name -> float32 array: PyTorch's default init U(+-1/sqrt(fan_in)) for weights and biases, from NumPy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in PARAM_SHAPES.items():
        fan_in = int(np.prod(PARAM_SHAPES[name.replace("bias", "weight")][1:]))
        bound = 1.0 / np.sqrt(fan_in)
        out[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return out


def _set_threads(n: int, libraries) -> str:
    """Limit the thread pools of the loaded libraries to n; returns how BLAS was limited."""
    if "torch" in libraries:
        import torch
        torch.set_num_threads(n)
    if "tinycnn" in libraries:
        import numba

        from tinycnn import _threads
        # start Numba's thread pool the way tinycnn's kernels do (idle workers sleep, tinycnn/_threads.py)
        # before limiting it: numba.set_num_threads would otherwise start it first, with GNU OpenMP's
        # spinning idle workers, which took the second core from every following 2-thread GEMM
        _threads.start_numba_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "env vars"
    threadpool_limits(n)
    return "threadpoolctl"


def gemm_replay(calls, seed=0, library="tinycnn"):
    """A zero-argument callable that runs the recorded GEMMs in order on operands of the same shapes,
    dtypes and memory layouts (random values, allocated once), and their GFLOP total.

    `calls`: `GemmCall`s or their `_asdict()` dicts. library "tinycnn": through tinycnn's CPU `matmul`
    (NumPy's BLAS, OpenBLAS in NumPy's wheels); "torch": the same operands through `torch.matmul`
    (MKL in PyTorch's x86 wheels), transposed operands as transposed views there too.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    calls = [c._asdict() if hasattr(c, "_asdict") else dict(c) for c in calls]
    ops = []
    for c in calls:
        count = int(c.get("count", 1))

        def operand(rows, cols, transposed):
            a = rng.standard_normal((count, cols, rows) if transposed else (count, rows, cols)).astype(c["dtype"])
            a = a.transpose(0, 2, 1) if transposed else a
            return a[0] if count == 1 else a
        a, b = operand(c["m"], c["k"], c["a_t"]), operand(c["k"], c["n"], c["b_t"])
        out = np.empty(((count,) if count > 1 else ()) + (c["m"], c["n"]), dtype=c["dtype"]) if c["has_out"] else None
        ops.append((a, b, out, bool(c.get("spread", False))))
    if library == "torch":
        import torch

        matmul = torch.matmul
        ops = [(torch.from_numpy(a), torch.from_numpy(b), None if out is None else torch.from_numpy(out), False)
               for a, b, out, _ in ops]
    else:
        from tinycnn.backends.cpu_numpy import matmul

    # consecutive spread calls (one Winograd convolution's blocks) run as one group, side by side
    groups = []
    for op in ops:
        if op[3] and groups and groups[-1][0]:
            groups[-1][1].append(op)
        else:
            groups.append((op[3], [op]))

    if any(spread for spread, _ in groups):
        from tinycnn.backends.cpu_numba_winograd import run_spread

    def product(a, b, out):
        return matmul(a, b) if out is None else matmul(a, b, out=out)

    def run():
        """The products, in order (so a test can compare the two libraries' replays)."""
        results = []
        for spread, group in groups:
            if spread:
                run_spread(lambda lo, hi: [product(*op[:3]) for op in group[lo:hi]],
                           [(i, i + 1) for i in range(len(group))])
                results.extend(op[2] for op in group)
            else:
                results.extend(product(*op[:3]) for op in group)
        return results
    return run, sum(2 * c["m"] * c["k"] * c["n"] * int(c.get("count", 1)) for c in calls) / 1e9


def _tinycnn_variants(batch, weights, model_name="reference"):
    """(name -> (callable, training), eval logits, GEMM info) for tinycnn and its GEMM floor."""
    import tinycnn
    import tinycnn.nn.functional as F
    from benchmarks.reference_cnn import random_batch
    from tinycnn.backends.cpu_numpy import record_gemms

    model = _tinycnn_model(model_name)
    model.load_state_dict(weights)
    x, y = random_batch(batch, seed=0)
    tx, ty = tinycnn.tensor(x), tinycnn.tensor(y)
    opt = tinycnn.optim.Adam(model.parameters(), lr=1e-3)

    def train():
        opt.zero_grad()
        loss = F.cross_entropy(model(tx), ty)
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        with tinycnn.no_grad():
            return model(tx).numpy()

    model.eval()
    logits = infer()
    model.train()
    with record_gemms() as train_calls:
        train()
    model.eval()
    with record_gemms() as infer_calls:
        infer()
    gemm_train, train_gflop = gemm_replay(train_calls)
    gemm_infer, infer_gflop = gemm_replay(infer_calls)
    variants = {"train/tinycnn": (train, True, model), "infer/tinycnn": (infer, False, model),
                "train/gemm_floor": (gemm_train, True, None), "infer/gemm_floor": (gemm_infer, False, None)}
    gemms = {"train": [c._asdict() for c in train_calls], "infer": [c._asdict() for c in infer_calls],
             "train_gflop": train_gflop, "infer_gflop": infer_gflop}
    return variants, logits, gemms


def _torch_variants(batch, weights, gemms=None, model_name="reference"):
    """(name -> (callable, training), eval logits) for PyTorch, default and channels_last layout, and
    tinycnn's GEMM floor replayed through torch.matmul (`gemms`: the tinycnn worker's GEMM lists)."""
    import torch

    from benchmarks.reference_cnn import random_batch

    x, y = random_batch(batch, seed=0)
    py = torch.tensor(y)
    variants = {}
    logits = None
    for suffix, cl in (("torch", False), ("torch_channels_last", True)):
        model = _torch_model(model_name, weights, cl)
        px = torch.tensor(x)
        if cl:
            px = px.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train(model=model, opt=opt, px=px):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(px), py)
            loss.backward()
            opt.step()
            return loss.item()

        def infer(model=model, px=px):
            with torch.no_grad():
                return model(px).numpy()

        model.eval()
        if logits is None:
            logits = infer()
        variants[f"train/{suffix}"] = (train, True, model)
        variants[f"infer/{suffix}"] = (infer, False, model)
    if gemms is not None:
        for kind in KINDS:
            variants[f"{kind}/gemm_floor_torch"] = (gemm_replay(gemms[kind], library="torch")[0], False, None)
    return variants, logits, None


def _worker(library: str, threads: int, batch: int, weights_path: str, gemms_path: str | None = None,
            model_name: str = "reference") -> int:
    """Serve timing requests on stdin/stdout: one variant name per line in, one JSON line out."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol
    sys.path.insert(0, str(ROOT))
    libraries = ("tinycnn", "torch") if library == "both" else (library,)
    if "tinycnn" in libraries:
        # tinycnn first, as in a user's script or `tinycnn train`: it sets how NumPy's OpenBLAS threads
        # wait before NumPy loads (tinycnn/_threads.py)
        import tinycnn  # noqa: F401, PLC0415
    import numpy as np

    limiter = _set_threads(threads, libraries)
    weights = dict(np.load(weights_path))
    variants, logits, gemms = {}, {}, None
    if "tinycnn" in libraries:
        v, logits["tinycnn"], gemms = _tinycnn_variants(batch, weights, model_name)
        variants.update(v)
    if "torch" in libraries:
        # the GEMMs tinycnn recorded: in this process, or in the tinycnn worker, which started first
        recorded = gemms if gemms is not None or not gemms_path else json.loads(Path(gemms_path).read_text())
        v, logits["torch"], _ = _torch_variants(batch, weights, recorded, model_name)
        variants.update(v)
    hello = {"variants": sorted(variants), "limiter": limiter, "gemms": gemms, "pid": os.getpid(),
             "logits": {k: v.tolist() for k, v in logits.items()},
             "modules": sorted(m for m in ("torch", "tinycnn", "numba") if m in sys.modules),
             "thread_settings": sys.modules["tinycnn._threads"].applied() if "tinycnn" in libraries else {}}
    proto.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        name, _, lead = line.strip().partition(" ")
        if name == "quit":
            break
        fn, training, model = variants[name]
        if model is not None:
            model.train(training)
        for _ in range(int(lead or 0)):     # untimed lead-in steps: threads and caches as in a loop
            fn()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        proto.write(json.dumps({"dt": dt}) + "\n")
    return 0


# --------------------------------------------------------------------------- parent side
def _cpu_ns(pid: int):
    """Nanoseconds on CPU of all threads of process pid so far, or None where /proc cannot tell."""
    total = 0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total if found else None


def wait_idle(pid: int, min_s: float, max_s: float = 2.0, window_s: float = 0.02, busy_frac: float = 0.02,
              cpu_ns=_cpu_ns) -> float:
    """Sleep until process pid's threads use less than busy_frac of a core over a window_s window
    (at least min_s, at most max_s seconds); returns the seconds waited. Without /proc: sleeps min_s."""
    t0 = time.perf_counter()
    prev = cpu_ns(pid)
    if prev is None:
        time.sleep(min_s)
        return time.perf_counter() - t0
    while True:
        time.sleep(window_s)
        now = cpu_ns(pid)
        waited = time.perf_counter() - t0
        if now is None or (now - prev < busy_frac * window_s * 1e9 and waited >= min_s) or waited >= max_s:
            return waited
        prev = now


class _Worker:
    def __init__(self, library: str, threads: int, batch: int, weights_path: str, gemms_path: str | None = None,
                 model: str = "reference"):
        env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
        self.library = library
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", library, "--threads", str(threads), "--batch", str(batch),
             "--weights", weights_path, "--model", model] + (["--gemms", gemms_path] if gemms_path else []),
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.hello = None

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.library} worker ended (exit code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def ready(self):
        self.hello = self._read()
        return self.hello

    def sample(self, name: str, lead: int = 0) -> float:
        self.proc.stdin.write(f"{name} {lead}\n")
        return self._read()["dt"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.wait(timeout=30)


def _measure(threads: int, reps: int, warmup: int, batch: int, gap: float, same_process: bool,
             lead: int = 1, model: str = "reference") -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        weights_path = os.path.join(tmp, "weights.npz")
        np.savez(weights_path, **model_weights(model, 0))
        libs = ("both",) if same_process else ("tinycnn", "torch")
        gemms_path = os.path.join(tmp, "gemms.json")
        workers, hellos = {}, {}
        try:
            for lib in libs:    # in order: the torch worker replays the GEMMs the tinycnn worker recorded
                workers[lib] = _Worker(lib, threads, batch, weights_path,
                                       gemms_path if lib == "torch" else None, model)
                hellos[lib] = workers[lib].ready()
                if hellos[lib]["gemms"] is not None:
                    Path(gemms_path).write_text(json.dumps(hellos[lib]["gemms"]))
            owner = {}
            for lib, h in hellos.items():
                for name in h["variants"]:
                    owner[name] = workers[lib]
            missing = set(VARIANTS) - set(owner)
            if missing:
                raise RuntimeError(f"no worker runs {sorted(missing)}")
            logits = {}
            for h in hellos.values():
                logits.update({k: np.asarray(v) for k, v in h["logits"].items()})
            diff = float(np.max(np.abs(logits["tinycnn"] - logits["torch"])))
            if not np.allclose(logits["tinycnn"], logits["torch"], **LOGIT_TOL[model]):
                raise RuntimeError(f"tinycnn and torch eval logits differ (max |diff| {diff:.3g}): not timing")
            times = {name: [] for name in VARIANTS}
            idle = {lib: [] for lib in libs}
            order = list(VARIANTS)
            for rnd in range(warmup + reps):
                k = rnd % len(order)
                for name in order[k:] + order[:k]:
                    w = owner[name]
                    dt = w.sample(name, lead)
                    idle[w.library].append(wait_idle(w.proc.pid, gap))
                    if rnd >= warmup:
                        times[name].append(dt)
        finally:
            for w in workers.values():
                w.close()
    first = next(iter(hellos.values()))
    gemms = next(h["gemms"] for h in hellos.values() if h["gemms"] is not None)
    return {"model": model, "threads": threads, "limiter": first["limiter"], "batch": batch, "reps": reps,
            "lead": lead, "times": times, "gemms": gemms,
            "mode": "same process" if same_process else "one worker process per library",
            "worker_modules": {lib: h["modules"] for lib, h in hellos.items()},
            "thread_settings": {lib: h["thread_settings"] for lib, h in hellos.items()},
            "logits_max_abs_diff": diff,
            "idle_wait_s": {lib: (statistics.median(v) if v else None) for lib, v in idle.items()},
            "idle_wait_max_s": {lib: (max(v) if v else None) for lib, v in idle.items()}}


def _summary(ts):
    q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) >= 2 else [ts[0]] * 3
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "q1": q[0], "q3": q[2]}


def _report(result: dict) -> dict:
    rows = {name: _summary(ts) for name, ts in result["times"].items()}
    waits = ", ".join(f"{lib} {1e3 * m:.0f} ms (max {1e3 * result['idle_wait_max_s'][lib]:.0f})"
                      for lib, m in result["idle_wait_s"].items())
    print(f"\n== {result.get('model', 'reference')} CNN, threads={result['threads']} (BLAS limited by "
          f"{result['limiter']}), batch {result['batch']}, {result['reps']} timed reps (each after "
          f"{result['lead']} untimed), {result['mode']}, interleaved ==")
    print(f"idle wait after a sample (median): {waits}; eval logits max |tinycnn - torch| "
          f"{result['logits_max_abs_diff']:.2g}")
    print(f"{'variant':28s} {'median ms':>10s} {'min..max ms':>18s} {'IQR ms':>16s}")
    for name, s in rows.items():
        print(f"{name:28s} {s['median'] * 1e3:10.1f} {s['min'] * 1e3:8.1f}..{s['max'] * 1e3:<8.1f} "
              f"{s['q1'] * 1e3:7.1f}..{s['q3'] * 1e3:<7.1f}")
    ratios = {}
    for kind in KINDS:
        ours = rows[f"{kind}/tinycnn"]["median"]
        for ref in ("torch", "torch_channels_last", "gemm_floor"):
            ratios[f"{kind}: tinycnn / {ref.replace('_', ' ')}"] = ours / rows[f"{kind}/{ref}"]["median"]
        ratios[f"{kind}: gemm floor / same GEMMs in torch"] = (rows[f"{kind}/gemm_floor"]["median"]
                                                            / rows[f"{kind}/gemm_floor_torch"]["median"])
    for k, v in ratios.items():
        print(f"ratio {k:38s} {v:6.2f}x")
    gemms = result["gemms"]
    for kind in KINDS:
        gflop = gemms[f"{kind}_gflop"]
        print(f"gemm floor {kind}: {len(gemms[kind])} GEMMs, {gflop:.3f} GFLOP, "
              f"{gflop / rows[f'{kind}/gemm_floor']['median']:.0f} GFLOP/s through NumPy's BLAS, "
              f"{gflop / rows[f'{kind}/gemm_floor_torch']['median']:.0f} GFLOP/s through torch.matmul")
    out = {k: v for k, v in result.items() if k != "times"}
    out.update(summary=rows, ratios=ratios, times=result["times"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per variant (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--model", choices=MODELS, default="reference",
                   help="the reference CNN (default) or ResNet-18 in its 28x28 form")
    p.add_argument("--gap", type=float, default=0.1,
                   help="least seconds between two samples; the wait goes on until the last worker is idle")
    p.add_argument("--lead", type=int, default=1,
                   help="untimed steps run right before each timed one, in the same request (default 1)")
    p.add_argument("--same-process", action="store_true",
                   help="both libraries in one worker process (the previous harness's setting)")
    p.add_argument("--json", help="also write all timings to this JSON file")
    p.add_argument("--worker", choices=("tinycnn", "torch", "both"), help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--gemms", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or args.gap < 0 or args.lead < 0:
        p.error(f"--reps must be >= 1, --warmup, --gap and --lead >= 0, got {args.reps}, {args.warmup}, "
                f"{args.gap}, {args.lead}")

    if args.worker is not None:
        return _worker(args.worker, int(args.threads), args.batch, args.weights, args.gemms, args.model)

    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    sys.path.insert(0, str(ROOT))
    from tinycnn.bench.machine import cpu_label   # the CPU's name alone hides whether it has AVX-512
    print(f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, {cpu_label()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    out = [_report(_measure(n, args.reps, args.warmup, args.batch, args.gap, args.same_process, args.lead,
                            args.model))
           for n in threads]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
