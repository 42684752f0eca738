import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinycnn
import tinycnn.nn.functional as F
from _nn_compare import assert_close, backward_both, pair

TF = torch.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


# --------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("n,c", [(6, 4), (1, 3), (5, 2)])
def test_cross_entropy_matches_torch(n, c, smoothing, weighted, reduction, dtype, rng):
    x, xt = pair((rng.standard_normal((n, c)) * 3).astype(dtype))
    target = rng.integers(0, c, n)
    w = (rng.random(c) + 0.2).astype(dtype) if weighted else None
    y = F.cross_entropy(x, target, weight=None if w is None else tinycnn.tensor(w), reduction=reduction,
                        label_smoothing=smoothing)
    yt = TF.cross_entropy(xt, torch.tensor(target), weight=None if w is None else torch.tensor(w),
                          reduction=reduction, label_smoothing=smoothing)
    assert y.dtype == dtype
    assert_close(y, yt, dtype, "loss")
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dlogits")


def test_cross_entropy_mean_gradient_is_softmax_minus_onehot_over_n(rng):
    a = rng.standard_normal((5, 3))
    t = np.array([0, 2, 1, 1, 0])
    x = tinycnn.tensor(a, requires_grad=True)
    F.cross_entropy(x, t).backward()
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), (p - np.eye(3)[t]) / 5, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["ndarray", "Tensor"])
def test_cross_entropy_accepts_any_integer_target(tdtype, as_tensor, rng):
    a = rng.standard_normal((4, 3))
    t = np.array([2, 0, 1, 2], dtype=tdtype)
    target = tinycnn.from_numpy(t) if as_tensor else t
    ours = F.cross_entropy(tinycnn.tensor(a), target).item()
    assert ours == pytest.approx(TF.cross_entropy(torch.tensor(a), torch.tensor(t.astype(np.int64))).item(), rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_gradcheck(smoothing, weighted, rng):
    x = tinycnn.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w = tinycnn.tensor(rng.random(3) + 0.5) if weighted else None
    t = np.array([0, 2, 2, 1])
    assert tinycnn.gradcheck(lambda z: F.cross_entropy(z, t, weight=w, label_smoothing=smoothing), [x])
    assert tinycnn.gradcheck(lambda z: F.cross_entropy(z, t, weight=w, reduction="none",
                                                       label_smoothing=smoothing), [x])


huge_logits = hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(2, 5)),
                         elements=st.sampled_from([-1e4, 1e4, 0.0, 1.0, -3.0]) | st.floats(-1e4, 1e4, width=32))


@settings(max_examples=60, deadline=None)
@given(huge_logits, st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.1]))
def test_cross_entropy_finite_for_huge_logits(a, seed, smoothing):
    t = np.random.default_rng(seed).integers(0, a.shape[1], a.shape[0])
    x = tinycnn.tensor(a, requires_grad=True)
    loss = F.cross_entropy(x, t, label_smoothing=smoothing)
    loss.backward()
    assert np.isfinite(loss.item()) and loss.item() >= 0
    assert np.all(np.isfinite(x.grad.numpy()))
    np.testing.assert_allclose(x.grad.numpy().sum(axis=1), 0.0, atol=1e-6)   # each row of p - q sums to 0
    ref = TF.cross_entropy(torch.tensor(a.astype(np.float64)), torch.tensor(t), label_smoothing=smoothing).item()
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-3)


