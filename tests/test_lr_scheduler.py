"""LR schedulers: the same learning-rate sequence as torch.optim.lr_scheduler, state_dict round trips, errors."""
import json
import math
import warnings

import numpy as np
import pytest
import torch

from tinycnn import nn, optim
from tinycnn.optim import lr_scheduler as S

EPOCHS = 40


def _opts(lrs=(0.1,)):
    ours = optim.SGD([{"params": [nn.Parameter(np.zeros(1))], "lr": lr} for lr in lrs], lr=lrs[0])
    theirs = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs], lr=lrs[0])
    return ours, theirs


def _sequences(make_ours, make_theirs, lrs=(0.1,), epochs=EPOCHS, metrics=None):
    o, t = _opts(lrs)
    so, st = make_ours(o), make_theirs(t)
    a = [so.get_last_lr()]
    b = [st.get_last_lr()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch warns that optimizer.step() was not called
        for e in range(epochs):
            o.step()
            t.step()
            if metrics is None:
                so.step()
                st.step()
            else:
                so.step(metrics[e])
                st.step(metrics[e])
            a.append(so.get_last_lr())
            b.append(st.get_last_lr())
            assert [g["lr"] for g in o.param_groups] == a[-1]
    return np.array(a, dtype=float), np.array(b, dtype=float)


CASES = {
    "StepLR": (lambda o: S.StepLR(o, 7, gamma=0.5), lambda t: torch.optim.lr_scheduler.StepLR(t, 7, gamma=0.5)),
    "StepLR-default-gamma": (lambda o: S.StepLR(o, 3), lambda t: torch.optim.lr_scheduler.StepLR(t, 3)),
    "MultiStepLR": (lambda o: S.MultiStepLR(o, [5, 12, 12, 30], gamma=0.3),
                    lambda t: torch.optim.lr_scheduler.MultiStepLR(t, [5, 12, 12, 30], gamma=0.3)),
    "ExponentialLR": (lambda o: S.ExponentialLR(o, 0.93), lambda t: torch.optim.lr_scheduler.ExponentialLR(t, 0.93)),
    "CosineAnnealingLR": (lambda o: S.CosineAnnealingLR(o, 10, eta_min=0.001),
                          lambda t: torch.optim.lr_scheduler.CosineAnnealingLR(t, 10, eta_min=0.001)),
    "CosineAnnealingLR-past-Tmax": (lambda o: S.CosineAnnealingLR(o, 7),
                                    lambda t: torch.optim.lr_scheduler.CosineAnnealingLR(t, 7)),
    "LinearLR-default": (lambda o: S.LinearLR(o), lambda t: torch.optim.lr_scheduler.LinearLR(t)),
    "LinearLR-decay": (lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=15),
                       lambda t: torch.optim.lr_scheduler.LinearLR(t, start_factor=1.0, end_factor=0.1,
                                                                   total_iters=15)),
    "LambdaLR": (lambda o: S.LambdaLR(o, lambda e: 0.95 ** e / (1 + e % 3)),
                 lambda t: torch.optim.lr_scheduler.LambdaLR(t, lambda e: 0.95 ** e / (1 + e % 3))),
    "SequentialLR-warmup-cosine": (
        lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(o, 30)],
                                 milestones=[5]),
        lambda t: torch.optim.lr_scheduler.SequentialLR(
            t, [torch.optim.lr_scheduler.LinearLR(t, start_factor=0.1, total_iters=5),
                torch.optim.lr_scheduler.CosineAnnealingLR(t, 30)], milestones=[5])),
    "SequentialLR-three": (
        lambda o: S.SequentialLR(o, [S.ExponentialLR(o, 0.9), S.StepLR(o, 4), S.LinearLR(o, 0.5, total_iters=3)],
                                 milestones=[6, 20]),
        lambda t: torch.optim.lr_scheduler.SequentialLR(
            t, [torch.optim.lr_scheduler.ExponentialLR(t, 0.9), torch.optim.lr_scheduler.StepLR(t, 4),
                torch.optim.lr_scheduler.LinearLR(t, 0.5, total_iters=3)], milestones=[6, 20])),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("lrs", [(0.1,), (0.1, 0.02)], ids=["one-group", "two-groups"])
def test_lr_sequence_matches_torch(name, lrs):
    a, b = _sequences(*CASES[name], lrs=lrs)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_cosine_rises_again_past_t_max_like_torch():
    a, _ = _sequences(*CASES["CosineAnnealingLR-past-Tmax"], epochs=21)
    assert a[7, 0] == pytest.approx(0.0, abs=1e-15)
    assert a[14, 0] == pytest.approx(0.1, rel=1e-12)     # a full cosine period later it is back at the base lr
    assert a[21, 0] == pytest.approx(0.0, abs=1e-12)


REDUCE = [
    dict(),
    dict(mode="max", factor=0.5, patience=2),
    dict(patience=1, threshold=0.1, threshold_mode="abs", cooldown=2, min_lr=0.004),
    dict(mode="max", patience=0, threshold=0.05, threshold_mode="rel", factor=0.3, min_lr=[0.01, 0.001]),
]


@pytest.mark.parametrize("kw", REDUCE, ids=[str(k) for k in REDUCE])
def test_reduce_lr_on_plateau_matches_torch(kw):
    rng = np.random.default_rng(0)
    metrics = list(np.round(1.0 / (1 + np.arange(60) * 0.05) + rng.random(60) * 0.3, 3))
    a, b = _sequences(lambda o: S.ReduceLROnPlateau(o, **kw),
                      lambda t: torch.optim.lr_scheduler.ReduceLROnPlateau(t, **kw),
                      lrs=(0.1, 0.05), epochs=60, metrics=metrics)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert a[-1, 0] < 0.1       # the sequence did reduce at least once: the test exercises the rule


