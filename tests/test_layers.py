"""Layers and loss modules against their torch.nn counterparts (same weights: forward and every gradient),
float64 gradcheck through modules, train/eval behaviour and constructor/input errors."""
import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn


def _copy_params(ours, theirs):
    ours.load_state_dict(theirs.state_dict())


def _compare(ours, theirs, x, rtol=1e-10, atol=1e-12, grad=True):
    """Forward and input/parameter gradients of two modules on the same float64 input."""
    xt = tinycnn.tensor(x, requires_grad=grad)
    tx = torch.tensor(x, requires_grad=grad)
    y, ty = ours(xt), theirs(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=atol)
    if not grad:
        return
    g = np.random.default_rng(9).standard_normal(y.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[name].grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


CONV = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(1, 2), padding=(2, 0), dilation=2),
    dict(groups=2, bias=False),
    dict(groups=4, padding="same"),
    dict(kernel_size=(5, 3), padding="valid", stride=3),
    dict(kernel_size=1),
]


@pytest.mark.parametrize("kw", CONV, ids=[str(c) for c in CONV])
def test_conv2d_module_matches_torch(kw):
    kw = dict(kw)
    k = kw.pop("kernel_size", 3)
    ours = nn.Conv2d(4, 8, k, **kw).double()
    theirs = torch.nn.Conv2d(4, 8, k, **kw).double()
    _copy_params(ours, theirs)
    assert ours.weight.shape == tuple(theirs.weight.shape)
    _compare(ours, theirs, np.random.default_rng(0).standard_normal((2, 4, 9, 7)))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_module_matches_torch_on_3d_input(bias):
    ours, theirs = nn.Linear(5, 3, bias=bias).double(), torch.nn.Linear(5, 3, bias=bias).double()
    _copy_params(ours, theirs)
    _compare(ours, theirs, np.random.default_rng(1).standard_normal((2, 4, 5)))


@pytest.mark.parametrize("make", [
    lambda m: m.MaxPool2d(2),
    lambda m: m.MaxPool2d(3, stride=2, padding=1),
    lambda m: m.AvgPool2d(2),
    lambda m: m.AvgPool2d((3, 2), stride=(2, 1), padding=1),
    lambda m: m.AdaptiveAvgPool2d(1),
    lambda m: m.AdaptiveAvgPool2d((3, 2)),
    lambda m: m.ReLU(),
    lambda m: m.LeakyReLU(0.2),
    lambda m: m.Sigmoid(),
    lambda m: m.Tanh(),
    lambda m: m.Softmax(dim=1),
    lambda m: m.Softmax(dim=-1),
    lambda m: m.LogSoftmax(dim=1),
    lambda m: m.Flatten(),
    lambda m: m.Flatten(0, 2),
    lambda m: m.Identity(),
], ids=["max2", "max3s2p1", "avg2", "avg32", "adapt1", "adapt32", "relu", "lrelu", "sigmoid", "tanh",
        "softmax1", "softmax-1", "logsoftmax", "flatten", "flatten02", "identity"])
def test_parameterless_modules_match_torch(make):
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 7))
    _compare(make(nn), make(torch.nn), x)


def test_softmax_dim_none_uses_torch_legacy_rule():
    for shape in [(4,), (2, 5), (2, 3, 4), (2, 3, 4, 5)]:
        x = np.random.default_rng(3).standard_normal(shape)
        with pytest.warns(UserWarning):
            t = torch.nn.Softmax()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(nn.Softmax()(tinycnn.tensor(x)).numpy(), t, rtol=1e-12)


@pytest.mark.parametrize("cls,shape", [("BatchNorm2d", (4, 3, 5, 5)), ("BatchNorm1d", (6, 3)),
                                       ("BatchNorm1d", (4, 3, 7))])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=None), dict(momentum=0.3, eps=1e-3), dict(affine=False),
                                dict(track_running_stats=False)], ids=["default", "cma", "mom", "noaffine", "notrack"])
def test_batchnorm_modules_match_torch_over_steps(cls, shape, kw):
    ours, theirs = getattr(nn, cls)(3, **kw).double(), getattr(torch.nn, cls)(3, **kw).double()
    if ours.weight is not None:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-1, 1)
    _copy_params(ours, theirs)
    rng = np.random.default_rng(4)
    for _ in range(3):            # several batches: running statistics and num_batches_tracked evolve
        _compare(ours, theirs, rng.standard_normal(shape) * 2 + 1)
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-12, err_msg=k)
    ours.eval()
    theirs.eval()
    _compare(ours, theirs, rng.standard_normal(shape))


