"""nn.init: gains and fans equal torch's; sample statistics (bounds, mean, std) match the formulas;
in place, seeded; default Conv2d/Linear initialisation as PyTorch's."""
import math

import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn
from tinycnn.nn import init

SHAPE = (128, 64, 3, 3)          # fan_in = 576, fan_out = 1152; 73,728 samples
FAN_IN, FAN_OUT = 64 * 9, 128 * 9
N = 128 * 64 * 9


def _check_uniform(w, bound):
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound                     # the whole interval is used
    # mean 0 and std bound/sqrt(3), within ~5 standard errors
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * N)
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def _check_normal(w, std):
    assert abs(w.mean()) < 5 * std / math.sqrt(N)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert (np.abs(w) > 3 * std).mean() == pytest.approx(0.0027, abs=0.001)   # Gaussian tails


@pytest.mark.parametrize("nonlinearity,param", [("linear", None), ("conv2d", None), ("sigmoid", None),
                                                ("tanh", None), ("relu", None), ("leaky_relu", None),
                                                ("leaky_relu", 0.2), ("selu", None)])
def test_calculate_gain_equals_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(
        torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-15)


@pytest.mark.parametrize("shape", [(3, 4), (8, 3, 5, 3), (4, 2, 1, 1), (6, 2, 7)])
def test_fans_equal_torch(shape):
    assert init._calculate_fan_in_and_fan_out(tinycnn.zeros(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


def test_xavier_uniform_statistics():
    w = tinycnn.zeros(SHAPE)
    assert init.xavier_uniform_(w, gain=2.0) is w
    _check_uniform(w.numpy(), 2.0 * math.sqrt(6.0 / (FAN_IN + FAN_OUT)))


def test_xavier_normal_statistics():
    w = tinycnn.zeros(SHAPE)
    init.xavier_normal_(w, gain=init.calculate_gain("relu"))
    _check_normal(w.numpy(), math.sqrt(2) * math.sqrt(2.0 / (FAN_IN + FAN_OUT)))


@pytest.mark.parametrize("a,mode,nonlinearity", [(0, "fan_in", "relu"), (math.sqrt(5), "fan_in", "leaky_relu"),
                                                 (0.1, "fan_out", "leaky_relu"), (0, "fan_out", "tanh")])
def test_kaiming_uniform_statistics(a, mode, nonlinearity):
    w = tinycnn.zeros(SHAPE, dtype=np.float64)
    init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity)
    fan = FAN_IN if mode == "fan_in" else FAN_OUT
    _check_uniform(w.numpy(), math.sqrt(3.0) * init.calculate_gain(nonlinearity, a) / math.sqrt(fan))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_statistics(mode):
    w = tinycnn.zeros(SHAPE)
    init.kaiming_normal_(w, mode=mode, nonlinearity="relu")
    fan = FAN_IN if mode == "fan_in" else FAN_OUT
    _check_normal(w.numpy(), math.sqrt(2.0 / fan))


def test_normal_uniform_constant_zeros_ones():
    w = tinycnn.zeros(SHAPE, dtype=np.float64)
    init.normal_(w, mean=3.0, std=0.5)
    assert w.numpy().mean() == pytest.approx(3.0, abs=0.01)
    assert w.numpy().std() == pytest.approx(0.5, rel=0.02)
    init.uniform_(w, -2.0, 6.0)
    assert w.numpy().min() >= -2.0 and w.numpy().max() < 6.0
    assert w.numpy().mean() == pytest.approx(2.0, abs=0.05)
    assert init.constant_(w, 0.25) is w and np.all(w.numpy() == 0.25)
    assert np.all(init.zeros_(w).numpy() == 0) and np.all(init.ones_(w).numpy() == 1)
    t = tinycnn.zeros(1000)
    init.trunc_normal_(t, std=1.0, a=-0.5, b=0.5)
    assert t.numpy().min() >= -0.5 and t.numpy().max() <= 0.5 and t.numpy().std() > 0.2


def test_in_place_on_parameters_keeps_identity_dtype_and_graph_free():
    p = nn.Parameter(np.zeros((4, 5), dtype=np.float32))
    arr = p.data
    init.kaiming_uniform_(p)
    assert p.data is arr and p.dtype == np.float32 and p.is_leaf and p.requires_grad
    assert np.any(arr != 0)


def test_seeded_repeatable():
    tinycnn.manual_seed(3)
    a = init.xavier_normal_(tinycnn.zeros(10, 10)).numpy().copy()
    tinycnn.manual_seed(3)
    b = init.xavier_normal_(tinycnn.zeros(10, 10)).numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make,fan_in", [(lambda: nn.Conv2d(64, 128, 3), 64 * 9),
                                         (lambda: nn.Conv2d(32, 64, (5, 3), groups=4), 8 * 15),
                                         (lambda: nn.Linear(3136, 128), 3136)])
def test_default_conv_linear_init_is_pytorchs(make, fan_in):
    """weight ~ kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); bias ~ U(+-1/sqrt(fan_in))."""
    m = make()
    bound = 1.0 / math.sqrt(fan_in)
    w, b = m.weight.numpy(), m.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert np.abs(b).max() <= bound
    # torch's layer of the same configuration uses the same interval
    t = (torch.nn.Conv2d(64, 128, 3) if fan_in == 576 else torch.nn.Conv2d(32, 64, (5, 3), groups=4)
         if fan_in == 120 else torch.nn.Linear(3136, 128))
    tw = t.weight.detach().numpy()
    assert np.abs(tw).max() <= bound and np.abs(tw).max() > 0.98 * bound
    assert w.std() == pytest.approx(tw.std(), rel=0.05)


def test_errors():
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init.xavier_uniform_(tinycnn.zeros(5))
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out', got 'fan_avg'"):
        init.kaiming_normal_(tinycnn.zeros(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match="nonlinearity must be one of .* got 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(TypeError, match="tensor must be a tinycnn Tensor or Parameter, got ndarray"):
        init.normal_(np.zeros(3))
    with pytest.raises(ValueError, match="expected a <= b"):
        init.uniform_(tinycnn.zeros(3), 1.0, 0.0)
