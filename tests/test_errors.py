"""Bad input raises ValueError/TypeError/RuntimeError whose message names the argument, expected and actual values."""
import numpy as np
import pytest

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import nn


def _x(*shape):
    return tinycnn.randn(*shape)


# ---------------------------------------------------------------------------- wrong channel count
def test_conv2d_wrong_channel_count():
    with pytest.raises(ValueError, match=r"input has 3 channels.*weight.*2.*\(4, 2, 3, 3\)"):
        F.conv2d(_x(2, 3, 8, 8), _x(4, 2, 3, 3))


def test_conv2d_wrong_channel_count_with_groups():
    with pytest.raises(ValueError, match=r"input has 4 channels.*groups.*6"):
        F.conv2d(_x(1, 4, 8, 8), _x(6, 3, 3, 3), groups=2)


def test_conv2d_module_wrong_channel_count():
    with pytest.raises(ValueError, match=r"Conv2d.*1 channels.*\(2, 3, 8, 8\)"):
        nn.Conv2d(1, 4, 3)(_x(2, 3, 8, 8))


def test_batchnorm_wrong_channel_count():
    with pytest.raises(ValueError, match=r"4 channels.*\(2, 3, 8, 8\)"):
        nn.BatchNorm2d(4)(_x(2, 3, 8, 8))


def test_linear_wrong_in_features():
    with pytest.raises(ValueError, match=r"in_features=5.*\(2, 4\).*\(3, 5\)"):
        nn.Linear(5, 3)(_x(2, 4))


# ---------------------------------------------------------------------------- wrong rank
def test_conv2d_wrong_weight_rank():
    with pytest.raises(ValueError, match=r"weight must be 4-D.*\(4, 3, 3\)"):
        F.conv2d(_x(2, 3, 8, 8), _x(4, 3, 3))


def test_conv2d_wrong_input_rank():
    with pytest.raises(ValueError, match=r"input must be 4-D.*\(3, 8, 8\)"):
        F.conv2d(_x(3, 8, 8), _x(4, 3, 3, 3))


def test_linear_wrong_weight_rank():
    with pytest.raises(ValueError, match=r"weight must be 2-D.*\(3, 4, 5\)"):
        F.linear(_x(2, 5), _x(3, 4, 5))


def test_max_pool_wrong_input_rank():
    with pytest.raises(ValueError, match=r"max_pool2d.*input must be 4-D.*\(8, 8\)"):
        F.max_pool2d(_x(8, 8), 2)


# ---------------------------------------------------------------------------- class targets
@pytest.mark.parametrize("loss", [F.cross_entropy, F.focal_loss], ids=["cross_entropy", "focal_loss"])
@pytest.mark.parametrize("make", [lambda: tinycnn.tensor([0.0, 1.0, 2.0, 1.0]),
                                  lambda: np.array([0.0, 1.0, 2.0, 1.0])], ids=["tensor", "ndarray"])
def test_float_targets_are_type_error(loss, make):
    with pytest.raises(TypeError, match=r"target.*integer.*float"):
        loss(_x(4, 3), make())


@pytest.mark.parametrize("loss", [F.cross_entropy, F.focal_loss], ids=["cross_entropy", "focal_loss"])
@pytest.mark.parametrize("bad", [3, -1, 100])
def test_labels_out_of_range(loss, bad):
    with pytest.raises(ValueError, match=rf"target.*label {bad}.*\[0, 2\].*3 classes"):
        loss(_x(4, 3), tinycnn.tensor([0, 1, bad, 1]))


def test_labels_out_of_range_module():
    with pytest.raises(ValueError, match=r"target.*label 2.*\[0, 1\]"):
        nn.CrossEntropyLoss()(_x(3, 2), np.array([0, 2, 1], dtype=np.int32))


def test_cross_entropy_target_wrong_length():
    with pytest.raises(ValueError, match=r"target.*\(4,\).*\(3,\)"):
        F.cross_entropy(_x(4, 3), tinycnn.tensor([0, 1, 1]))


# ---------------------------------------------------------------------------- mismatched loss shapes
def test_mse_mismatched_shapes():
    with pytest.raises(ValueError, match=r"mse_loss.*target.*\(4, 2\).*\(4, 3\)"):
        F.mse_loss(_x(4, 3), _x(4, 2))


def test_mse_module_mismatched_shapes():
    with pytest.raises(ValueError, match=r"target.*\(3, 4\).*\(4, 3\)"):
        nn.MSELoss()(_x(4, 3), _x(3, 4))


def test_bce_with_logits_mismatched_shapes():
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits.*target.*\(5,\).*\(4,\)"):
        F.binary_cross_entropy_with_logits(_x(4), _x(5))


def test_bad_reduction():
    with pytest.raises(ValueError, match=r"reduction.*'mean'.*'avg'"):
        F.cross_entropy(_x(4, 3), tinycnn.tensor([0, 1, 1, 1]), reduction="avg")


# ---------------------------------------------------------------------------- autograd
def test_backward_on_non_scalar_without_grad():
    y = tinycnn.randn(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"grad.*\(2, 3\)"):
        y.backward()


def test_backward_grad_shape_mismatch():
    y = tinycnn.randn(2, 3, requires_grad=True) * 2
    with pytest.raises(ValueError, match=r"grad.*\(2, 3\).*\(3, 2\)"):
        y.backward(np.ones((3, 2)))


# ---------------------------------------------------------------------------- no bare IndexError / AssertionError
def test_dim_out_of_range_is_value_error():
    with pytest.raises(ValueError, match=r"dim=2.*2 dimensions"):
        _x(2, 3).softmax(2)
    with pytest.raises(ValueError, match=r"dim=5"):
        _x(2, 3).max(5)


def test_type_errors_name_the_argument():
    with pytest.raises(TypeError, match="dim must be an int"):
        _x(2, 3).transpose(0, "1")
    with pytest.raises(TypeError, match="seed must be an int"):
        tinycnn.manual_seed(1.5)
    with pytest.raises(TypeError, match="input must be a tinycnn Tensor"):
        F.relu(np.ones(3))


def test_device_errors_are_runtime_errors():
    if tinycnn.cuda.is_available():
        pytest.skip("checks the message given when no GPU is present")
    with pytest.raises(RuntimeError, match="cuda"):
        tinycnn.randn(2, device="cuda")
