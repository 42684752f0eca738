"""Optimizers: 20 steps from the same weights and gradients give torch.optim's parameters (float64),
param groups, zero_grad, in-place updates that never touch the gradient arrays, state_dict round trips."""
import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn, optim
from tinycnn.backends import kernel

STEPS = 20

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, betas=(0.5, 0.9))),
    ("AdamW", dict(lr=0.01, weight_decay=0.0)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-6)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.1, eps=1e-4)),
]


def _case_id(case):
    name, kw = case
    return name + "[" + ",".join(f"{k}={v}" for k, v in kw.items()) + "]"


def _run_pair(name, kw, shapes, dtype=np.float64, steps=STEPS, seed=0):
    """Run our optimizer and torch's on the same weights and gradient sequence; return both param lists."""
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    ours = [nn.Parameter(w.copy()) for w in w0]
    theirs = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
    o = getattr(optim, name)(ours, **kw)
    t = getattr(torch.optim, name)(theirs, foreach=False, **kw)
    for gs in grads:
        for p, q, g in zip(ours, theirs, gs):
            p.grad = tinycnn.tensor(g.copy())
            q.grad = torch.from_numpy(g.copy())
        o.step()
        t.step()
    return ours, theirs, o, t


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_matches_torch_20_steps_float64(case):
    name, kw = case
    ours, theirs, _, _ = _run_pair(name, kw, [(3, 4), (5,), (2, 3, 2, 2)])
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"])
def test_matches_torch_float32(name):
    kw = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    ours, theirs, _, _ = _run_pair(name, kw, [(6, 7)], dtype=np.float32)
    for p, q in zip(ours, theirs):
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES[::3], ids=[_case_id(c) for c in CASES[::3]])
def test_state_keys_and_shapes_match_torch(case):
    name, kw = case
    _, _, o, t = _run_pair(name, kw, [(3, 4), (5,)], steps=2)
    ours, theirs = o.state_dict(), t.state_dict()
    assert set(ours["state"]) == set(theirs["state"])
    for i, s in theirs["state"].items():
        assert set(ours["state"][i]) == set(s)
        for k, v in s.items():
            assert ours["state"][i][k].shape == tuple(v.shape), k
            np.testing.assert_allclose(ours["state"][i][k], v.numpy(), rtol=1e-10, atol=1e-14)
    assert ours["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]
    for k in ("lr", "weight_decay"):
        assert ours["param_groups"][0][k] == theirs["param_groups"][0][k]


def test_param_groups_use_their_own_options_like_torch():
    rng = np.random.default_rng(1)
    a0, b0 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    a, b = nn.Parameter(a0.copy()), nn.Parameter(b0.copy())
    ta, tb = torch.nn.Parameter(torch.tensor(a0)), torch.nn.Parameter(torch.tensor(b0))
    o = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.0}], lr=0.1, momentum=0.9)
    t = torch.optim.SGD([{"params": [ta]}, {"params": [tb], "lr": 0.5, "momentum": 0.0}], lr=0.1, momentum=0.9,
                        foreach=False)
    assert [g["lr"] for g in o.param_groups] == [0.1, 0.5]
    assert o.param_groups[1]["momentum"] == 0.0 and o.param_groups[0]["momentum"] == 0.9
    for _ in range(5):
        ga, gb = rng.standard_normal((4, 3)), rng.standard_normal(3)
        a.grad, b.grad = tinycnn.tensor(ga), tinycnn.tensor(gb)
        ta.grad, tb.grad = torch.tensor(ga), torch.tensor(gb)
        o.step()
        t.step()
    np.testing.assert_allclose(a.data, ta.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-12)
    assert "momentum_buffer" not in o.state.get(b, {})


def test_add_param_group_and_duplicates():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3))
    o = optim.Adam([a], lr=0.1)
    o.add_param_group({"params": b, "lr": 0.01})
    assert o.param_groups[1]["betas"] == (0.9, 0.999) and o.param_groups[1]["lr"] == 0.01
    with pytest.raises(ValueError, match="more than one parameter group"):
        o.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(a, lr=0.1)


