import numpy as np
import pytest
import torch

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import backends
from _nn_compare import assert_close, backward_both, pair


@pytest.fixture
def cpu_family():
    """Select a CPU kernel family for one test and restore the previous choice afterwards."""
    before = backends.get_cpu_kernels()
    yield backends.set_cpu_kernels
    backends.set_cpu_kernels(before)

SHAPES = {"NC": (6, 3), "NCL": (4, 3, 5), "NCHW": (3, 2, 4, 5), "N1HW": (2, 1, 3, 3), "batch1": (1, 3, 2, 2)}


def _setup(shape, dtype, rng, affine=True, offset=0.0):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = (rng.random(c) + 0.5).astype(dtype)
    ours = {"x": tinycnn.tensor(x.copy(), requires_grad=True),
            "rm": tinycnn.tensor(rm.copy()), "rv": tinycnn.tensor(rv.copy())}
    theirs = {"x": torch.tensor(x.copy(), requires_grad=True), "rm": torch.tensor(rm.copy()),
              "rv": torch.tensor(rv.copy())}
    if affine:
        ours["w"], theirs["w"] = pair(rng.standard_normal(c).astype(dtype))
        ours["b"], theirs["b"] = pair(rng.standard_normal(c).astype(dtype))
    else:
        ours["w"] = ours["b"] = theirs["w"] = theirs["b"] = None
    return ours, theirs


def _run(o, t, training, momentum=0.1, eps=1e-5):
    y = F.batch_norm(o["x"], o["rm"], o["rv"], o["w"], o["b"], training=training, momentum=momentum, eps=eps)
    yt = torch.nn.functional.batch_norm(t["x"], t["rm"], t["rv"], t["w"], t["b"], training=training,
                                        momentum=momentum, eps=eps)
    return y, yt


def _compare_all(o, t, y, yt, dtype, rng, affine):
    assert_close(y, yt, dtype, "y")
    backward_both(y, yt, rng)
    assert_close(o["x"].grad, t["x"].grad, dtype, "dx", scale=10)
    if affine:
        assert_close(o["w"].grad, t["w"].grad, dtype, "dweight", scale=10)
        assert_close(o["b"].grad, t["b"].grad, dtype, "dbias", scale=10)
    assert_close(o["rm"], t["rm"], dtype, "running_mean")
    assert_close(o["rv"], t["rv"], dtype, "running_var")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_matches_torch(shape, training, affine, dtype, rng):
    o, t = _setup(shape, dtype, rng, affine)
    y, yt = _run(o, t, training, momentum=0.3, eps=1e-3)
    _compare_all(o, t, y, yt, dtype, rng, affine)


@pytest.mark.parametrize("family", ["numpy", "numba"])
def test_batch_norm_kernel_families_match_torch(family, rng, cpu_family):
    cpu_family(family)
    o, t = _setup((8, 4, 6, 5), np.float32, rng)
    y, yt = _run(o, t, True)
    _compare_all(o, t, y, yt, np.float32, rng, True)


def test_batch_norm_running_stats_over_steps_match_torch(rng):
    o, t = _setup((5, 3, 4), np.float64, rng)
    for step in range(4):
        x = rng.standard_normal((5, 3, 4)) * (step + 1) + step
        y = F.batch_norm(tinycnn.tensor(x), o["rm"], o["rv"], o["w"], o["b"], training=True)
        yt = torch.nn.functional.batch_norm(torch.tensor(x), t["rm"], t["rv"], t["w"], t["b"], training=True)
        assert_close(y, yt, np.float64, f"y step {step}")
    assert_close(o["rm"], t["rm"], np.float64, "running_mean")
    assert_close(o["rv"], t["rv"], np.float64, "running_var")


