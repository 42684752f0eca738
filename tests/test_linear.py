import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import tinycnn
import tinycnn.nn.functional as F
from _nn_compare import assert_close, backward_both, pair


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape,out_f", [((4, 3), 5), ((1, 1), 1), ((2, 3, 7), 4), ((6,), 2), ((2, 1, 3, 5), 3)],
                         ids=["2d", "batch1-single", "3d", "1d", "4d"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_forward_and_grads_match_torch(dtype, x_shape, out_f, bias, rng):
    in_f = x_shape[-1]
    x, xt = pair(rng.standard_normal(x_shape).astype(dtype))
    w, wt = pair(rng.standard_normal((out_f, in_f)).astype(dtype))
    b, bt = pair(rng.standard_normal(out_f).astype(dtype)) if bias else (None, None)
    y = F.linear(x, w, b)
    yt = torch.nn.functional.linear(xt, wt, bt)
    assert_close(y, yt, dtype, "y")
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dx")
    assert_close(w.grad, wt.grad, dtype, "dw")
    if bias:
        assert_close(b.grad, bt.grad, dtype, "db")


def test_linear_only_needed_grads(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 4)))
    w = tinycnn.tensor(rng.standard_normal((2, 4)), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), np.tile(x.numpy().sum(0), (2, 1)), rtol=1e-12)


@pytest.mark.parametrize("x_shape", [(3, 4), (2, 2, 4), (4,)])
def test_linear_gradcheck(x_shape, rng):
    x = tinycnn.tensor(rng.standard_normal(x_shape), requires_grad=True)
    w = tinycnn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(3), requires_grad=True)
    assert tinycnn.gradcheck(F.linear, [x, w, b])


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=3), in_f=st.integers(1, 4), out_f=st.integers(1, 4))
def test_linear_leading_dims_broadcast_like_torch(lead, in_f, out_f):
    # property: any number of leading axes is a batch; bias and weight grads sum over all of them
    rng = np.random.default_rng(len(lead) * 100 + in_f * 10 + out_f)
    x, xt = pair(rng.standard_normal(tuple(lead) + (in_f,)))
    w, wt = pair(rng.standard_normal((out_f, in_f)))
    b, bt = pair(rng.standard_normal(out_f))
    y = F.linear(x, w, b)
    yt = torch.nn.functional.linear(xt, wt, bt)
    assert_close(y, yt, np.float64, "y")
    backward_both(y, yt, rng)
    for ours, theirs, name in ((x, xt, "dx"), (w, wt, "dw"), (b, bt, "db")):
        assert_close(ours.grad, theirs.grad, np.float64, name)


def test_linear_bad_inputs_name_the_argument(rng):
    x = tinycnn.tensor(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"weight must be 2-D .*got shape \(3,\)"):
        F.linear(x, tinycnn.tensor(rng.standard_normal(3)))
    with pytest.raises(ValueError, match=r"in_features=4.*input shape \(2, 3\)"):
        F.linear(x, tinycnn.tensor(rng.standard_normal((5, 4))))
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got \(4,\)"):
        F.linear(x, tinycnn.tensor(rng.standard_normal((5, 3))), tinycnn.tensor(rng.standard_normal(4)))
    with pytest.raises(TypeError, match=r"weight must have the input's dtype float64, got float32"):
        F.linear(x, tinycnn.tensor(rng.standard_normal((5, 3)).astype(np.float32)))
    with pytest.raises(TypeError, match=r"input must be a tinycnn Tensor, got ndarray"):
        F.linear(x.numpy(), tinycnn.tensor(rng.standard_normal((5, 3))))