def test_dropout_module_train_eval_and_seed():
    d = nn.Dropout(0.4)
    x = tinycnn.ones(1000, dtype=np.float64)
    tinycnn.manual_seed(7)
    a = d(x).numpy()
    tinycnn.manual_seed(7)
    b = d(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1 / 0.6}
    assert 0.3 < (a == 0).mean() < 0.5
    d.eval()
    assert d(x) is x or np.array_equal(d(x).numpy(), x.numpy())


@pytest.mark.parametrize("kw", [dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.2),
                                dict(weight=[0.2, 1.0, 3.0, 0.5]), dict(weight=[0.2, 1.0, 3.0, 0.5],
                                                                         label_smoothing=0.1)],
                         ids=["mean", "sum", "none", "ls", "weight", "weight-ls"])
def test_cross_entropy_loss_module_matches_torch(kw):
    rng = np.random.default_rng(5)
    z, t = rng.standard_normal((7, 4)), rng.integers(0, 4, 7)
    tkw = dict(kw)
    if "weight" in tkw:
        tkw["weight"] = torch.tensor(tkw["weight"], dtype=torch.float64)
    zt, tz = tinycnn.tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    loss = nn.CrossEntropyLoss(**kw)(zt, tinycnn.tensor(t))
    tloss = torch.nn.CrossEntropyLoss(**tkw)(tz, torch.tensor(t))
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-10)
    loss.sum().backward()
    tloss.sum().backward()
    np.testing.assert_allclose(zt.grad.numpy(), tz.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kw", [dict(), dict(pos_weight=[2.0, 0.5, 1.0]), dict(weight=[1.0, 0.3, 2.0]),
                                dict(reduction="sum", pos_weight=[3.0, 1.0, 1.0])],
                         ids=["plain", "pos_weight", "weight", "sum"])
def test_bce_with_logits_module_matches_torch(kw):
    rng = np.random.default_rng(6)
    z, y = rng.standard_normal((5, 3)), rng.integers(0, 2, (5, 3)).astype(np.float64)
    tkw = {k: (torch.tensor(v, dtype=torch.float64) if isinstance(v, list) else v) for k, v in kw.items()}
    zt, tz = tinycnn.tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    loss = nn.BCEWithLogitsLoss(**kw)(zt, tinycnn.tensor(y))
    tloss = torch.nn.BCEWithLogitsLoss(**tkw)(tz, torch.tensor(y))
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(zt.grad.numpy(), tz.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_module_matches_torch(reduction):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    at, ta = tinycnn.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    loss = nn.MSELoss(reduction=reduction)(at, tinycnn.tensor(b))
    tloss = torch.nn.MSELoss(reduction=reduction)(ta, torch.tensor(b))
    np.testing.assert_allclose(loss.numpy(), tloss.detach().numpy(), rtol=1e-12)
    loss.sum().backward()
    tloss.sum().backward()
    np.testing.assert_allclose(at.grad.numpy(), ta.grad.numpy(), rtol=1e-12)


def test_focal_loss_module_formula_and_ce_equivalence():
    rng = np.random.default_rng(8)
    z, t = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    alpha = [0.25, 0.5, 0.25]
    zt = tinycnn.tensor(z, requires_grad=True)
    loss = nn.FocalLoss(gamma=2.0, alpha=alpha)(zt, tinycnn.tensor(t))
    tz = torch.tensor(z, requires_grad=True)
    logp = torch.log_softmax(tz, 1)[torch.arange(6), torch.tensor(t)]
    tloss = (-torch.tensor(alpha)[torch.tensor(t)] * (1 - logp.exp()) ** 2 * logp).mean()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-10)
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(zt.grad.numpy(), tz.grad.numpy(), rtol=1e-9, atol=1e-13)
    ce = nn.CrossEntropyLoss()(tinycnn.tensor(z), tinycnn.tensor(t)).item()
    assert nn.FocalLoss(gamma=0.0)(tinycnn.tensor(z), tinycnn.tensor(t)).item() == pytest.approx(ce, rel=1e-12)


