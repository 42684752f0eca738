"""state_dict: keys, order and shapes equal PyTorch's for the same architecture; torch weights give torch's
outputs; load_state_dict errors; safetensors round trip."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn


def _pair(in_ch=3, classes=5):
    """The same architecture in tinycnn and in torch (Sequential of the layers the project uses)."""
    ours = nn.Sequential(
        nn.Conv2d(in_ch, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8, momentum=None), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(8 * 2 * 2, 16), nn.BatchNorm1d(16), nn.Tanh(),
        nn.Linear(16, classes))
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(in_ch, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False), torch.nn.BatchNorm2d(8, momentum=None),
        torch.nn.LeakyReLU(0.1), torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Dropout(0.3),
        torch.nn.Linear(8 * 2 * 2, 16), torch.nn.BatchNorm1d(16), torch.nn.Tanh(), torch.nn.Linear(16, classes))
    return ours, theirs


class OursNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.heads = nn.ModuleList([nn.Linear(4, 2), nn.Linear(4, 3, bias=False)])

    def forward(self, x):
        z = self.pool(self.features(x)).flatten(1)
        return self.heads[0](z)


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(4, 2), torch.nn.Linear(4, 3, bias=False)])

    def forward(self, x):
        z = self.pool(self.features(x)).flatten(1)
        return self.heads[0](z)


def _keys_shapes(sd):
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def test_sequential_keys_order_and_shapes_equal_torch():
    ours, theirs = _pair()
    assert _keys_shapes(ours.state_dict()) == _keys_shapes(theirs.state_dict())
    sd = ours.state_dict()
    assert isinstance(sd, OrderedDict)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"].shape == ()
    assert sd["0.weight"].dtype == np.float32


def test_nested_module_keys_equal_torch():
    assert _keys_shapes(OursNet().state_dict()) == _keys_shapes(TorchNet().state_dict())
    assert [n for n, _ in OursNet().named_parameters()] == [n for n, _ in TorchNet().named_parameters()]
    assert [n for n, _ in OursNet().named_buffers()] == [n for n, _ in TorchNet().named_buffers()]
    assert [n for n, _ in OursNet().named_modules()] == [n for n, _ in TorchNet().named_modules()]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_torch_weights_give_torch_outputs_train_and_eval(dtype, rtol):
    ours, theirs = _pair()
    if dtype == np.float64:
        theirs.double()
        ours.double()
    # non-trivial running statistics and affine parameters
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(3)
    ours.load_state_dict(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(dtype)

    ours.eval()
    theirs.eval()
    y = ours(tinycnn.tensor(x))
    ty = theirs(torch.tensor(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=rtol)

    # training mode without dropout randomness: p=0 in both, then batch statistics and running updates
    ours[9].p = 0.0
    theirs[9].p = 0.0
    ours.train()
    theirs.train()
    xt = tinycnn.tensor(x, requires_grad=True)
    txt = torch.tensor(x, requires_grad=True)
    y = ours(xt)
    ty = theirs(txt)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=rtol, atol=rtol)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(xt.grad.numpy(), txt.grad.numpy(), rtol=rtol * 10, atol=rtol * 10)
    tgrads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tgrads[name].grad.numpy(), rtol=rtol * 10, atol=rtol * 10,
                                   err_msg=name)
    for k, v in theirs.state_dict().items():     # running stats and num_batches_tracked (momentum=None too)
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=rtol, atol=rtol, err_msg=k)


def test_state_dict_is_a_snapshot_and_load_copies_in_place():
    m = nn.Linear(3, 2)
    sd = m.state_dict()
    w_obj, w_arr = m.weight, m.weight.data
    before = sd["weight"].copy()
    m.weight.data += 1.0
    np.testing.assert_array_equal(sd["weight"], before)
    m.load_state_dict(sd)
    assert m.weight is w_obj and m.weight.data is w_arr      # in place: optimizers keep working
    np.testing.assert_array_equal(m.weight.data, before)


def test_load_state_dict_casts_dtype_and_accepts_tensors():
    m = nn.Linear(3, 2)
    src = {"weight": tinycnn.tensor(np.ones((2, 3))), "bias": np.arange(2, dtype=np.float64)}
    res = m.load_state_dict(src)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert m.weight.dtype == np.float32 and m.bias.data.tolist() == [0.0, 1.0]


def test_load_state_dict_errors_name_every_problem():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    sd = m.state_dict()
    bad = dict(sd)
    del bad["1.running_var"]
    bad["2.weight"] = np.zeros(3)
    bad["0.weight"] = np.zeros((2, 1, 5, 5))
    with pytest.raises(ValueError) as ei:
        m.load_state_dict(bad)
    msg = str(ei.value)
    assert "missing key(s) in state_dict: '1.running_var'" in msg
    assert "unexpected key(s) in state_dict: '2.weight'" in msg
    assert "size mismatch for '0.weight'" in msg and "(2, 1, 5, 5)" in msg and "(2, 1, 3, 3)" in msg
    assert isinstance(ei.value, RuntimeError)          # catchable as in PyTorch
    # nothing was copied when loading failed
    np.testing.assert_array_equal(m.state_dict()["0.weight"], sd["0.weight"])


def test_load_state_dict_non_strict_reports_keys():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    sd = {"0.weight": np.ones((2, 2)), "extra": np.ones(1)}
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["0.bias", "1.weight", "1.bias"]
    assert res.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m[0].weight.data, 1.0)
    with pytest.raises(ValueError, match="size mismatch for '0.weight'"):
        m.load_state_dict({"0.weight": np.ones((3, 2))}, strict=False)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        m.load_state_dict([1, 2])


def test_safetensors_round_trip(tmp_path):
    ours, _ = _pair()
    path = tmp_path / "m.safetensors"
    tinycnn.save(ours.state_dict(), path)
    other, _ = _pair()
    other.load_state_dict(tinycnn.load(path))
    for (k, a), (k2, b) in zip(ours.state_dict().items(), other.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


def test_non_persistent_buffers_and_none_entries_are_skipped():
    m = nn.Module()
    m.register_buffer("kept", tinycnn.zeros(2))
    m.register_buffer("scratch", tinycnn.zeros(2), persistent=False)
    m.register_buffer("nothing", None)
    m.register_parameter("p", None)
    assert list(m.state_dict()) == ["kept"]
    assert [n for n, _ in m.named_buffers()] == ["kept", "scratch"]
    bn = nn.BatchNorm2d(3, affine=False, track_running_stats=False)
    assert list(bn.state_dict()) == list(torch.nn.BatchNorm2d(3, affine=False, track_running_stats=False).state_dict())


def test_shared_module_is_saved_under_each_name_like_torch():
    lin = nn.Linear(2, 2)
    m = nn.Sequential(lin, nn.ReLU(), lin)
    tlin = torch.nn.Linear(2, 2)
    t = torch.nn.Sequential(tlin, torch.nn.ReLU(), tlin)
    assert list(m.state_dict()) == list(t.state_dict())
    assert len(list(m.parameters())) == len(list(t.parameters())) == 2