def test_cross_entropy_bad_inputs_name_the_argument(rng):
    x = tinycnn.tensor(rng.standard_normal((4, 3)))
    with pytest.raises(TypeError, match=r"target must hold integer class indices .*got dtype float32"):
        F.cross_entropy(x, tinycnn.tensor([0.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"target holds label 3 outside the valid range \[0, 2\] for 3 classes"):
        F.cross_entropy(x, np.array([0, 3, 1, 1]))
    with pytest.raises(ValueError, match=r"target holds label -1 outside the valid range \[0, 2\]"):
        F.cross_entropy(x, np.array([0, -1, 1, 1]))
    with pytest.raises(ValueError, match=r"target must have shape \(4,\) .*got shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        F.cross_entropy(x, np.array([0, 1, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(3,\), got shape \(2,\)"):
        F.cross_entropy(x, np.array([0, 1, 1, 2]), weight=tinycnn.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"input must be logits of shape \(N, C\), got shape \(4,\)"):
        F.cross_entropy(tinycnn.tensor(rng.standard_normal(4)), np.array([0, 1, 1, 2]))
    with pytest.raises(ValueError, match=r"label_smoothing must be between 0.0 and 1.0, got 1.5"):
        F.cross_entropy(x, np.array([0, 1, 1, 2]), label_smoothing=1.5)


# --------------------------------------------------------------------------- focal loss
def _torch_focal(zt, target, gamma, alpha, reduction):
    logp = TF.log_softmax(zt, dim=1).gather(1, torch.tensor(target)[:, None])[:, 0]
    loss = -(1 - logp.exp()) ** gamma * logp
    if alpha is not None:
        loss = loss * torch.tensor(np.asarray(alpha, dtype=np.float64)).to(zt.dtype)[torch.tensor(target)]
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [None, [0.25, 0.5, 1.0, 2.0]], ids=["noalpha", "alpha"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.0])
def test_focal_loss_matches_torch_formula(gamma, alpha, reduction, dtype, rng):
    x, xt = pair((rng.standard_normal((6, 4)) * 2).astype(dtype))
    target = rng.integers(0, 4, 6)
    y = F.focal_loss(x, target, gamma=gamma, alpha=alpha, reduction=reduction)
    yt = _torch_focal(xt, target, gamma, alpha, reduction)
    assert_close(y, yt, dtype, "loss")
    backward_both(y, yt, rng)
    assert_close(x.grad, xt.grad, dtype, "dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_loss_gamma0_equals_cross_entropy(reduction, rng):
    a = rng.standard_normal((5, 3)) * 3
    t = rng.integers(0, 3, 5)
    x1, x2 = tinycnn.tensor(a, requires_grad=True), tinycnn.tensor(a, requires_grad=True)
    f = F.focal_loss(x1, t, gamma=0.0, reduction=reduction)
    ce = F.cross_entropy(x2, t, reduction=reduction)
    np.testing.assert_allclose(f.numpy(), ce.numpy(), rtol=1e-12)
    f.sum().backward()
    ce.sum().backward()
    np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("alpha_kind", ["list", "ndarray", "Tensor"])
def test_focal_loss_alpha_forms_and_gradcheck(alpha_kind, rng):
    alpha = {"list": [0.2, 0.3, 0.5], "ndarray": np.array([0.2, 0.3, 0.5]),
             "Tensor": tinycnn.tensor(np.array([0.2, 0.3, 0.5]))}[alpha_kind]
    x = tinycnn.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    t = np.array([1, 0, 2, 2], dtype=np.int32)
    assert tinycnn.gradcheck(lambda z: F.focal_loss(z, t, gamma=2.0, alpha=alpha), [x])
    assert tinycnn.gradcheck(lambda z: F.focal_loss(z, t, gamma=0.5, alpha=alpha, reduction="none"), [x])


def test_focal_loss_confident_correct_predictions_stay_finite():
    # p_t == 1 in floating point: (1 - p)^(gamma - 1) alone would be inf for gamma < 1
    x = tinycnn.tensor(np.array([[100.0, -100.0, 0.0], [-1e4, 1e4, 0.0]]), requires_grad=True)
    for gamma in (0.5, 2.0):
        x.grad = None
        loss = F.focal_loss(x, np.array([0, 1]), gamma=gamma)
        loss.backward()
        assert np.isfinite(loss.item()) and np.all(np.isfinite(x.grad.numpy()))


def test_focal_loss_bad_inputs(rng):
    x = tinycnn.tensor(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"alpha must have one entry per class, shape \(3,\), got shape \(2,\)"):
        F.focal_loss(x, np.array([0, 1]), alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"gamma must be a number >= 0, got -1"):
        F.focal_loss(x, np.array([0, 1]), gamma=-1)
    with pytest.raises(TypeError, match=r"target must hold integer class indices"):
        F.focal_loss(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"label 7 outside the valid range \[0, 2\]"):
        F.focal_loss(x, np.array([0, 7]))


# --------------------------------------------------------------------------- binary cross-entropy with logits
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("use_pos_weight", [False, True], ids=["nopos", "pos_weight"])
def test_bce_with_logits_matches_torch(use_pos_weight, use_weight, reduction, dtype, rng):
    shape = (5, 3)
    x, xt = pair((rng.standard_normal(shape) * 4).astype(dtype))
    y, yt_ = pair(rng.random(shape).astype(dtype))          # soft targets: their gradient is checked too
    # torch does not differentiate with respect to weight or pos_weight (ours does; gradcheck below covers it)
    w, wt = pair((rng.random((1, 3)) + 0.5).astype(dtype), requires_grad=False) if use_weight else (None, None)
    pw, pwt = pair((rng.random(3) + 0.5).astype(dtype), requires_grad=False) if use_pos_weight else (None, None)
    out = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction, weight=w)
    outt = TF.binary_cross_entropy_with_logits(xt, yt_, weight=wt, reduction=reduction, pos_weight=pwt)
    assert_close(out, outt, dtype, "loss")
    backward_both(out, outt, rng)
    for ours, theirs, name in [(x, xt, "dlogits"), (y, yt_, "dtarget")]:
        assert_close(ours.grad, theirs.grad, dtype, name)


def test_bce_with_logits_positional_pos_weight_and_huge_logits():
    a = np.array([[-1e4, 1e4, -80.0, 80.0, 0.0]])
    t = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    pw = np.array([2.0, 2.0, 2.0, 2.0, 2.0])
    x = tinycnn.tensor(a, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, tinycnn.tensor(t), tinycnn.tensor(pw))   # contract: pos_weight 3rd
    xt = torch.tensor(a, requires_grad=True)
    ref = TF.binary_cross_entropy_with_logits(xt, torch.tensor(t), pos_weight=torch.tensor(pw))
    loss.backward()
    ref.backward()
    assert np.isfinite(loss.item())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_bce_with_logits_gradcheck(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    y = tinycnn.tensor(rng.random((3, 2)), requires_grad=True)
    w = tinycnn.tensor(rng.random((3, 1)) + 0.5, requires_grad=True)
    pw = tinycnn.tensor(rng.random(2) + 0.5, requires_grad=True)
    assert tinycnn.gradcheck(lambda a, b, c, d: F.binary_cross_entropy_with_logits(a, b, pos_weight=d, weight=c),
                             [x, y, w, pw])


def test_bce_with_logits_bad_inputs(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match=r"target size must be the same as input size, got target \(3,\) and input \(3, 2\)"):
        F.binary_cross_entropy_with_logits(x, tinycnn.tensor(rng.random(3)))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(3,\) does not broadcast to the input's shape \(3, 2\)"):
        F.binary_cross_entropy_with_logits(x, tinycnn.tensor(rng.random((3, 2))), pos_weight=tinycnn.tensor(rng.random(3)))
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        F.binary_cross_entropy_with_logits(x, tinycnn.tensor(rng.random((3, 2))), reduction="mean ")
    with pytest.raises(TypeError, match=r"target must be a floating-point Tensor .*got dtype int64"):
        F.binary_cross_entropy_with_logits(x, tinycnn.tensor(np.ones((3, 2), dtype=np.int64)))


# --------------------------------------------------------------------------- mean squared error
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2, 2)])
def test_mse_loss_matches_torch(shape, reduction, dtype, rng):
    x, xt = pair(rng.standard_normal(shape).astype(dtype))
    y, yt_ = pair(rng.standard_normal(shape).astype(dtype))
    out = F.mse_loss(x, y, reduction=reduction)
    outt = TF.mse_loss(xt, yt_, reduction=reduction)
    assert_close(out, outt, dtype, "loss")
    backward_both(out, outt, rng)
    assert_close(x.grad, xt.grad, dtype, "dinput")
    assert_close(y.grad, yt_.grad, dtype, "dtarget")


