"""Property tests (hypothesis): broadcasting gradients and extreme values.

For y = op(a, b) with broadcastable shapes, each gradient must have its input's shape and equal
torch's; for add/sub the gradient equals the upstream gradient summed over the broadcast axes
(the unbroadcast-sum identity).
"""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinycnn
from tinycnn.autograd import unbroadcast

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shape_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)
OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


def _reference_unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched (written independently of the engine)."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead else g
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


@SETTINGS
@given(shapes=shape_pairs, op=st.sampled_from(sorted(OPS)), seed=st.integers(0, 2 ** 32 - 1))
def test_broadcast_gradients_match_torch(shapes, op, seed):
    (sa, sb), _ = shapes
    rng = np.random.default_rng(seed)
    a_np = rng.standard_normal(sa)
    b_np = rng.standard_normal(sb)
    b_np = np.where(np.abs(b_np) < 0.3, 0.3, b_np) if op == "div" else b_np
    a, b = tinycnn.tensor(a_np, requires_grad=True), tinycnn.tensor(b_np, requires_grad=True)
    ta, tb = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    y, ty = OPS[op](a, b), OPS[op](ta, tb)
    assert y.shape == tuple(ty.shape)
    g = rng.standard_normal(tuple(ty.shape))
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert a.grad.shape == tuple(sa) and b.grad.shape == tuple(sb)
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), rtol=1e-10, atol=1e-12)


@SETTINGS
@given(shapes=shape_pairs, seed=st.integers(0, 2 ** 32 - 1))
def test_add_gradient_is_unbroadcast_sum(shapes, seed):
    (sa, sb), out_shape = shapes
    rng = np.random.default_rng(seed)
    a = tinycnn.tensor(rng.standard_normal(sa), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(sb), requires_grad=True)
    g = rng.standard_normal(out_shape)
    (a + b).backward(g)
    np.testing.assert_allclose(a.grad.numpy(), _reference_unbroadcast(g, sa), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), _reference_unbroadcast(g, sb), rtol=1e-12)
    # the engine helper agrees with the reference and always lands on the input's shape
    assert unbroadcast(g, sa).shape == tuple(sa)


@SETTINGS
@given(shapes=shape_pairs, seed=st.integers(0, 2 ** 32 - 1))
def test_total_gradient_mass_is_conserved(shapes, seed):
    # sum(d(sum(a + b))/da) equals the number of output elements, however a was broadcast
    (sa, sb), out_shape = shapes
    rng = np.random.default_rng(seed)
    a = tinycnn.tensor(rng.standard_normal(sa), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(sb))
    (a + b).sum().backward()
    assert a.grad.numpy().sum() == int(np.prod(out_shape))


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, width=64)


@SETTINGS
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
                    elements=st.one_of(finite, st.sampled_from([-1e4, 1e4, -745.0, 710.0, 0.0]))))
def test_extreme_values_stay_finite(x):
    t = tinycnn.tensor(x, requires_grad=True)
    s = t.sigmoid()
    sm = t.softmax(-1)
    lsm = t.log_softmax(-1)
    assert np.all(np.isfinite(s.numpy())) and np.all((s.numpy() >= 0) & (s.numpy() <= 1))
    np.testing.assert_allclose(sm.numpy().sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.isfinite(lsm.numpy()))
    np.testing.assert_allclose(lsm.numpy(), torch.log_softmax(torch.tensor(x), -1).numpy(), rtol=1e-12, atol=1e-9)
    (s.sum() + sm.sum() + lsm.sum() + t.relu().sum() + t.max()).backward()
    assert np.all(np.isfinite(t.grad.numpy()))


@SETTINGS
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                    elements=st.floats(float(np.float32(-3e38)), float(np.float32(3e38)), width=32,
                                                      allow_nan=False, allow_infinity=False)))
def test_float32_reductions_keep_dtype_and_match_numpy(x):
    t = tinycnn.tensor(x)
    assert t.dtype == np.float32
    assert t.max().item() == x.max()
    assert t.max(0)[0].dtype == np.float32
    np.testing.assert_array_equal(t.argmax(-1).numpy(), torch.tensor(x).argmax(-1).numpy())
