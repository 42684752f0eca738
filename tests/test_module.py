"""Module API: registration, traversal, hooks, train/eval, zero_grad, to(dtype), apply, repr, containers."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
        self.register_buffer("counter", tinycnn.zeros(1))
        self.plain = 3      # not registered

    def forward(self, x):
        return self.bn(self.conv(x)) * self.scale


def test_registration_and_traversal():
    b = Block()
    assert [n for n, _ in b.named_parameters()] == ["scale", "conv.weight", "conv.bias", "bn.weight", "bn.bias"]
    assert [n for n, _ in b.named_buffers()] == ["counter", "bn.running_mean", "bn.running_var",
                                                 "bn.num_batches_tracked"]
    assert [n for n, _ in b.named_children()] == ["conv", "bn"]
    assert [type(m).__name__ for m in b.modules()] == ["Block", "Conv2d", "BatchNorm2d"]
    assert len(list(b.parameters(recurse=False))) == 1
    assert b.plain == 3 and "plain" not in b._parameters
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in b.parameters())


def test_reassigning_and_deleting_attributes():
    b = Block()
    b.conv = nn.Conv2d(1, 2, 1)
    assert b.conv.kernel_size == (1, 1)
    with pytest.raises(TypeError, match="cannot assign ndarray as parameter 'scale'"):
        b.scale = np.ones(1)
    with pytest.raises(TypeError, match="cannot assign int as child module 'conv'"):
        b.conv = 1
    b.counter = tinycnn.ones(1)
    assert b._buffers["counter"].data[0] == 1
    del b.bn
    assert "bn" not in dict(b.named_children())
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'bn'"):
        b.bn


def test_setattr_before_init_fails_clearly():
    class Bad(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(1, 1)

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Bad()


def test_register_errors():
    m = nn.Module()
    with pytest.raises(TypeError, match="buffer 'b' must be a Tensor or None, got ndarray"):
        m.register_buffer("b", np.zeros(1))
    with pytest.raises(ValueError, match="without '.'"):
        m.register_buffer("a.b", tinycnn.zeros(1))
    with pytest.raises(TypeError, match="must be a tinycnn.nn.Parameter"):
        m.register_parameter("w", tinycnn.zeros(1))
    with pytest.raises(TypeError, match="must be a tinycnn.nn.Module"):
        m.add_module("x", 5)


def test_forward_hook_sees_inputs_output_and_can_be_removed():
    m = nn.Linear(3, 2)
    seen = []

    def hook(mod, inputs, output):
        seen.append((mod, inputs, output))

    h = m.register_forward_hook(hook)
    x = tinycnn.randn(4, 3)
    y = m(x)
    assert len(seen) == 1
    assert seen[0][0] is m and seen[0][1][0] is x and seen[0][2] is y
    h.remove()
    m(x)
    assert len(seen) == 1


def test_forward_hook_can_replace_output_and_keep_grad():
    m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    acts = {}

    def keep(mod, inputs, output):
        output.retain_grad()
        acts["h"] = output

    h1 = m[0].register_forward_hook(keep)
    h2 = m[2].register_forward_hook(lambda mod, i, o: o * 2)
    x = tinycnn.randn(5, 3)
    y = m(x)
    y.sum().backward()
    assert acts["h"].grad is not None and acts["h"].grad.shape == (5, 3)   # Grad-CAM style access
    h1.remove()
    h2.remove()
    np.testing.assert_allclose(y.numpy(), 2 * m(x).numpy(), rtol=1e-6)


def test_forward_pre_hook_can_change_inputs():
    m = nn.Identity()
    h = m.register_forward_pre_hook(lambda mod, inputs: (inputs[0] + 1,))
    assert m(tinycnn.zeros(2)).numpy().tolist() == [1.0, 1.0]
    with h:
        pass
    assert m(tinycnn.zeros(2)).numpy().tolist() == [0.0, 0.0]


def test_train_eval_propagates_and_changes_behaviour():
    m = nn.Sequential(nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(4)))
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    x = tinycnn.randn(8, 4)
    np.testing.assert_allclose(m(x).numpy(), x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-6)
    m.train()
    assert all(mod.training for mod in m.modules())
    assert m[1][0].num_batches_tracked.item() == 0
    m(x)
    assert m[1][0].num_batches_tracked.item() == 1
    with pytest.raises(TypeError, match="expects a bool"):
        m.train("no")


def test_zero_grad_sets_none():
    m = nn.Linear(2, 1)
    m(tinycnn.randn(3, 2)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("how", ["double", "to_dtype", "to_positional"])
def test_to_dtype_converts_params_and_float_buffers_in_place(how):
    b = Block()
    params_before = list(b.parameters())
    if how == "double":
        out = b.double()
    elif how == "to_dtype":
        out = b.to(dtype="float64")
    else:
        out = b.to(np.float64)
    assert out is b
    assert list(b.parameters()) == params_before            # same Parameter objects
    assert all(p.dtype == np.float64 for p in b.parameters())
    assert b.bn.running_mean.dtype == np.float64
    assert b.bn.num_batches_tracked.dtype == np.int64
    y = b(tinycnn.randn(2, 1, 4, 4, dtype=np.float64))
    assert y.dtype == np.float64
    b.float()
    assert all(p.dtype == np.float32 for p in b.parameters())
    with pytest.raises(TypeError, match="floating-point dtype"):
        b.to(dtype=np.int32)


def test_to_cpu_is_a_no_op_and_bad_device_raises():
    m = nn.Linear(2, 2)
    arr = m.weight.data
    assert m.to("cpu") is m and m.weight.data is arr
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        m.to(device="tpu:0")


def test_apply_visits_children_first_then_self():
    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    order = []
    assert m.apply(lambda mod: order.append(type(mod).__name__)) is m
    assert order == ["Linear", "ReLU", "Sequential", "Sequential"]

    def init_zero(mod):
        if isinstance(mod, nn.Linear):
            nn.init.zeros_(mod.weight)
    m.apply(init_zero)
    assert not m[0].weight.data.any()


def test_repr_matches_torch():
    ours = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.Conv2d(2, 4, (5, 3), stride=2, dilation=2, groups=2,
                                                                   bias=False),
                         nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(3, stride=1, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(32, 2),
                         nn.LeakyReLU(0.2), nn.Sigmoid(), nn.Tanh(), nn.Softmax(dim=1), nn.Identity(),
                         nn.Sequential(nn.BatchNorm1d(3)))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.Conv2d(2, 4, (5, 3), stride=2, dilation=2, groups=2,
                                                              bias=False),
        torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(3, stride=1, padding=1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.25), torch.nn.Linear(32, 2),
        torch.nn.LeakyReLU(0.2), torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.Softmax(dim=1), torch.nn.Identity(),
        torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
    assert repr(ours) == repr(theirs)
    assert repr(Block()).startswith("Block(\n  (conv): Conv2d(1, 2, kernel_size=(3, 3)")


def test_sequential_indexing_len_iteration_and_names():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(s.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    assert named.fc is named[0]
    s.append(nn.Sigmoid())
    assert len(s) == 4
    del s[1]
    assert [k for k, _ in s.named_children()] == ["0", "1", "2"]
    with pytest.raises(IndexError, match="index 5 is out of range for Sequential of length 3"):
        s[5]
    with pytest.raises(TypeError, match="argument 1 must be a tinycnn.nn.Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_module_list_and_dict_register_parameters():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    ml.append(nn.Linear(2, 1))
    assert len(ml) == 4 and len(list(ml.parameters())) == 8
    assert list(ml.state_dict())[:2] == ["0.weight", "0.bias"]
    md = nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.ReLU()})
    assert list(md.state_dict()) == ["a.weight", "a.bias"] and "a" in md and list(md) == ["a", "b"]
    with pytest.raises(NotImplementedError, match="not callable"):
        ml(tinycnn.zeros(1))


def test_parameter_wraps_without_copy_and_repr():
    a = np.ones(3, dtype=np.float32)
    p = nn.Parameter(a)
    assert p.data is a and p.requires_grad and p.is_leaf
    t = tinycnn.tensor([1.0, 2.0])
    assert nn.Parameter(t).data is t.data
    assert not nn.Parameter(a, requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")
    y = p * 2
    assert type(y) is tinycnn.Tensor and not isinstance(y, nn.Parameter)


def test_get_submodule_and_requires_grad_():
    m = nn.Sequential(nn.Sequential(nn.Linear(1, 1)))
    assert m.get_submodule("0.0") is m[0][0]
    with pytest.raises(AttributeError, match="no submodule '3'"):
        m.get_submodule("0.3")
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_nn_namespaces_are_attributes_of_tinycnn():
    import tinycnn as tc
    assert tc.nn.functional.conv2d is not None
    assert tc.nn.init.kaiming_uniform_ is not None
    assert tc.optim.lr_scheduler.CosineAnnealingLR is not None
    assert tc.optim.Adam is not None


def test_train_calls_overridden_train_of_children():
    class FrozenBN(nn.BatchNorm2d):
        def train(self, mode=True):
            return super().train(False)      # e.g. keep BN statistics frozen when fine-tuning

    m = nn.Sequential(nn.Conv2d(1, 2, 3), FrozenBN(2))
    m.train()
    assert m.training and m[0].training and not m[1].training