def test_reduce_lr_accepts_tensor_metric():
    import tinycnn
    o, _ = _opts()
    s = S.ReduceLROnPlateau(o, patience=0)
    s.step(tinycnn.tensor(1.0))
    s.step(tinycnn.tensor(2.0))
    assert s.get_last_lr() == [pytest.approx(0.01)]


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "CosineAnnealingLR", "LinearLR-default",
                                  "SequentialLR-warmup-cosine", "SequentialLR-three", "ExponentialLR"])
def test_state_dict_round_trip_continues_the_sequence(name):
    make = CASES[name][0]
    o, _ = _opts()
    s = make(o)
    full = []
    for _ in range(25):
        o.step()
        s.step()
        full.append(s.get_last_lr()[0])

    o2, _ = _opts()
    s2 = make(o2)
    for _ in range(10):
        o2.step()
        s2.step()
    osd = o2.state_dict()
    ssd = json.loads(json.dumps(s2.state_dict()))     # checkpoints keep scheduler state as JSON
    o3, _ = _opts()
    s3 = make(o3)
    o3.load_state_dict(osd)
    s3.load_state_dict(ssd)
    rest = []
    for _ in range(15):
        o3.step()
        s3.step()
        rest.append(s3.get_last_lr()[0])
    np.testing.assert_allclose(rest, full[10:], rtol=1e-12)


def test_reduce_lr_on_plateau_state_dict_round_trip():
    o, _ = _opts()
    s = S.ReduceLROnPlateau(o, patience=1, cooldown=1)
    for m in [1.0, 0.9, 0.95, 0.96]:
        s.step(m)
    sd = json.loads(json.dumps(s.state_dict()))
    assert "optimizer" not in sd and sd["num_bad_epochs"] == s.num_bad_epochs
    o2, _ = _opts()
    o2.load_state_dict(o.state_dict())
    s2 = S.ReduceLROnPlateau(o2)
    s2.load_state_dict(sd)
    for m in [0.97, 0.98, 0.99, 1.0]:
        s.step(m)
        s2.step(m)
        assert s.get_last_lr() == s2.get_last_lr()


def test_lambda_state_dict_keeps_callable_objects_state():
    class Warm:
        def __init__(self):
            self.k = 2

        def __call__(self, e):
            return min(1.0, (e + 1) / self.k)

    o, _ = _opts()
    s = S.LambdaLR(o, Warm())
    sd = s.state_dict()
    assert sd["lr_lambdas"] == [{"k": 2}]
    s2 = S.LambdaLR(o, lambda e: 1.0)
    assert s2.state_dict()["lr_lambdas"] == [None]


def test_initial_lr_and_base_lrs():
    o, _ = _opts((0.1, 0.3))
    s = S.StepLR(o, 2)
    assert s.base_lrs == [0.1, 0.3]
    assert [g["initial_lr"] for g in o.param_groups] == [0.1, 0.3]
    with pytest.raises(KeyError, match="initial_lr"):
        o2, _ = _opts()
        S.StepLR(o2, 2, last_epoch=5)


def test_closed_form_jump_matches_recursive():
    o, _ = _opts()
    s = S.CosineAnnealingLR(o, 20)
    for _ in range(8):
        s.step()
    rec = s.get_last_lr()[0]
    s.step(8)
    assert s.get_last_lr()[0] == pytest.approx(rec, rel=1e-12)
    assert rec == pytest.approx(0.05 * (1 + math.cos(math.pi * 8 / 20)), rel=1e-12)


@pytest.mark.parametrize("make,exc,match", [
    (lambda o: S.StepLR(o, 0), ValueError, "step_size must be a positive int"),
    (lambda o: S.MultiStepLR(o, [5, 3]), ValueError, "milestones must be increasing"),
    (lambda o: S.CosineAnnealingLR(o, 0), ValueError, "T_max must be a positive int"),
    (lambda o: S.LinearLR(o, start_factor=0), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda o: S.LinearLR(o, end_factor=1.5), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor must be < 1.0"),
    (lambda o: S.ReduceLROnPlateau(o, mode="up"), ValueError, "mode must be 'min' or 'max'"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold_mode must be"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), ValueError, "min_lr must have one value per"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 2), S.StepLR(o, 3)], milestones=[]), ValueError,
     "len\\(milestones\\) == len\\(schedulers\\) - 1"),
    (lambda o: S.StepLR("sgd", 2), TypeError, "optimizer must be a tinycnn.optim.Optimizer"),
    (lambda o: S.ExponentialLR(o, "0.9"), TypeError, "gamma must be a number"),
])
def test_bad_arguments(make, exc, match):
    o, _ = _opts()
    with pytest.raises(exc, match=match):
        make(o)


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(t_max=st.integers(1, 12), eta_min=st.floats(0.0, 0.05), warm=st.integers(1, 6),
       start=st.floats(0.01, 1.0))
def test_warmup_cosine_random_configs_match_torch(t_max, eta_min, warm, start):
    """The training pipeline's schedule (LinearLR warm-up then cosine) for random settings, 30 epochs."""
    a, b = _sequences(
        lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=start, total_iters=warm),
                                     S.CosineAnnealingLR(o, t_max, eta_min=eta_min)], milestones=[warm]),
        lambda t: torch.optim.lr_scheduler.SequentialLR(
            t, [torch.optim.lr_scheduler.LinearLR(t, start_factor=start, total_iters=warm),
                torch.optim.lr_scheduler.CosineAnnealingLR(t, t_max, eta_min=eta_min)], milestones=[warm]),
        epochs=30)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-15)
