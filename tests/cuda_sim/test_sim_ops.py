"""The ops (tinycnn.nn.functional, optim.Adam) driven through the Numba CUDA family, under the simulator.

Dispatch sends only CuPy arrays to a GPU family, so here `backends.kernel` is pointed at the
``numba_cuda`` implementations for NumPy arrays too: the ops then call our GPU kernels exactly as they
would on cuda (same argument conventions: optional weights, gscale, flat optimizer buffers), and the
results are compared with the same ops on the CPU kernels.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinycnn
from tinycnn import backends
from tinycnn.backends import cuda_numba  # noqa: F401 - registers the numba_cuda family
from tinycnn.nn import functional as F

TOL = dict(rtol=2e-5, atol=2e-6)


def run(fn, arrays, seed=1):
    ts = [tinycnn.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    y = fn(*ts)
    y.backward(tinycnn.tensor(np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)))
    return [y.numpy()] + [t.grad.numpy() for t in ts if t.grad is not None]


CASES = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
               [(2, 2, 5, 5), (4, 1, 3, 2), (4,)], {"conv2d_forward", "conv2d_backward_data",
                                                    "conv2d_backward_weight"}),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), [(2, 2, 5, 6)], {"max_pool2d_forward",
                                                                         "max_pool2d_backward"}),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, 1, 1, count_include_pad=False), [(1, 2, 4, 5)],
                   {"avg_pool2d_forward", "avg_pool2d_backward"}),
    "batch_norm": (lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [(3, 2, 2, 2), (2,), (2,)],
                   {"batch_norm_forward_train", "batch_norm_backward"}),
    "cross_entropy": (lambda z: F.cross_entropy(z, tinycnn.tensor(np.array([1, 0, 3])),
                                                weight=tinycnn.tensor(np.array([1.0, 2.0, 0.5, 1.5], np.float32)),
                                                label_smoothing=0.1),
                      [(3, 4)], {"cross_entropy_forward", "cross_entropy_backward"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_through_numba_cuda_family(name, rng, monkeypatch):
    fn, shapes, prims = CASES[name]
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if name == "batch_norm":
        arrays[1] = np.abs(arrays[1]) + 0.5
    want = run(fn, arrays)
    cpu_kernel = backends.kernel
    used = set()

    def kernel(kname, like):
        fn_ = backends._registry.get((kname, "numba_cuda"))
        if fn_ is None:
            return cpu_kernel(kname, like)
        used.add(kname)
        return fn_

    import importlib
    for mod in ("conv", "pool", "norm", "loss"):
        monkeypatch.setattr(importlib.import_module(f"tinycnn.ops.{mod}"), "kernel", kernel)
    got = run(fn, arrays)
    assert prims <= used, f"{name} did not reach {sorted(prims - used)} in the numba_cuda family"
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, **TOL)


def test_dropout_and_adam_through_numba_cuda_family(monkeypatch):
    import importlib

    from tinycnn.backends import cuda_common
    from tinycnn.optim import adam as adam_mod

    monkeypatch.setattr(importlib.import_module("tinycnn.ops.dropout"), "kernel",
                        lambda name, like: backends._registry[(name, "numba_cuda")])
    tinycnn.manual_seed(5)
    x = tinycnn.tensor(np.ones((4, 50), np.float32), requires_grad=True)
    y = F.dropout(x, p=0.5)
    y.sum().backward()
    assert set(np.unique(y.numpy()).tolist()) == {0.0, 2.0}
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())          # d(sum(x * mask)) / dx = mask
    assert cuda_common.philox_seed(5) == int(cuda_common.philox_state(np, "numba")[0])

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
    results = []
    for use_gpu in (False, True):
        if use_gpu:
            monkeypatch.setattr(adam_mod, "kernel", lambda name, like: backends._registry[(name, "numba_cuda")])
        p = tinycnn.nn.Parameter(p0.copy())
        opt = tinycnn.optim.AdamW([p], lr=1e-2, weight_decay=0.1)
        for g in grads:
            p.grad = tinycnn.tensor(g)
            opt.step()
        results.append(p.numpy())
    np.testing.assert_allclose(results[1], results[0], **TOL)
