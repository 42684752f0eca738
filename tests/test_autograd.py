"""The autograd engine: deep graphs, accumulation, no_grad, retain_grad, freeing the graph, backward(grad)."""
import gc
import weakref

import numpy as np
import pytest

import tinycnn
from tinycnn.autograd import Function


def test_chain_of_100000_ops_backprops_without_recursion_error():
    x = tinycnn.tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1e-6
    y = (y * 2.0).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])
    np.testing.assert_allclose(y.item(), 2 * (1 + 0.1), rtol=1e-9)


def test_deep_multiplicative_chain_gradient():
    # d/dx of x * 1.0001^n is 1.0001^n; checks every link of a long chain contributes exactly once
    x = tinycnn.tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(5_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** 5_000, rtol=1e-10)


def test_tensor_used_twice_accumulates():
    x = tinycnn.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x + x).sum()       # dy/dx = 2x + 1
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1)


def test_diamond_graph_accumulates_through_intermediate():
    x = tinycnn.tensor(np.array([0.5, -1.0]), requires_grad=True)
    h = x.exp()
    y = (h * 2 + h * h).sum()   # dy/dx = (2 + 2h) h
    y.backward()
    h_ = np.exp(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), (2 + 2 * h_) * h_, rtol=1e-12)


def test_two_backward_calls_accumulate_into_grad():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 + 2 * x.numpy())


def test_grad_accumulation_does_not_alias_between_tensors():
    # Add's backward hands the same array to both inputs; each .grad must own its buffer
    a = tinycnn.tensor(np.array([1.0]), requires_grad=True)
    b = tinycnn.tensor(np.array([2.0]), requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 10
    np.testing.assert_array_equal(b.grad.numpy(), [1.0])
    (a + b).sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [2.0])


def test_no_grad_records_nothing():
    x = tinycnn.tensor([1.0, 2.0], requires_grad=True)
    with tinycnn.no_grad():
        y = x * 2
        assert not tinycnn.is_grad_enabled()
    assert tinycnn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_restores_on_exception():
    @tinycnn.no_grad()
    def f(t):
        return t * 2

    x = tinycnn.tensor([1.0], requires_grad=True)
    assert not f(x).requires_grad
    with pytest.raises(KeyError):
        with tinycnn.no_grad():
            raise KeyError("boom")
    assert tinycnn.is_grad_enabled()
    assert (x * 2).requires_grad


def test_non_leaf_grad_is_none_unless_retained():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    k = x * 4
    k.retain_grad()
    ((h + k) * 2).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), [14.0, 14.0])


def test_retain_grad_on_root():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 2
    y.retain_grad()
    y.backward(np.array([0.5, 1.5]))
    np.testing.assert_allclose(y.grad.numpy(), [0.5, 1.5])


def test_second_backward_raises_clear_error():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_second_backward_through_shared_subgraph_raises():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x.exp()
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        (h * 2).sum().backward()


def test_retain_graph_allows_second_backward():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    e = np.exp(x.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 2 * (e + x.numpy() * e), rtol=1e-12)


class _Hold(Function):
    """y = a * 2, saving a large extra array so the test can watch it being freed."""

    @staticmethod
    def forward(ctx, a, big):
        ctx.save_for_backward(big)
        ctx.extra = big
        return a * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2, None


class _Big:
    """A weak-referenceable holder standing in for a large saved array."""

    def __init__(self, n):
        self.array = np.zeros(n)


def test_saved_arrays_are_freed_after_backward():
    x = tinycnn.tensor(np.array([1.0]), requires_grad=True)
    big = _Big(1_000_000)
    ref = weakref.ref(big)
    y = _Hold.apply(x, big).sum()
    del big
    gc.collect()
    assert ref() is not None, "the graph must keep saved arrays until backward()"
    y.backward()
    gc.collect()
    assert ref() is None, "saved arrays must be released by backward()"
    np.testing.assert_allclose(x.grad.numpy(), [2.0])


def test_saved_arrays_kept_with_retain_graph():
    x = tinycnn.tensor(np.array([1.0]), requires_grad=True)
    big = _Big(10)
    ref = weakref.ref(big)
    y = _Hold.apply(x, big).sum()
    del big
    y.backward(retain_graph=True)
    gc.collect()
    assert ref() is not None


def test_intermediate_tensors_freed_after_backward():
    x = tinycnn.tensor(np.ones(1000), requires_grad=True)
    h = x.exp()
    ref = weakref.ref(h)
    y = (h * 3).sum()
    del h
    gc.collect()
    assert ref() is not None, "the graph keeps intermediate tensors alive before backward"
    y.backward()
    gc.collect()
    assert ref() is None, "backward must cut the graph so intermediates can be collected"


def test_backward_non_scalar_without_grad_names_grad_and_shape():
    x = tinycnn.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"grad.*\(2, 3\)"):
        (x * 2).backward()


@pytest.mark.parametrize("kind", ["tensor", "array", "list"])
def test_backward_accepts_tensor_or_array(kind):
    x = tinycnn.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    g = np.array([0.1, 0.2, 0.3])
    grad = {"tensor": tinycnn.tensor(g), "array": g, "list": g.tolist()}[kind]
    (x * 2).backward(grad)
    np.testing.assert_allclose(x.grad.numpy(), 2 * g)


def test_backward_grad_wrong_shape():
    x = tinycnn.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"grad.*\(3,\).*\(2,\)"):
        (x * 2).backward(np.ones(2))


def test_backward_one_element_non_0d_defaults_to_one():
    x = tinycnn.tensor(np.array([[2.0]]), requires_grad=True)
    (x * x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [[4.0]])


def test_backward_on_leaf():
    x = tinycnn.tensor(np.array(3.0), requires_grad=True)
    x.backward()
    assert x.grad.item() == 1.0


def test_grad_dtype_follows_input_dtype():
    x = tinycnn.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (x * np.float64(2.0)).sum().backward()
    assert x.grad.dtype == np.float32


def test_custom_function_needs_input_grad_and_none_grads():
    seen = {}

    class Scale(Function):
        @staticmethod
        def forward(ctx, a, b):
            seen["needs"] = ctx.needs_input_grad
            ctx.save_for_backward(b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            (b,) = ctx.saved_tensors
            return g * b, None

    a = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = tinycnn.tensor(np.array([3.0, 4.0]))
    Scale.apply(a, b).sum().backward()
    assert seen["needs"] == (True, False)
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 4.0])
    assert b.grad is None


def test_custom_function_broadcast_grad_is_unbroadcast_by_engine():
    class AddRow(Function):
        @staticmethod
        def forward(ctx, a, row):
            return a + row

        @staticmethod
        def backward(ctx, g):
            return g, g   # the engine sums g down to row's shape

    a = tinycnn.tensor(np.ones((4, 3)), requires_grad=True)
    row = tinycnn.tensor(np.ones((1, 3)), requires_grad=True)
    AddRow.apply(a, row).sum().backward()
    np.testing.assert_allclose(row.grad.numpy(), [[4.0, 4.0, 4.0]])


def test_detach_breaks_graph():
    x = tinycnn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.detach() * x).sum()   # d/dx = x (the detached factor is a constant)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])
