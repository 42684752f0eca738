"""Regression tests for places where tinycnn differed from docs/api.md (or from PyTorch where the contract is silent).

Each test pins one fixed discrepancy: copy semantics of tensor(), error types and messages (ValueError /
TypeError naming the argument, never NumPy's own message or a bare IndexError), PyTorch's dtype promotion
and reduction details, max()'s named tuple and tie gradient, and save/load key order.
"""
import operator
import re

import numpy as np
import pytest
import torch

import tinycnn
import tinycnn.nn.functional as F
from tinycnn import nn
from tinycnn.optim import lr_scheduler as S


# ---------------------------------------------------------------------------- tensor() copies, as torch.tensor
@pytest.mark.parametrize("make", [tinycnn.tensor, tinycnn.Tensor], ids=["tensor", "Tensor"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_tensor_copies_its_array(make, dtype):
    a = np.arange(3).astype(dtype)
    t = make(a)
    a[0] = 7
    assert t.numpy()[0] == 0 and not np.shares_memory(t.data, a)
    assert tinycnn.from_numpy(a).data is a      # from_numpy is the one that shares


def test_tensor_of_tensor_is_a_copy():
    src = tinycnn.ones(3, requires_grad=True)
    t = tinycnn.tensor(src)
    assert not np.shares_memory(t.data, src.data) and not t.requires_grad


@pytest.mark.parametrize("data", ["abc", np.array(["a", "b"]), [["a"]]], ids=["str", "str-array", "str-list"])
def test_tensor_of_non_numeric_data_is_type_error(data):
    with pytest.raises(TypeError, match="data"):
        tinycnn.tensor(data)


@pytest.mark.parametrize("fn", [tinycnn.zeros, tinycnn.ones, tinycnn.randn, tinycnn.rand])
def test_negative_shape_is_value_error_naming_the_shape(fn):
    with pytest.raises(ValueError, match=r"shape entries must be >= 0, got shape \(2, -1\)"):
        fn(2, -1)


# ---------------------------------------------------------------------------- to() / backward() arguments
@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64")])
def test_tensor_to_accepts_dtype_positionally(dtype):
    x = tinycnn.ones(2, requires_grad=True)
    y = x.to(dtype)
    assert y.dtype == np.float64 and y.device == "cpu"
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_cast_to_integer_dtype_does_not_require_grad():
    x = tinycnn.randn(3, requires_grad=True)
    assert not x.long().requires_grad and not x.to(dtype="int32").requires_grad


@pytest.mark.parametrize("grad", [tinycnn.tensor([1.0, 2.0]), np.array([1.0, 2.0]), [1.0, 2.0]],
                         ids=["Tensor", "ndarray", "list"])
def test_backward_gradient_keyword(grad):
    x = tinycnn.tensor([1.0, 1.0], requires_grad=True)
    (x * 3).backward(gradient=grad)
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 6.0])


def test_backward_rejects_both_names_and_non_arrays():
    x = tinycnn.tensor([1.0, 1.0], requires_grad=True)
    with pytest.raises(TypeError, match="both grad and gradient"):
        (x * 3).backward(np.ones(2), gradient=np.ones(2))
    with pytest.raises(TypeError, match="grad must be a Tensor, an array or a number, got str"):
        (x * 3).backward("ones")


# ---------------------------------------------------------------------------- indexing
def test_index_out_of_range_is_value_error_naming_the_shape():
    t = tinycnn.zeros(3, 4)
    with pytest.raises(ValueError, match=r"index 5 is out of range for a tensor of shape \(3, 4\).*axis 0 with size 3"):
        t[5]
    with pytest.raises(IndexError):          # still an IndexError too, as in NumPy / PyTorch
        t[0, 9]
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        t[7] = 1.0


@pytest.mark.parametrize("index", [1.5, "a", (0, 1.0), np.array([0.0, 1.0])], ids=["float", "str", "tuple-float", "float-array"])
def test_non_integer_index_is_type_error(index):
    with pytest.raises(TypeError, match="tensor indices must be ints, slices"):
        tinycnn.zeros(3, 4)[index]


def test_iteration_yields_rows_and_rejects_0d():
    rows = list(tinycnn.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert [r.numpy().tolist() for r in rows] == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(tinycnn.tensor(1.0))


def test_sequential_index_out_of_range_is_value_error():
    with pytest.raises(ValueError, match="index 5 is out of range for Sequential of length 1"):
        nn.Sequential(nn.ReLU())[5]


# ---------------------------------------------------------------------------- operators: shapes, types, promotion
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "**": operator.pow}