def test_loss_weight_buffer_follows_input_dtype_and_to():
    loss = nn.CrossEntropyLoss(weight=np.array([1.0, 2.0]))
    assert [n for n, _ in loss.named_buffers()] == ["weight"]
    z32 = tinycnn.randn(4, 2)
    out = loss(z32, tinycnn.tensor(np.array([0, 1, 1, 0])))
    assert out.dtype == np.float32
    loss.double()
    assert loss.weight.dtype == np.float64


def _call_with(model, params, x):
    """model(x) computed with `params` in place of its parameters (so gradcheck can perturb them)."""
    slots = [(mod, name) for mod in model.modules() for name, p in mod._parameters.items() if p is not None]
    saved = [mod._parameters[name] for mod, name in slots]
    try:
        for (mod, name), p in zip(slots, params):
            mod._parameters[name] = p
        return model(x)
    finally:
        for (mod, name), p in zip(slots, saved):
            mod._parameters[name] = p


def test_gradcheck_through_a_small_model_float64():
    """Input and every parameter (conv, BN affine, linear) of a small model in training mode."""
    tinycnn.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, stride=2), nn.BatchNorm2d(2), nn.LeakyReLU(0.1),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 2)).double()
    x = tinycnn.tensor(np.random.default_rng(0).standard_normal((2, 1, 5, 5)), requires_grad=True)
    params = [tinycnn.tensor(p.numpy().copy(), requires_grad=True) for p in m.parameters()]
    assert tinycnn.gradcheck(lambda inp, *ps: _call_with(m, ps, inp), [x] + params)
    # the parameters really take part: perturbing them changes the output
    moved = [tinycnn.tensor(p.numpy() + 0.1) for p in params]
    assert not np.allclose(_call_with(m, moved, x).numpy(), _call_with(m, params, x).numpy())


@pytest.mark.parametrize("make,exc,match", [
    (lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels must be divisible by groups"),
    (lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError, "out_channels must be divisible by groups"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "kernel_size must be >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, (3, 3, 3)), ValueError, "kernel_size must be an int or a pair"),
    (lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError, "padding must be an int, a pair, 'valid' or 'same'"),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, "padding='same' needs stride=1"),
    (lambda: nn.Conv2d(3, 4, 2, padding="same"), ValueError, "asymmetric padding"),
    (lambda: nn.Conv2d(3.0, 4, 3), TypeError, "in_channels must be an int"),
    (lambda: nn.Conv2d(3, 4, 3, padding_mode="reflect"), ValueError, "padding_mode must be 'zeros'"),
    (lambda: nn.Linear(3, 4, dtype="int32"), TypeError, "floating-point dtype"),
    (lambda: nn.BatchNorm2d(0), ValueError, "num_features must be >= 1"),
    (lambda: nn.BatchNorm2d(3, momentum=2.0), ValueError, r"momentum must be None or a number in \[0, 1\]"),
    (lambda: nn.Dropout(1.5), ValueError, r"dropout probability p must be a number in \[0, 1\], got 1.5"),
    (lambda: nn.MaxPool2d(2, ceil_mode=True), ValueError, "ceil_mode=True are not supported"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ValueError, "reduction must be one of"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), ValueError, r"label_smoothing must be a number in \[0, 1\]"),
    (lambda: nn.FocalLoss(gamma=-1), ValueError, "gamma must be a number >= 0"),
])
def test_constructor_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_input_errors_name_the_expected_and_actual():
    with pytest.raises(ValueError, match=r"expected input with 3 channels .*got input of shape \(2, 4, 8, 8\)"):
        nn.Conv2d(3, 4, 3)(tinycnn.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"expected 4D input, got 3D input of shape \(2, 3, 8\)"):
        nn.BatchNorm2d(3)(tinycnn.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"expected 2D or 3D input, got 4D"):
        nn.BatchNorm1d(3)(tinycnn.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expected input with 3 channels \(dim 1\), got input of shape \(4, 5\)"):
        nn.BatchNorm1d(3)(tinycnn.randn(4, 5))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(tinycnn.randn(1, 3))


def test_factory_dtype_and_seeded_default_init_repeat():
    m = nn.Conv2d(2, 3, 3, dtype=np.float64)
    assert m.weight.dtype == np.float64 and m.bias.dtype == np.float64
    tinycnn.manual_seed(11)
    a = nn.Linear(4, 4).weight.numpy().copy()
    tinycnn.manual_seed(11)
    b = nn.Linear(4, 4).weight.numpy()
    np.testing.assert_array_equal(a, b)