def test_batch_norm_momentum_none_is_cumulative_average_like_torch(rng):
    bn = torch.nn.BatchNorm2d(3, momentum=None).double()
    rm, rv = tinycnn.zeros(3, dtype=np.float64), tinycnn.ones(3, dtype=np.float64)
    count = tinycnn.tensor(np.array(0, dtype=np.int64))
    for step in range(5):
        x = rng.standard_normal((4, 3, 2, 3)) * (step + 1) - step
        count.data += 1   # what the module does before calling, as torch.nn.BatchNorm does
        y = F.batch_norm(tinycnn.tensor(x), rm, rv, training=True, momentum=None, num_batches_tracked=count)
        yt = bn(torch.tensor(x))
        assert_close(y, yt, np.float64, f"y step {step}")
    assert_close(rm, bn.running_mean, np.float64, "running_mean")
    assert_close(rv, bn.running_var, np.float64, "running_var")
    assert int(bn.num_batches_tracked) == int(count.item()) == 5


def test_batch_norm_without_running_stats_in_training(rng):
    o, t = _setup((4, 3, 2), np.float64, rng)
    y = F.batch_norm(o["x"], None, None, o["w"], o["b"], training=True)
    yt = torch.nn.functional.batch_norm(t["x"], None, None, t["w"], t["b"], training=True)
    assert_close(y, yt, np.float64, "y")


def test_batch_norm_under_no_grad_still_updates_running_stats(rng):
    o, t = _setup((4, 3, 2), np.float32, rng)
    with tinycnn.no_grad():
        y = F.batch_norm(o["x"], o["rm"], o["rv"], training=True)
    yt = torch.nn.functional.batch_norm(t["x"].detach(), t["rm"], t["rv"], training=True)
    assert not y.requires_grad
    assert_close(y, yt, np.float32, "y")
    assert_close(o["rm"], t["rm"], np.float32, "running_mean")
    assert_close(o["rv"], t["rv"], np.float32, "running_var")


@pytest.mark.parametrize("family", ["numpy", "numba"])
def test_batch_norm_float32_accurate_with_large_mean(family, rng, cpu_family):
    # single-pass formulas lose everything when mean >> std; ours must stay close to float64 truth
    cpu_family(family)
    x64 = rng.standard_normal((16, 4, 8, 8)) * 0.01 + 1000.0
    x32 = x64.astype(np.float32)
    y = F.batch_norm(tinycnn.tensor(x32), None, None, training=True).numpy()
    ref = torch.nn.functional.batch_norm(torch.tensor(x32.astype(np.float64)), None, None, training=True).numpy()
    np.testing.assert_allclose(y, ref, atol=2e-3)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 2), (3, 2, 3), (2, 2, 2, 3)])
def test_batch_norm_gradcheck(shape, training, rng):
    x = tinycnn.tensor(rng.standard_normal(shape), requires_grad=True)
    w = tinycnn.tensor(rng.standard_normal(shape[1]), requires_grad=True)
    b = tinycnn.tensor(rng.standard_normal(shape[1]), requires_grad=True)
    rm = tinycnn.tensor(rng.standard_normal(shape[1]))
    rv = tinycnn.tensor(rng.random(shape[1]) + 0.5)
    assert tinycnn.gradcheck(lambda x_, w_, b_: F.batch_norm(x_, rm, rv, w_, b_, training=training), [x, w, b])