@pytest.mark.parametrize("op", list(_OPS))
def test_broadcast_mismatch_names_both_shapes(op):
    with pytest.raises(ValueError, match=rf"operands of '{re.escape(op)}' have shapes \(2, 3\) and \(4,\), "
                                         r"which do not broadcast: dimension -1 has sizes 3 and 4"):
        _OPS[op](tinycnn.ones(2, 3), tinycnn.ones(4))


def test_comparison_broadcast_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        tinycnn.ones(3) < np.ones(2)


@pytest.mark.parametrize("sa, sb, match", [
    ((3,), (2,), r"shapes \(3,\) and \(2,\): the first's last dimension \(3\) must equal the second's only"),
    ((2, 3), (4, 5), r"shapes \(2, 3\) and \(4, 5\).*\(3\).*second-to-last dimension \(4\)"),
    ((2, 2, 3), (4, 3, 5), r"batch dimensions"),
    ((), (3,), "at least 1 dimension"),
])
def test_matmul_shape_mismatch_is_value_error(sa, sb, match):
    with pytest.raises(ValueError, match=match):
        tinycnn.ones(*sa) @ tinycnn.ones(*sb)


def test_matmul_with_a_number_is_value_error():
    with pytest.raises(ValueError, match=r"'@' needs operands with at least 1 dimension, got shapes \(3,\) and \(\)"):
        tinycnn.ones(3) @ 2


@pytest.mark.parametrize("other", ["a", None, object()], ids=["str", "None", "object"])
def test_unsupported_operand_is_type_error(other):
    with pytest.raises(TypeError, match=r"unsupported operand for '\+'.*got"):
        tinycnn.ones(3) + other


@pytest.mark.parametrize("make_a, make_b, op", [
    (lambda m: m.ones(3), lambda m: m.tensor([1, 2, 3]), "+"),                  # float32 + int64 -> float32
    (lambda m: m.tensor([1, 2, 3]), lambda m: 1.5, "*"),                         # int + Python float -> float32
    (lambda m: m.tensor([1, 2, 3]), lambda m: 2, "/"),                           # int / int -> float32
    (lambda m: m.tensor([1, 2, 3]), lambda m: m.tensor([2, 2, 2]), "/"),
    (lambda m: m.ones(3), lambda m: m.tensor(np.array(2.0)), "*"),               # a 0-d float64 does not promote
    (lambda m: m.tensor(np.array(2.0)), lambda m: m.ones(3), "-"),
    (lambda m: m.ones(2, 3), lambda m: m.tensor([1, 2, 3]), "*"),
])
def test_binary_op_result_dtype_matches_torch(make_a, make_b, op):
    ours = _OPS[op](make_a(tinycnn), make_b(tinycnn))
    theirs = _OPS[op](make_a(torch), make_b(torch))
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_promotion_keeps_gradients_in_each_inputs_dtype():
    x = tinycnn.ones(3, requires_grad=True)                              # float32
    s = tinycnn.tensor(np.array(2.0), requires_grad=True)                # 0-d float64
    y = x * s
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32 and s.grad.dtype == np.float64
    np.testing.assert_allclose(s.grad.numpy(), 3.0)


@pytest.mark.parametrize("exponent", [0, 0.0, "tensor"])
def test_pow_with_zero_exponent_has_zero_gradient(exponent):
    base = np.array([0.0, 2.0, -1.0])
    e = np.zeros(3) if exponent == "tensor" else exponent
    a, ta = tinycnn.tensor(base, requires_grad=True), torch.tensor(base, requires_grad=True)
    (a ** (tinycnn.tensor(e) if exponent == "tensor" else e)).sum().backward()
    (ta ** (torch.tensor(e) if exponent == "tensor" else e)).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
    assert not np.isnan(a.grad.numpy()).any()


# ---------------------------------------------------------------------------- float ops on integer tensors
@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sigmoid", "tanh", "softmax", "log_softmax",
                                  "F.sigmoid", "F.tanh", "F.softmax", "F.log_softmax"])
def test_float_ops_promote_integer_tensors_to_float32(name):
    data = [[1, 2], [3, 4]]
    args = (1,) if "softmax" in name else ()
    # torch has no integer softmax kernels: compare with its float32 result (what exp etc. promote to)
    theirs_in = torch.tensor(data, dtype=torch.float32 if "softmax" in name else None)
    if name.startswith("F."):
        ours = getattr(F, name[2:])(tinycnn.tensor(data), *args)
        theirs = getattr(torch.nn.functional, name[2:])(theirs_in, *args)
    else:
        ours = getattr(tinycnn.tensor(data), name)(*args)
        theirs = getattr(theirs_in, name)(*args)
    assert ours.dtype == np.float32 and theirs.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------- reductions and shape methods
