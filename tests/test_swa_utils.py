"""tinycnn.optim.swa_utils (EMA / SWA weight averaging) against torch.optim.swa_utils, step for step."""
import numpy as np
import pytest
import torch

import tinycnn
from tinycnn import nn
from tinycnn.optim import swa_utils as S


def _pair():
    ours = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    return ours, theirs


def _random_state(model, rng, dtype):
    return {k: (rng.normal(size=v.shape).astype(dtype) if v.dtype.kind == "f"
                else np.asarray(rng.integers(0, 100), dtype=v.dtype))
            for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["ema", "swa", "ema_avg_fn", "swa_avg_fn"])
@pytest.mark.parametrize("use_buffers", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_trajectory_matches_torch(kind, use_buffers, dtype):
    """The averaged weights after each of several updates equal torch's AveragedModel's."""
    rng = np.random.default_rng(0)
    ours, theirs = _pair()
    if dtype == np.float64:
        ours.double()
        theirs.double()
    fns = {"ema": (dict(multi_avg_fn=S.get_ema_multi_avg_fn(0.9)),
                   dict(multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))),
           "swa": ({}, {}),
           "ema_avg_fn": (dict(avg_fn=S.get_ema_avg_fn(0.8)), dict(avg_fn=torch.optim.swa_utils.get_ema_avg_fn(0.8))),
           "swa_avg_fn": (dict(avg_fn=S.get_swa_avg_fn()), dict(avg_fn=torch.optim.swa_utils.get_swa_avg_fn()))}
    a_ours = S.AveragedModel(ours, use_buffers=use_buffers, **fns[kind][0])
    a_theirs = torch.optim.swa_utils.AveragedModel(theirs, use_buffers=use_buffers, **fns[kind][1])
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for step in range(6):
        state = _random_state(ours, rng, dtype)
        ours.load_state_dict(state)
        theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        a_ours.update_parameters(ours)
        a_theirs.update_parameters(theirs)
        got = a_ours.module.state_dict()
        want = {k: v.detach().numpy() for k, v in a_theirs.module.state_dict().items()}
        for k, w in want.items():
            if w.dtype.kind == "f":
                np.testing.assert_allclose(got[k], w, rtol=tol, atol=tol, err_msg=f"{kind} step {step} {k}")
        assert int(a_ours.n_averaged.data) == int(a_theirs.n_averaged) == step + 1


def test_forward_runs_the_average_and_training_never_touches_it():
    rng = np.random.default_rng(1)
    model = nn.Linear(4, 2)
    avg = S.AveragedModel(model, multi_avg_fn=S.get_ema_multi_avg_fn(0.5))
    avg.update_parameters(model)
    w0 = model.weight.data.copy()
    model.weight.data[...] = w0 + 1.0
    avg.update_parameters(model)
    np.testing.assert_allclose(avg.module.weight.data, w0 + 0.5, rtol=1e-6)
    x = tinycnn.tensor(rng.normal(size=(3, 4)).astype(np.float32))
    np.testing.assert_allclose(avg(x).numpy(), avg.module(x).numpy())
    assert all(not p.requires_grad for p in avg.module.parameters())
    assert model.weight.requires_grad


def test_state_dict_round_trip_keeps_the_count():
    model = nn.Linear(3, 2)
    a = S.AveragedModel(model, multi_avg_fn=S.get_ema_multi_avg_fn(0.9))
    for _ in range(3):
        a.update_parameters(model)
    b = S.AveragedModel(nn.Linear(3, 2), multi_avg_fn=S.get_ema_multi_avg_fn(0.9))
    b.load_state_dict(a.state_dict())
    assert int(b.n_averaged.data) == 3
    np.testing.assert_array_equal(b.module.weight.data, a.module.weight.data)


def test_errors():
    with pytest.raises(ValueError, match="decay"):
        S.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError, match="not both"):
        S.AveragedModel(nn.Linear(2, 2), avg_fn=S.get_swa_avg_fn(), multi_avg_fn=S.get_swa_multi_avg_fn())
    with pytest.raises(TypeError, match="Module"):
        S.AveragedModel("model")
    a = S.AveragedModel(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="other parameters"):
        a.update_parameters(nn.Sequential(nn.Linear(2, 2)))
