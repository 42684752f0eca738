import numpy as np
import pytest

import tinycnn
import tinycnn.nn.functional as F
from tinycnn.backends import kernel
from tinycnn.ops.dropout import Dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_fraction_and_scales(p, dtype):
    tinycnn.manual_seed(0)
    x = tinycnn.ones(200, 500, dtype=dtype, requires_grad=True)
    y = F.dropout(x, p=p, training=True)
    v = y.numpy()
    assert v.dtype == dtype
    scale = dtype(1 / (1 - p))
    assert set(np.unique(v)) <= {dtype(0), scale}
    kept = (v != 0).mean()
    sigma = np.sqrt(p * (1 - p) / v.size)
    assert abs(kept - (1 - p)) < 5 * sigma, (kept, 1 - p)
    # inverted dropout keeps the expectation: mean(y) ~ mean(x) = 1
    assert abs(v.mean() - 1.0) < 5 * sigma * scale


def test_dropout_gradient_is_the_same_mask(rng):
    tinycnn.manual_seed(3)
    a = rng.standard_normal((4, 5, 6))
    x = tinycnn.tensor(a, requires_grad=True)
    y = F.dropout(x, p=0.3)
    g = rng.standard_normal(a.shape)
    y.backward(tinycnn.tensor(g))
    mask = y.numpy() / a
    np.testing.assert_allclose(x.grad.numpy(), g * mask, rtol=1e-12)
    assert set(np.round(np.unique(mask), 12)) <= {0.0, round(1 / 0.7, 12)}


def test_dropout_gradcheck_with_a_fixed_mask(rng):
    # F.dropout draws a new mask per call, so check the op's backward with one mask held fixed
    tinycnn.manual_seed(1)
    x = tinycnn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    mask = kernel("dropout_mask", x.data)(x.shape, 0.4, np.float64, x.data)
    assert tinycnn.gradcheck(lambda t: Dropout.apply(t, mask), [x])


def test_dropout_is_seeded():
    x = tinycnn.ones(50, 40)
    tinycnn.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    tinycnn.manual_seed(7)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_dropout_identity_cases(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True) is x


def test_dropout_p_one_gives_zeros_and_zero_grad(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = F.dropout(x, 1.0)
    assert np.all(y.numpy() == 0) and np.all(np.isfinite(y.numpy()))
    y.sum().backward()
    assert np.all(x.grad.numpy() == 0)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match=rf"dropout probability p must be between 0.0 and 1.0, got {p}"):
        F.dropout(tinycnn.ones(2, 2), p)


def test_dropout_rejects_bad_types():
    with pytest.raises(TypeError, match=r"dropout probability p must be a number .*got str"):
        F.dropout(tinycnn.ones(2, 2), "0.5")
    with pytest.raises(TypeError, match=r"input must be a floating-point Tensor .*got dtype int64"):
        F.dropout(tinycnn.tensor([1, 2, 3]), 0.5)