def test_max_dim_returns_named_values_and_indices():
    t = tinycnn.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    res = t.max(1)
    values, indices = res
    assert res.values is values and res.indices is indices
    np.testing.assert_array_equal(res.values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(res.indices.numpy(), [1, 0])


@pytest.mark.parametrize("data", [[[1.0, 3.0, 3.0]], [[2.0, 2.0], [2.0, 1.0]], [[0.0, 0.0, 0.0]]])
def test_full_max_splits_gradient_between_ties_like_torch(data):
    a, ta = tinycnn.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    a.max().backward()
    ta.max().backward()
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy())


def test_flatten_start_after_end_is_value_error():
    with pytest.raises(ValueError, match="start_dim must not come after end_dim, got start_dim=2, end_dim=1"):
        tinycnn.zeros(2, 3, 4, 5).flatten(2, 1)
    with pytest.raises(ValueError, match="start_dim must not come after end_dim"):
        nn.Flatten(3, 1)(tinycnn.zeros(2, 3, 4, 5))


def test_argmax_without_dim_keepdim_keeps_every_axis():
    t = np.random.default_rng(0).standard_normal((2, 3))
    ours = tinycnn.tensor(t).argmax(keepdim=True)
    theirs = torch.tensor(t).argmax(keepdim=True)
    assert ours.shape == tuple(theirs.shape) == (1, 1) and ours.item() == theirs.item()


@pytest.mark.parametrize("method", ["sum", "mean"])
def test_repeated_dim_is_value_error(method):
    with pytest.raises(ValueError, match=r"dim=\(1, -1\) names dimension 1 more than once"):
        getattr(tinycnn.ones(2, 2), method)((1, -1))


@pytest.mark.parametrize("method", ["sum", "mean"])
@pytest.mark.parametrize("keepdim", [False, True])
def test_empty_dim_tuple_reduces_everything_like_torch(method, keepdim):
    t = np.arange(6.0).reshape(2, 3)
    ours = getattr(tinycnn.tensor(t), method)((), keepdim=keepdim)
    theirs = getattr(torch.tensor(t), method)((), keepdim=keepdim)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy())


def test_cat_and_stack_check_shapes_and_types():
    with pytest.raises(ValueError, match=r"same shape except in dimension 0.*\(2, 3\).*tensors\[1\] has shape \(2, 2\)"):
        tinycnn.cat([tinycnn.ones(2, 3), tinycnn.ones(2, 2)])
    with pytest.raises(ValueError, match=r"stack\(\): tensors must all have the same shape.*\(3,\)"):
        tinycnn.stack([tinycnn.ones(2), tinycnn.ones(3)])
    with pytest.raises(TypeError, match=r"tensors\[1\] must be a tinycnn Tensor, got list"):
        tinycnn.cat([tinycnn.ones(2), [1.0, 2.0]])


# ---------------------------------------------------------------------------- layer / op arguments
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(stride="a"), TypeError, "stride must be an int or a pair of ints, got str"),
    (dict(stride=(1, "a")), TypeError, "stride must be an int or a pair of ints"),
    (dict(padding=1.5), TypeError, "padding must be an int or a pair of ints, got float"),
])
def test_conv2d_pair_arguments_error_types(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.conv2d(tinycnn.ones(1, 1, 5, 5), tinycnn.ones(1, 1, 3, 3), **kwargs)


def test_pair_arguments_accept_numpy_integers():
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 7))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    k = np.int64(2)
    ours = F.conv2d(tinycnn.tensor(x), tinycnn.tensor(w), stride=(k, 1), padding=(np.int32(1), 0))
    theirs = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=(2, 1), padding=(1, 0))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10)
    assert F.max_pool2d(tinycnn.tensor(x), (k, k)).shape == (1, 2, 3, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: F.leaky_relu(tinycnn.ones(2), "a"), "leaky_relu: negative_slope must be a number, got str"),
    (lambda: nn.LeakyReLU("a")(tinycnn.ones(2)), "negative_slope must be a number"),
    (lambda: nn.Dropout("a"), "dropout probability p must be a number in \\[0, 1\\], got str"),
    (lambda: nn.BatchNorm2d(3, eps="a"), "eps must be a non-negative number, got str"),
    (lambda: nn.BatchNorm1d(3, momentum="a"), "momentum must be None or a number in \\[0, 1\\], got str"),
    (lambda: F.batch_norm(tinycnn.ones(4, 3), tinycnn.zeros(3), tinycnn.ones(3), eps="a"),
     "batch_norm: eps must be a non-negative number, got str"),
    (lambda: nn.CrossEntropyLoss(label_smoothing="a"), "label_smoothing must be a number in \\[0, 1\\], got str"),
    (lambda: nn.FocalLoss(gamma="a"), "gamma must be a number >= 0, got str"),
    (lambda: F.focal_loss(tinycnn.ones(2, 3), np.array([0, 1]), gamma="a"), "focal_loss: gamma must be a number"),
    (lambda: nn.init.normal_(tinycnn.zeros(2), std="a"), "normal_: std must be a number, got str"),
    (lambda: nn.init.uniform_(tinycnn.zeros(2), a="a"), "uniform_: a must be a number, got str"),
    (lambda: nn.init.constant_(tinycnn.zeros(2), "a"), "constant_: val must be a number, got str"),
], ids=["F.leaky_relu", "LeakyReLU", "Dropout", "BatchNorm2d-eps", "BatchNorm1d-momentum", "F.batch_norm-eps",
        "CrossEntropyLoss", "FocalLoss", "F.focal_loss", "init.normal_", "init.uniform_", "init.constant_"])