def test_updates_in_place_and_leaves_grad_arrays_alone():
    w = nn.Parameter(np.arange(6.0).reshape(2, 3))
    shared = np.full((2, 3), 0.5)
    before = shared.copy()
    arr_id = id(w.data)
    for cls, kw in [(optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)),
                    (optim.Adam, dict(weight_decay=0.1)), (optim.AdamW, {}),
                    (optim.Adagrad, dict(weight_decay=0.1)),
                    (optim.RMSprop, dict(momentum=0.9, centered=True, weight_decay=0.1))]:
        o = cls([w], **kw)
        for _ in range(3):
            w.grad = tinycnn.Tensor._wrap(shared)    # the grad *is* the shared array, not a copy
            o.step()
        assert id(w.data) == arr_id, cls.__name__
        np.testing.assert_array_equal(shared, before, err_msg=cls.__name__)


def test_skips_params_without_grad_and_zero_grad_sets_none():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))
    o = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = tinycnn.tensor(np.ones(3))
    o.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 1.0)
    assert b not in o.state
    o.zero_grad()
    assert a.grad is None and b.grad is None
    a.grad = tinycnn.tensor(np.ones(3))
    o.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.data, 0.0)


def test_closure_is_evaluated_and_returned():
    w = nn.Parameter(np.array([3.0]))
    o = optim.SGD([w], lr=0.25)

    def closure():
        o.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    loss = o.step(closure)
    assert loss.item() == pytest.approx(9.0)
    np.testing.assert_allclose(w.data, [3.0 - 0.25 * 6.0])


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01)),
                                     ("AdamW", dict(lr=0.01)), ("Adagrad", dict(lr=0.1)),
                                     ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True))])
def test_state_dict_round_trip_resumes_exactly(name, kw):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 5))
    grads = [rng.standard_normal((4, 5)) for _ in range(10)]
    ref = nn.Parameter(w0.copy())
    o_ref = getattr(optim, name)([ref], **kw)
    for g in grads:
        ref.grad = tinycnn.tensor(g)
        o_ref.step()

    p = nn.Parameter(w0.copy())
    o = getattr(optim, name)([p], **kw)
    for g in grads[:5]:
        p.grad = tinycnn.tensor(g)
        o.step()
    sd = o.state_dict()
    for s in sd["state"].values():
        assert all(isinstance(v, np.ndarray) for v in s.values())
    # state_dict is a snapshot: stepping further does not change it
    snapshot = {k: v.copy() for k, v in sd["state"][0].items()}
    p2 = nn.Parameter(p.data.copy())
    o2 = getattr(optim, name)([p2], lr=123.0)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["lr"] == kw["lr"]
    for g in grads[5:]:
        p2.grad = tinycnn.tensor(g)
        o2.step()
        p.grad = tinycnn.tensor(g)
        o.step()
    for k, v in snapshot.items():
        np.testing.assert_array_equal(sd["state"][0][k], v)
    np.testing.assert_array_equal(p2.data, ref.data)
    np.testing.assert_array_equal(p.data, ref.data)


def test_load_state_dict_from_torch_optimizer():
    """A torch Adam state_dict (tensors) loads and continues exactly like torch."""
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal(6)
    tp = torch.nn.Parameter(torch.tensor(w0))
    t = torch.optim.Adam([tp], lr=0.05, foreach=False)
    for _ in range(4):
        tp.grad = torch.tensor(rng.standard_normal(6))
        t.step()
    p = nn.Parameter(tp.detach().numpy().copy())
    o = optim.Adam([p], lr=0.05)
    o.load_state_dict(t.state_dict())
    for _ in range(4):
        g = rng.standard_normal(6)
        tp.grad, p.grad = torch.tensor(g), tinycnn.tensor(g)
        t.step()
        o.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12)


