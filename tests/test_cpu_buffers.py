"""Recycled CPU output buffers (tinycnn/backends/cpu_buffers.py) and the thread-pool settings of
tinycnn/_threads.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinycnn.backends import cpu_buffers
from tinycnn.backends.cpu_buffers import _Pool

pytestmark = pytest.mark.skipif(not cpu_buffers._ENABLED, reason="the pool is off on Python 3.14+")

SHAPE = (64, 64, 8)  # 128 KiB of float32: above the pool's small-array limit


def test_buffer_is_reused_only_when_nothing_references_it():
    pool = _Pool(1 << 30)
    a = pool.empty(SHAPE, np.float32)
    b = pool.empty(SHAPE, np.float32)
    assert a is not b and a.shape == SHAPE and a.dtype == np.float32 and a.flags.c_contiguous
    addr = a.ctypes.data
    del a
    c = pool.empty(SHAPE, np.float32)
    assert c.ctypes.data == addr
    assert pool.empty(SHAPE, np.float32).ctypes.data not in (addr, b.ctypes.data)


@pytest.mark.parametrize("holder", ["view", "reshape", "memoryview", "list", "base_of_copy"])
def test_any_reference_keeps_a_buffer_busy(holder):
    pool = _Pool(1 << 30)
    a = pool.empty(SHAPE, np.float32)
    keep = {"view": lambda: a[1:], "reshape": lambda: a.reshape(-1), "memoryview": lambda: memoryview(a),
            "list": lambda: [a], "base_of_copy": lambda: np.asarray(a)}[holder]()
    addr = a.ctypes.data
    del a
    assert pool.empty(SHAPE, np.float32).ctypes.data != addr
    del keep
    assert pool.empty(SHAPE, np.float32).ctypes.data == addr


def test_keys_caps_and_small_arrays():
    pool = _Pool(3 * 64 * 64 * 8 * 4, max_per_shape=2)
    held = [pool.empty(SHAPE, np.float32) for _ in range(3)]
    assert pool.bytes == 2 * held[0].nbytes                   # the third is not pooled (max_per_shape)
    assert pool.empty(SHAPE, np.float64).dtype == np.float64  # a dtype has its own key
    assert pool.empty((3, 4), np.float32).shape == (3, 4)     # small: plain np.empty, not pooled
    assert pool.bytes == 2 * held[0].nbytes
    pool.clear()
    assert pool.bytes == 0 and not pool.free
    off = _Pool(0)
    x = off.empty(SHAPE, np.float32)
    del x
    assert off.bytes == 0


@pytest.mark.parametrize("env,expected", [(None, 512 << 20), ("64", 64 << 20), ("0", 0), ("1.5", int(1.5 * 2**20))])
def test_pool_cap_defaults_to_512_mib_and_reads_the_environment(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("TINYCNN_BUFFER_POOL_MB", raising=False)
    else:
        monkeypatch.setenv("TINYCNN_BUFFER_POOL_MB", env)
    assert cpu_buffers._max_bytes_from_env() == expected


@pytest.mark.parametrize("bad", ["-1", "lots"])
def test_pool_cap_rejects_bad_values(monkeypatch, bad):
    monkeypatch.setenv("TINYCNN_BUFFER_POOL_MB", bad)
    with pytest.raises(ValueError, match="TINYCNN_BUFFER_POOL_MB must be a number of MiB >= 0"):
        cpu_buffers._max_bytes_from_env()


def test_training_outputs_do_not_alias():
    """Two live forward passes get distinct buffers: the first one's activations stay intact."""
    import tinycnn
    from tinycnn import nn

    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    x = tinycnn.tensor(np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32))
    y1 = model(x)
    snapshot = y1.numpy().copy()
    y2 = model(tinycnn.tensor(np.zeros((16, 1, 28, 28), np.float32)))
    np.testing.assert_array_equal(y1.numpy(), snapshot)
    assert not np.shares_memory(y1.numpy(), y2.numpy())


def _probe(env_extra, first="tinycnn"):
    code = (f"import {first}\n"
            "import os, json, numpy as np, tinycnn, tinycnn._threads as t\n"
            "from tinycnn import backends\n"
            "backends.kernel('relu_forward', np.zeros(1))\n"
            "print(json.dumps({'applied': t.applied(), 'env': {k: os.environ.get(k) for k in "
            "('OPENBLAS_THREAD_TIMEOUT', 'OMP_WAIT_POLICY')}}))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "TINYCNN_THREAD_TUNING")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_thread_settings_are_applied_while_the_libraries_load_then_removed():
    r = _probe({})
    assert r["applied"] == {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "passive"}
    assert r["env"] == {"OPENBLAS_THREAD_TIMEOUT": None, "OMP_WAIT_POLICY": None}


def test_thread_settings_respect_the_user():
    r = _probe({"OMP_WAIT_POLICY": "active", "OPENBLAS_THREAD_TIMEOUT": "20"})
    assert r["applied"] == {}
    assert r["env"] == {"OPENBLAS_THREAD_TIMEOUT": "20", "OMP_WAIT_POLICY": "active"}
    assert _probe({"TINYCNN_THREAD_TUNING": "0"})["applied"] == {}


def test_numpy_loaded_first_keeps_its_openblas_defaults():
    assert _probe({}, first="numpy")["applied"] == {"OMP_WAIT_POLICY": "passive"}