def test_mse_loss_gradcheck_and_errors(rng):
    x = tinycnn.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    y = tinycnn.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    assert tinycnn.gradcheck(F.mse_loss, [x, y])
    with pytest.raises(ValueError, match=r"target shape \(2, 3\) must equal input shape \(3, 2\)"):
        F.mse_loss(x, tinycnn.tensor(rng.standard_normal((2, 3))))
    with pytest.raises(ValueError, match=r"reduction must be one of .*got 'max'"):
        F.mse_loss(x, y, reduction="max")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.booleans(), st.booleans(), st.sampled_from(REDUCTIONS),
       st.integers(0, 2**31 - 1))
def test_bce_with_logits_broadcast_weights_like_torch(n, c, row_weight, col_weight, reduction, seed):
    # property: weight broadcasting over rows or columns and pos_weight over the class axis agree with torch
    rng = np.random.default_rng(seed)
    x, xt = pair(rng.standard_normal((n, c)) * 5)
    y, yt_ = pair(rng.random((n, c)), requires_grad=False)
    w_shape = (n if row_weight else 1, c if col_weight else 1)
    w, wt = pair(rng.random(w_shape) + 0.1, requires_grad=False)
    pw, pwt = pair(rng.random(c) + 0.1, requires_grad=False)
    out = F.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction, weight=w)
    outt = TF.binary_cross_entropy_with_logits(xt, yt_, weight=wt, reduction=reduction, pos_weight=pwt)
    assert_close(out, outt, np.float64, "loss")
    backward_both(out, outt, rng)
    assert_close(x.grad, xt.grad, np.float64, "dlogits")