def test_load_state_dict_errors():
    a = nn.Parameter(np.ones(3))
    o = optim.Adam([a])
    a.grad = tinycnn.tensor(np.ones(3))
    o.step()
    sd = o.state_dict()
    o2 = optim.Adam([nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))])
    with pytest.raises(ValueError, match="loaded state dict has 1 parameters"):
        o2.load_state_dict(sd)
    o3 = optim.Adam([{"params": [nn.Parameter(np.ones(3))]}, {"params": [nn.Parameter(np.ones(3))]}])
    with pytest.raises(ValueError, match="1 parameter groups"):
        o3.load_state_dict(sd)
    o4 = optim.Adam([nn.Parameter(np.ones(4))])
    with pytest.raises(ValueError, match=r"'exp_avg' has shape \(3,\).*\(4,\)"):
        o4.load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        o4.load_state_dict({"foo": 1})


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD([p], lr=-1.0), "lr must be >= 0"),
    (lambda p: optim.SGD([p], lr=0.1, momentum=-0.5), "momentum must be >= 0"),
    (lambda p: optim.SGD([p], lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (lambda p: optim.SGD([p], lr=0.1, weight_decay=-1), "weight_decay must be >= 0"),
    (lambda p: optim.Adam([p], betas=(1.0, 0.999)), r"betas\[0\] must be < 1.0"),
    (lambda p: optim.Adam([p], betas=(0.9,)), "betas must be a pair"),
    (lambda p: optim.Adam([p], eps=-1e-8), "eps must be >= 0"),
    (lambda p: optim.Adam([p], amsgrad=True), "amsgrad=True is not supported"),
    (lambda p: optim.RMSprop([p], alpha=-0.1), "alpha must be >= 0"),
    (lambda p: optim.Adagrad([p], lr_decay=-1), "lr_decay must be >= 0"),
])
def test_bad_hyperparameters_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make(nn.Parameter(np.ones(2)))


def test_bad_param_types():
    with pytest.raises(TypeError, match=r"params\[1\] is ndarray"):
        optim.SGD([nn.Parameter(np.ones(2)), np.ones(2)], lr=0.1)
    x = tinycnn.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="leaf Tensors"):
        optim.SGD([x * 2], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a number"):
        optim.SGD([x], lr="0.1")


def test_adam_step_primitive_reference_matches_torch_formula():
    """The NumPy adam_step (docs/kernels.md) on flat buffers: Adam and AdamW against torch's functional forms."""
    rng = np.random.default_rng(5)
    for decoupled in (False, True):
        p = rng.standard_normal(50)
        g = rng.standard_normal(50)
        m, v = rng.standard_normal(50) * 0.1, rng.random(50) * 0.1
        tp, tm, tv = torch.tensor(p), torch.tensor(m), torch.tensor(v)
        fn = kernel("adam_step", p)
        g_before = g.copy()
        fn(p, g, m, v, 7, 0.01, 0.9, 0.999, 1e-8, 0.1, decoupled)
        np.testing.assert_array_equal(g, g_before)
        torch.optim._functional.adam([tp], [torch.tensor(g)], [tm], [tv], [], [torch.tensor(6.0)],
                                     amsgrad=False, beta1=0.9, beta2=0.999, lr=0.01, weight_decay=0.1, eps=1e-8,
                                     maximize=False, foreach=False, decoupled_weight_decay=decoupled)
        np.testing.assert_allclose(p, tp.numpy(), rtol=1e-12)
        np.testing.assert_allclose(m, tm.numpy(), rtol=1e-12)
        np.testing.assert_allclose(v, tv.numpy(), rtol=1e-12)


def test_reference_cnn_three_adam_steps_match_torch():
    """The project's reference network: same weights as torch after 3 Adam(1e-3) training steps (float64)."""
    def ours_model():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 2))
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                             torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                             torch.nn.Flatten(), torch.nn.Linear(8 * 3 * 3, 16), torch.nn.ReLU(),
                             torch.nn.Linear(16, 2)).double()
    m = ours_model().double()
    m.load_state_dict(tm.state_dict())
    o = optim.Adam(m.parameters(), lr=1e-3)
    t = torch.optim.Adam(tm.parameters(), lr=1e-3, foreach=False)
    rng = np.random.default_rng(6)
    for _ in range(3):
        x = rng.standard_normal((8, 1, 12, 12))
        y = rng.integers(0, 2, 8)
        o.zero_grad()
        loss = nn.CrossEntropyLoss()(m(tinycnn.tensor(x)), tinycnn.tensor(y))
        loss.backward()
        o.step()
        t.zero_grad()
        tl = torch.nn.CrossEntropyLoss()(tm(torch.tensor(x)), torch.tensor(y))
        tl.backward()
        t.step()
        assert loss.item() == pytest.approx(tl.item(), rel=1e-10)
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k], v.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["cupy", "numba"])
@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
                                     ("Adam", dict(lr=0.01, weight_decay=0.1)), ("AdamW", dict(lr=0.01)),
                                     ("Adagrad", dict(lr=0.1)), ("RMSprop", dict(lr=0.01, centered=True,
                                                                                 momentum=0.5))])
