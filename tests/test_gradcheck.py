"""tinycnn.gradcheck: passes on correct gradients, names position/element/values on wrong ones."""
import re

import numpy as np
import pytest

import tinycnn
from tinycnn.autograd import Function


def _t(rng, *shape, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return tinycnn.tensor(a, requires_grad=True)


CORRECT = {
    "add-broadcast": (lambda a, b: a + b, [(3, 4), (4,)]),
    "mul-broadcast": (lambda a, b: a * b, [(2, 1, 3), (4, 1)]),
    "div": (lambda a, b: a / (b * b + 1), [(3,), (3,)]),
    "pow": (lambda a, b: a ** b, [("pos", 3, 2), (2,)]),
    "matmul": (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "matmul-vec": (lambda a, b: a @ b, [(4,), (2, 4, 3)]),
    "exp-log": (lambda a: (a.exp() + 1).log(), [(2, 3)]),
    "sigmoid-tanh": (lambda a: a.sigmoid() * a.tanh(), [(5,)]),
    "softmax": (lambda a: a.softmax(1), [(3, 4)]),
    "log_softmax": (lambda a: a.log_softmax(0), [(3, 4)]),
    "sum-mean": (lambda a: a.sum(1) * a.mean((0, 2), keepdim=False).sum(), [(2, 3, 4)]),
    "max-dim": (lambda a: a.max(1)[0], [(3, 5)]),
    "shape-ops": (lambda a: a.permute(2, 0, 1).reshape(4, 6).transpose(0, 1).flatten()[::2], [(2, 3, 4)]),
    "index-repeated": (lambda a: a[np.array([0, 0, 2])] * 3, [(3, 2)]),
    "scalar-output": (lambda a: (a * a).sum(), [(4,)]),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_gradcheck_passes_on_correct_functions(name, rng):
    fn, shapes = CORRECT[name]
    inputs = []
    for s in shapes:
        if s[0] == "pos":
            inputs.append(_t(rng, *s[1:], positive=True))
        else:
            inputs.append(_t(rng, *s))
    assert tinycnn.gradcheck(fn, inputs) is True


def test_gradcheck_single_tensor_input(rng):
    assert tinycnn.gradcheck(lambda a: a.exp(), _t(rng, 3)) is True


def test_gradcheck_float32_inputs_are_checked_in_float64(rng):
    x = tinycnn.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    seen = []

    def fn(a):
        seen.append(a.dtype)
        return a.sigmoid()

    assert tinycnn.gradcheck(fn, [x]) is True
    assert set(seen) == {np.dtype(np.float64)}


def test_gradcheck_passes_through_non_tensor_and_no_grad_inputs(rng):
    a = _t(rng, 3)
    b = tinycnn.tensor(rng.standard_normal(3))   # constant: not checked
    assert tinycnn.gradcheck(lambda x, y, k: x * y * k, [a, b, 2.5]) is True


def test_gradcheck_does_not_modify_inputs(rng):
    a = _t(rng, 2, 3)
    before = a.numpy().copy()
    tinycnn.gradcheck(lambda x: x * x, [a])
    np.testing.assert_array_equal(a.numpy(), before)


class WrongSquare(Function):
    """y = a^2 with a deliberately wrong backward (g * a instead of 2 g a)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * a


class WrongSecondInput(Function):
    """y = a * b; b's gradient is wrong only at flat element 4."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        db = g * a
        db.reshape(-1)[4] += 1.0
        return g * b, db


def test_gradcheck_raises_on_wrong_function_naming_input_element_and_values():
    x = tinycnn.tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    with pytest.raises(tinycnn.GradcheckError) as info:
        tinycnn.gradcheck(lambda a: WrongSquare.apply(a).sum(), [x])
    msg = str(info.value)
    assert "input 0" in msg
    assert "element (0, 0)" in msg
    numbers = re.findall(r"numerical ([-\d.e+]+) vs analytical ([-\d.e+]+)", msg)
    assert numbers, msg
    numerical, analytical = map(float, numbers[0])
    np.testing.assert_allclose(numerical, 2.0, rtol=1e-6)
    np.testing.assert_allclose(analytical, 1.0, rtol=1e-12)


def test_gradcheck_error_is_a_runtime_error(rng):
    with pytest.raises(RuntimeError, match="gradcheck failed"):
        tinycnn.gradcheck(lambda a: WrongSquare.apply(a), [_t(rng, 3)])


def test_gradcheck_names_second_input_and_its_element(rng):
    a, b = _t(rng, 2, 3), _t(rng, 2, 3)
    with pytest.raises(tinycnn.GradcheckError, match=r"input 1 at element \(1, 1\).*numerical.*analytical"):
        tinycnn.gradcheck(lambda x, y: WrongSecondInput.apply(x, y), [a, b])


def test_gradcheck_detects_small_error_over_tolerance():
    class SlightlyOff(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 3

        @staticmethod
        def backward(ctx, g):
            return g * 3.01

    x = tinycnn.tensor(np.array([1.0]), requires_grad=True)
    with pytest.raises(tinycnn.GradcheckError):
        tinycnn.gradcheck(lambda a: SlightlyOff.apply(a), [x])
    assert tinycnn.gradcheck(lambda a: SlightlyOff.apply(a), [x], atol=0.1, rtol=0)


def test_gradcheck_without_grad_inputs_is_value_error():
    with pytest.raises(ValueError, match="requires_grad"):
        tinycnn.gradcheck(lambda a: a * 2, [tinycnn.tensor([1.0])])


def test_gradcheck_fn_must_return_tensor(rng):
    with pytest.raises(TypeError, match="Tensor"):
        tinycnn.gradcheck(lambda a: 3.0, [_t(rng, 2)])
