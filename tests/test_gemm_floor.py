"""The GEMM floor of benchmarks/train_step.py replays exactly the GEMMs that the CPU ops run."""
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import backends
from tinycnn.backends import cpu_numba_winograd as WG
from tinycnn.backends.cpu_numpy import GemmCall, matmul, record_gemms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.reference_cnn import random_batch, tinycnn_model  # noqa: E402
from benchmarks.train_step import gemm_replay  # noqa: E402


def _step(model, x, y, train):
    if not train:
        with tinycnn.no_grad():
            model(tinycnn.tensor(x))
        return
    opt = tinycnn.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    F.cross_entropy(model(tinycnn.tensor(x)), tinycnn.tensor(y)).backward()
    opt.step()


def _expected(n, dtype, train):
    """The reference CNN's GEMMs, from the formulas in tinycnn/ops/conv.py, linear.py and cpu_numba.py.

    conv1 (C_in = 1) runs as direct kernels; conv2 (32 -> 64, 3x3, 14x14) is Winograd F(2x2, 3x3):
    per block of samples, 16 products M[k] (64, T) = U[k] (64, 32) @ V[k]^T, T = 49 tiles per sample, with
    V[k] (T, 32) stored channels last (so read transposed); dX is the same with the turned kernel, U[k]
    (32, 64); dU[k] (64, 32) = dM[k] (64, T) @ V[k].
    linear: Y = X W^T; dX = G W; dW = G^T X.
    """
    p = n * 14 * 14
    item = np.dtype(dtype).itemsize

    def g(m, k, nn, a_t=False, b_t=False, out=False):
        return GemmCall(m, k, nn, a_t, b_t, np.dtype(dtype).str, out)

    assert WG.tile_for(32, 64, 14, 14) == 2
    k, tiles = 16, 49

    def winograd(o, c):
        blocks = WG._blocks(n, k * (c + o) * tiles * item, None)
        return [GemmCall(o, c, (hi - lo) * tiles, False, True, np.dtype(dtype).str, True, k, True)
                for lo, hi in blocks]
    fwd = winograd(64, 32) + [g(n, 3136, 128, b_t=True), g(n, 128, 2, b_t=True)]
    if not train:
        return fwd
    # backward runs in reverse order: linear2, linear1 (dX, dW each), then conv2 (dX, dW)
    bwd = [g(n, 2, 128), g(2, n, 128, a_t=True), g(n, 128, 3136), g(128, n, 3136, a_t=True)]
    blocks = WG._blocks(n, k * (32 + 64) * tiles * item, None)
    bwd += winograd(32, 64) + [GemmCall(64, (hi - lo) * tiles, 32, False, False, np.dtype(dtype).str, True, k, True)
                               for lo, hi in blocks]
    return fwd + bwd


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "infer"])
def test_recorded_gemms_are_the_reference_cnn_formulas(dtype, train):
    assert backends.get_cpu_kernels() == "numba"
    model = tinycnn_model(dtype)
    model.train(train)
    x, y = random_batch(8, dtype=dtype)
    with record_gemms() as calls:
        _step(model, x, y, train)
    assert calls == _expected(8, dtype, train)


def test_every_numpy_matmul_of_a_step_is_recorded(monkeypatch):
    """Nothing in the step bypasses the matmul primitive (which the floor would then miss)."""
    seen = []
    real = np.matmul

    def counting(a, b, **kw):
        seen.append((a.shape, b.shape))
        return real(a, b, **kw)
    monkeypatch.setattr(np, "matmul", counting)
    x, y = random_batch(4)
    with record_gemms() as calls:
        _step(tinycnn_model(), x, y, True)
    assert len(seen) == len(calls) == 9
    assert [(c.count, c.m, c.k) if c.count > 1 else (c.m, c.k) for c in calls] == [a for a, _ in seen]


def test_recording_is_off_outside_the_block_and_nests():
    a, b = np.ones((2, 3)), np.ones((3, 4))
    with record_gemms() as outer:
        matmul(a, b)
        with record_gemms() as inner:
            matmul(a.T.copy().T, b)
        matmul(a, b, out=np.empty((2, 4)))
    matmul(a, b)
    assert inner == [GemmCall(2, 3, 4, True, False, "<f8", False)]
    assert [c.has_out for c in outer] == [False, True]


def test_replay_runs_the_recorded_shapes_and_layouts():
    x, y = random_batch(4)
    with record_gemms() as calls:
        _step(tinycnn_model(), x, y, True)
    run, gflop = gemm_replay(calls)
    assert gflop == pytest.approx(sum(c.flops for c in calls) / 1e9)
    with record_gemms() as replayed:
        products = run()
    # Winograd's spread calls may run in worker threads, whose GEMMs this thread's log does not see
    assert [c for c in replayed if c.count == 1] == [c for c in calls if not c.spread]
    assert any(c.spread for c in calls)
    assert [p.shape for p in products] == [((c.count,) if c.count > 1 else ()) + (c.m, c.n) for c in calls]
