import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinycnn
import tinycnn.nn.functional as F
from _nn_compare import assert_close, backward_both, pair

TF = torch.nn.functional

ELEMENTWISE = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, negative_slope=0.2), lambda x: TF.leaky_relu(x, negative_slope=0.2)),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
}


def _inputs(shape, dtype, rng, big=False):
    a = rng.standard_normal(shape) * (30 if big else 2)
    a.reshape(-1)[0] = 0.0  # the kink of relu / leaky_relu: both define the gradient there as the x < 0 side
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4, 5)], ids=["1d", "2d", "4d"])
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_elementwise_activation_matches_torch(name, shape, dtype, rng):
    ours, theirs = ELEMENTWISE[name]
    x, xt = pair(_inputs(shape, dtype, rng))
    y, yt = ours(x), theirs(xt)
    assert_close(y, yt, dtype, "y")
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dx")


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_saturating_activations_stay_finite_for_huge_inputs(name, dtype, rng):
    ours, theirs = ELEMENTWISE[name]
    a = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=dtype)
    x, xt = pair(a)
    y, yt = ours(x), theirs(xt)
    assert np.all(np.isfinite(y.numpy()))
    assert_close(y, yt, dtype, "y")
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dx")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,dim", [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -1), ((2, 3, 4), 1)])
@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
def test_softmax_family_matches_torch(which, shape, dim, dtype, rng):
    ours, theirs = getattr(F, which), getattr(TF, which)
    x, xt = pair(_inputs(shape, dtype, rng, big=True))
    y, yt = ours(x, dim), theirs(xt, dim=dim)
    assert_close(y, yt, dtype, "y", scale=10)
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dx", scale=10)


@pytest.mark.parametrize("name", ["relu", "leaky_relu_0.2", "sigmoid", "tanh", "softmax", "log_softmax"])
def test_activation_gradcheck(name, rng):
    # away from relu's kink, where central differences are not defined
    a = rng.standard_normal((3, 4))
    a[np.abs(a) < 0.05] = 0.3
    x = tinycnn.tensor(a, requires_grad=True)
    fn = {"softmax": lambda t: F.softmax(t, 1), "log_softmax": lambda t: F.log_softmax(t, 0)}.get(name)
    assert tinycnn.gradcheck(fn or ELEMENTWISE[name][0], [x])


finite_logits = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                           elements=st.floats(-1e4, 1e4, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(finite_logits)
def test_softmax_rows_sum_to_one(a):
    for dtype in (np.float64, np.float32):
        p = F.softmax(tinycnn.tensor(a.astype(dtype)), dim=1).numpy()
        assert np.all(np.isfinite(p)) and np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12 if dtype == np.float64 else 1e-5)


@settings(max_examples=60, deadline=None)
@given(finite_logits, st.floats(-1e4, 1e4))
def test_log_softmax_stable_and_shift_invariant(a, shift):
    lp = F.log_softmax(tinycnn.tensor(a), dim=1).numpy()
    assert np.all(np.isfinite(lp)) and np.all(lp <= 0)
    # the max-shifted form: log_softmax(x + c) = log_softmax(x), and logsumexp of the result is 0
    lp2 = F.log_softmax(tinycnn.tensor(a + shift), dim=1).numpy()
    np.testing.assert_allclose(lp2, lp, atol=1e-8 * (1 + abs(shift)))
    np.testing.assert_allclose(np.log(np.exp(lp).sum(axis=1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(lp, TF.log_softmax(torch.tensor(a), dim=1).numpy(), rtol=1e-10, atol=1e-9)


def test_activation_bad_inputs_name_the_argument(rng):
    with pytest.raises(TypeError, match=r"input must be a tinycnn Tensor, got ndarray"):
        F.relu(rng.standard_normal(3))
    with pytest.raises(ValueError, match=r"dim=2 is out of range .* 2 dimensions"):
        F.softmax(tinycnn.tensor(rng.standard_normal((2, 3))), dim=2)


@pytest.mark.parametrize("slope", [0.2, np.float64(0.2), np.float32(0.2)], ids=["float", "np.float64", "np.float32"])
def test_leaky_relu_keeps_float32_for_any_slope_type(slope):
    x = tinycnn.tensor(np.array([-1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = F.leaky_relu(x, slope)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), [-0.2, 2.0], rtol=1e-6)