def test_optimizers_on_cuda_match_cpu(family, name, kw):
    """Module.to('cuda') keeps the Parameters; the GPU update (adam_step kernels for Adam/AdamW) equals the CPU one."""
    from tinycnn import backends
    prev = backends.get_gpu_kernels()
    backends.set_gpu_kernels(family)
    try:
        for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-5)):
            cpu = nn.Linear(7, 5, dtype=dtype)
            gpu = nn.Linear(7, 5, dtype=dtype)
            gpu.load_state_dict(cpu.state_dict())
            params = list(gpu.parameters())
            gpu.to("cuda")
            assert list(gpu.parameters()) == params and gpu.weight.device == "cuda"
            oc, og = getattr(optim, name)(cpu.parameters(), **kw), getattr(optim, name)(gpu.parameters(), **kw)
            rng = np.random.default_rng(0)
            for _ in range(STEPS):
                for pc, pg in zip(cpu.parameters(), gpu.parameters()):
                    g = rng.standard_normal(pc.shape).astype(dtype)
                    pc.grad = tinycnn.tensor(g)
                    pg.grad = tinycnn.tensor(g).to("cuda")
                oc.step()
                og.step()
            for k, v in cpu.state_dict().items():
                np.testing.assert_allclose(gpu.state_dict()[k], v, rtol=rtol, atol=rtol, err_msg=f"{k} {dtype}")
            sd = og.state_dict()
            assert all(isinstance(a, np.ndarray) for s in sd["state"].values() for a in s.values())
    finally:
        backends.set_gpu_kernels(prev)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.5), momentum=st.floats(0.0, 0.99), dampening=st.floats(0.0, 0.9),
       weight_decay=st.floats(0.0, 0.5), nesterov=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_sgd_random_hyperparameters_match_torch(lr, momentum, dampening, weight_decay, nesterov, seed):
    if nesterov:
        momentum, dampening = max(momentum, 0.1), 0.0
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    ours, theirs, _, _ = _run_pair("SGD", kw, [(4, 3)], steps=8, seed=seed)
    np.testing.assert_allclose(ours[0].data, theirs[0].detach().numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["Adam", "AdamW"]), lr=st.floats(1e-4, 0.1), beta1=st.floats(0.0, 0.99),
       beta2=st.floats(0.5, 0.9999), eps=st.floats(1e-10, 1e-3), weight_decay=st.floats(0.0, 0.5),
       seed=st.integers(0, 2 ** 16))
def test_adam_random_hyperparameters_match_torch(name, lr, beta1, beta2, eps, weight_decay, seed):
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    ours, theirs, _, _ = _run_pair(name, kw, [(4, 3)], steps=8, seed=seed)
    np.testing.assert_allclose(ours[0].data, theirs[0].detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make,buffers", [
    (lambda ps: tinycnn.optim.SGD(ps, lr=0.1, momentum=0.9), ("momentum_buffer",)),
    (lambda ps: tinycnn.optim.AdamW(ps, lr=0.1), ("exp_avg", "exp_avg_sq")),
], ids=["sgd", "adamw"])
def test_state_buffers_that_are_not_contiguous_still_update(make, buffers):
    """A loaded state may hold Fortran-ordered buffers: the fused update must still reach the state
    (the kernels update flat views, and reshape(-1) of such a buffer is a copy)."""
    rng = np.random.default_rng(0)
    w0, g1, g2 = (rng.standard_normal((3, 4)) for _ in range(3))
    results = []
    for fortran in (False, True):
        p = tinycnn.tensor(w0.copy(), requires_grad=True)
        opt = make([p])
        for k, g in enumerate((g1, g2, g1)):
            p.grad = tinycnn.tensor(g)
            opt.step()
            if k == 0 and fortran:
                st = next(iter(opt.state.values()))
                for key in buffers:
                    st[key] = np.asfortranarray(st[key])
        results.append(p.numpy().copy())
    np.testing.assert_array_equal(results[0], results[1])
