"""tinycnn/_threads.py: keep_apart() keeps the pools' worker threads off the calling thread's CPU.

Each case runs in a fresh interpreter, because keep_apart changes the CPU affinity of every thread of
its process (pytest's own included)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

needs_two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="keep_apart acts only on Linux with 2 or more allowed CPUs")

PRELUDE = """
import os, threading, time
import tinycnn
from tinycnn import _threads

allowed = set(os.sched_getaffinity(0))
stop = threading.Event()
ids = []

def start_thread():
    ready = threading.Event()
    def run():
        ids.append(threading.get_native_id()); ready.set(); stop.wait()
    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    return ids[-1]

def affinity(tid):
    return set(os.sched_getaffinity(tid))

me = threading.get_native_id()
"""


def check(body: str, **env) -> None:
    """Run `body` (asserts) after the prelude in a fresh interpreter; it must reach its end."""
    assert run_case(textwrap.dedent(body) + '\nprint("ok")\n', **env).strip().splitlines()[-1] == "ok"


def run_case(body: str, **env) -> str:
    code = PRELUDE + textwrap.dedent(body)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@needs_two_cpus
def test_workers_leave_the_callers_cpu_and_the_caller_keeps_every_cpu():
    check("""
        worker = start_thread()
        _threads.keep_apart()
        cpu = _threads._apart.cpu
        assert cpu in allowed, cpu
        assert affinity(worker) == allowed - {cpu}, (affinity(worker), allowed, cpu)
        assert affinity(me) == allowed
    """)


@needs_two_cpus
def test_follows_the_caller_to_another_cpu_and_takes_in_new_threads():
    check("""
        worker = start_thread()
        _threads.keep_apart()
        first = _threads._apart.cpu
        other = min(allowed - {first})
        os.sched_setaffinity(0, {other})          # the caller moves (the scheduler would do this)
        _threads.keep_apart()
        assert _threads._apart.cpu == other
        assert affinity(worker) == allowed - {other}
        late = start_thread()                      # started after the last look
        assert affinity(late) == {other}           # it inherited the caller's mask; not moved yet
        for _ in range(_threads._LOOK_EVERY):
            _threads.keep_apart()
        assert affinity(late) == allowed - {other}
    """)


@needs_two_cpus
def test_a_moved_thread_that_starts_calling_runs_anywhere_again():
    check("""
        _threads.keep_apart()
        result = {}
        def call():
            result["before"] = affinity(0)
            _threads.keep_apart()
            result["after"] = affinity(0)
            result["main"] = affinity(me)
            result["cpu"] = _threads._apart.cpu
        t = threading.Thread(target=call)
        for _ in range(_threads._LOOK_EVERY):      # a thread that exists at a look is moved
            _threads.keep_apart()
        t.start(); t.join()
        assert result["after"] == allowed, result
        assert result["main"] == allowed - {result["cpu"]}, result
    """)


@needs_two_cpus
def test_thread_tuning_off_leaves_affinities_alone():
    check("""
        worker = start_thread()
        _threads.keep_apart()
        assert _threads._apart.on is False
        assert affinity(worker) == allowed and affinity(me) == allowed
    """, TINYCNN_THREAD_TUNING="0")


@needs_two_cpus
def test_a_two_thread_conv_moves_the_workers_and_gives_the_same_result():
    """The hook runs inside the kernels (GEMMs, Numba launches, Winograd blocks); results do not depend on it."""
    body = """
        import hashlib
        import numpy as np, numba
        import tinycnn.nn.functional as F
        numba.set_num_threads(2)
        x = tinycnn.tensor(np.random.default_rng(0).standard_normal((16, 8, 12, 12)).astype(np.float32))
        w = tinycnn.tensor(np.random.default_rng(1).standard_normal((16, 8, 3, 3)).astype(np.float32))
        worker = start_thread()
        y = F.conv2d(x, w, padding=1).numpy()
        if _threads._apart.on:
            assert _threads._apart.calls > 0
            assert affinity(worker) == allowed - {_threads._apart.cpu}
        print(hashlib.sha256(y.tobytes()).hexdigest())
    """
    assert run_case(body) == run_case(body, TINYCNN_THREAD_TUNING="0")


@needs_two_cpus
def test_tinycnns_own_workers_do_not_take_over_the_placement():
    """GEMMs that worker threads run for the caller (run_spread) leave the caller's placement as it was."""
    check("""
        import numba, numpy as np
        from tinycnn.backends.cpu_numba_winograd import run_spread
        from tinycnn.backends.cpu_numpy import matmul
        numba.set_num_threads(2)
        _threads.keep_apart()
        caller, cpu = _threads._apart.caller, _threads._apart.cpu
        a = np.ones((64, 64), np.float32)
        seen = []
        both = threading.Barrier(2, timeout=10)
        def job(lo, hi):
            seen.append(threading.get_native_id())
            if lo < 2:
                both.wait()          # the first two blocks: one on each thread
            matmul(a, a)
        run_spread(job, [(i, i + 1) for i in range(8)])
        assert len(set(seen)) == 2, seen
        assert _threads._apart.caller == caller == me and affinity(me) == allowed
    """)


def test_off_on_machines_with_many_cpus(monkeypatch):
    """Measured on 2 CPUs; above _APART_MAX_CPUS allowed CPUs keep_apart does nothing (and moves nobody)."""
    from tinycnn import _threads
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("Linux only")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(_threads._APART_MAX_CPUS + 1)))
    monkeypatch.setattr(_threads, "_apart", _threads._Apart())
    moved = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda *a: moved.append(a))
    _threads.keep_apart()
    assert _threads._apart.on is False and moved == []