def test_wrong_type_arguments_are_type_errors(make, match):
    with pytest.raises(TypeError, match=match):
        make()


def test_focal_loss_accepts_numpy_gamma():
    z, t = tinycnn.tensor(np.random.default_rng(0).standard_normal((4, 3))), np.array([0, 2, 1, 2])
    np.testing.assert_allclose(F.focal_loss(z, t, gamma=np.float32(2.0)).item(), F.focal_loss(z, t, gamma=2.0).item())


# ---------------------------------------------------------------------------- schedulers
@pytest.mark.parametrize("make, match", [
    (lambda o: S.StepLR(o, "3"), "step_size must be a positive int, got str"),
    (lambda o: S.CosineAnnealingLR(o, 2.5), "T_max must be a positive int, got float"),
    (lambda o: S.LinearLR(o, total_iters="5"), "total_iters must be a positive int"),
    (lambda o: S.ReduceLROnPlateau(o, patience="2"), "patience must be an int >= 0, got str"),
    (lambda o: S.ReduceLROnPlateau(o, cooldown=1.5), "cooldown must be an int >= 0, got float"),
    (lambda o: S.ReduceLROnPlateau(o, threshold="x"), "threshold must be a number"),
])
def test_scheduler_wrong_types_are_type_errors(make, match):
    opt = tinycnn.optim.SGD([nn.Parameter(tinycnn.ones(2))], lr=0.1)
    with pytest.raises(TypeError, match=match):
        make(opt)


# ---------------------------------------------------------------------------- state dicts and files
def test_load_state_dict_non_numeric_value_is_type_error_naming_the_key():
    m = nn.Linear(3, 2)
    with pytest.raises(TypeError, match=r"state_dict\['weight'\] must be a numeric array or a Tensor, got str"):
        m.load_state_dict({"weight": "abc", "bias": np.zeros(2)})


@pytest.mark.parametrize("value", [np.array(["a"]), {"nested": np.ones(2)}, "text"], ids=["str-array", "dict", "str"])
def test_save_non_numeric_value_is_type_error_naming_the_key(tmp_path, value):
    with pytest.raises(TypeError, match=r"obj\['bad'\] must be a Tensor or a numeric array"):
        tinycnn.save({"ok": np.ones(2), "bad": value}, tmp_path / "m.safetensors")


def test_load_returns_names_in_saved_order(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3), nn.BatchNorm1d(3))
    path = tmp_path / "m.safetensors"
    tinycnn.save(model.state_dict(), path, metadata={"k": "v"})
    loaded = tinycnn.load(path)
    assert list(loaded) == list(model.state_dict())
    assert tinycnn.serialization.load_metadata(path) == {"k": "v"}      # the order entry is internal
    model.load_state_dict(loaded)


# ---------------------------------------------------------------------------- gradcheck inputs
@pytest.mark.parametrize("inputs", [np.ones(3), 5, "x"], ids=["ndarray", "int", "str"])
def test_gradcheck_inputs_that_are_not_tensors_are_type_errors(inputs):
    with pytest.raises(TypeError, match="gradcheck: inputs must be a Tensor or a sequence of Tensors, got"):
        tinycnn.gradcheck(lambda a: a * 2, inputs)


def test_from_numpy_takes_the_creation_options():
    a = np.arange(3.0, dtype=np.float32)
    t = tinycnn.from_numpy(a, requires_grad=True, device="cpu")
    assert t.data is a and t.requires_grad and t.is_leaf
    d = tinycnn.from_numpy(a, dtype="float64")
    assert d.dtype == np.float64 and not np.shares_memory(d.data, a)


@pytest.mark.parametrize("setter", ["set_gpu_kernels", "set_cpu_kernels"])
def test_kernel_family_of_the_wrong_type_is_a_type_error(setter):
    from tinycnn import backends
    with pytest.raises(TypeError, match="family must be a str"):
        getattr(backends, setter)(1)
    with pytest.raises(ValueError, match="family must be one of"):
        getattr(backends, setter)("bogus")