def test_batch_norm_bad_inputs_name_the_argument(rng):
    x = tinycnn.tensor(rng.standard_normal((1, 3)))
    rm, rv = tinycnn.zeros(3, dtype=np.float64), tinycnn.ones(3, dtype=np.float64)
    with pytest.raises(ValueError, match=r"more than 1 value per channel when training, got input of shape \(1, 3\)"):
        F.batch_norm(x, rm, rv, training=True)
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        F.batch_norm(tinycnn.tensor(rng.standard_normal((1, 3, 1, 1))), None, None, training=True)
    x = tinycnn.tensor(rng.standard_normal((4, 3, 2)))
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\) for an input with 3 channels, got shape \(4,\)"):
        F.batch_norm(x, tinycnn.zeros(4, dtype=np.float64), rv)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\) .*got shape \(2,\)"):
        F.batch_norm(x, rm, rv, weight=tinycnn.ones(2, dtype=np.float64))
    with pytest.raises(ValueError, match=r"running_mean and running_var must be given in evaluation mode"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match=r"momentum=None .*needs num_batches_tracked="):
        F.batch_norm(x, rm, rv, training=True, momentum=None)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, \*spatial\).*got shape \(3,\)"):
        F.batch_norm(tinycnn.tensor(rng.standard_normal(3)), None, None, training=True)
    with pytest.raises(TypeError, match=r"running_var must have the input's dtype float64, got float32"):
        F.batch_norm(x, rm, tinycnn.ones(3), training=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (5, 4, 6, 7), (3, 1, 2, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_numba_batch_norm_kernels_match_numpy_reference(shape, affine, dtype, rng):
    from tinycnn.backends import cpu_numba_nn, cpu_numpy_nn

    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    ref = cpu_numpy_nn.batch_norm_forward_train(x, g, b, 1e-5)
    fast = cpu_numba_nn.batch_norm_forward_train(x, g, b, 1e-5)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    for r, f, name in zip(ref, fast, ("y", "mean", "invstd")):
        assert f.dtype == dtype and f.shape == r.shape
        np.testing.assert_allclose(f, r, err_msg=name, **tolerance)
    mean, invstd = ref[1], ref[2]
    ref_b = cpu_numpy_nn.batch_norm_backward(gy, x, g, mean, invstd)
    fast_b = cpu_numba_nn.batch_norm_backward(gy, x, g, mean, invstd)
    for r, f, name in zip(ref_b, fast_b, ("dx", "dgamma", "dbeta")):
        assert f.dtype == dtype and f.shape == r.shape
        np.testing.assert_allclose(f, r, err_msg=name, **tolerance)


def test_numba_batch_norm_is_deterministic_and_handles_views(rng):
    from tinycnn.backends import cpu_numba_nn

    x = rng.standard_normal((8, 5, 6, 4)).astype(np.float32)
    view = np.transpose(x.copy().transpose(0, 2, 3, 1), (0, 3, 1, 2))   # same values, not C-contiguous
    a = cpu_numba_nn.batch_norm_forward_train(x, None, None, 1e-5)
    b = cpu_numba_nn.batch_norm_forward_train(view, None, None, 1e-5)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_batch_norm_kernel_dispatch_follows_the_cpu_family(cpu_family):
    from tinycnn.backends import cpu_numba_nn, cpu_numpy_nn

    x = np.zeros((2, 3, 4), np.float32)
    cpu_family("numba")
    assert backends.kernel("batch_norm_forward_train", x) is cpu_numba_nn.batch_norm_forward_train
    assert backends.kernel("batch_norm_backward", x) is cpu_numba_nn.batch_norm_backward
    cpu_family("numpy")
    assert backends.kernel("batch_norm_forward_train", x) is cpu_numpy_nn.batch_norm_forward_train


@pytest.mark.parametrize("family", ["numpy", "numba"])
def test_batch_norm_constant_channel(family, rng, cpu_family):
    # zero variance: xhat = 0 so y = beta, dx stays finite, running_var decays towards 0 and never goes
    # negative. Reference: torch in float64 (torch's float32 mean is off by an ulp here, times invstd ~ 316)
    cpu_family(family)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    x[:, 1] = 2.5
    o, t = _setup((4, 2, 3, 3), np.float32, rng)
    o["x"] = tinycnn.tensor(x.copy(), requires_grad=True)
    t = {k: None if v is None else v.detach().double().requires_grad_(v.requires_grad) for k, v in t.items()}
    t["x"] = torch.tensor(x.astype(np.float64), requires_grad=True)
    y, yt = _run(o, t, True)
    np.testing.assert_allclose(y.numpy()[:, 1], np.broadcast_to(o["b"].numpy()[1], (4, 3, 3)), rtol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(tinycnn.tensor(g))
    yt.backward(torch.tensor(g.astype(np.float64)))
    pairs = [(y, yt, "y"), (o["x"].grad, t["x"].grad, "dx"), (o["w"].grad, t["w"].grad, "dweight"),
             (o["b"].grad, t["b"].grad, "dbias"), (o["rm"], t["rm"], "running_mean"), (o["rv"], t["rv"], "running_var")]
    for ours, theirs, name in pairs:
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-5, atol=2e-5, err_msg=name)
    assert np.all(np.isfinite(o["x"].grad.numpy())) and np.all(o["rv"].numpy() >= 0)
