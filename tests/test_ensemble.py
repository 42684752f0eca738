"""Seed ensembles: averaged softmax, independent member training, one checkpoint, evaluate/predict/Grad-CAM."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinycnn
from _nn_compare import FixedLogits, assert_resume_is_bit_identical
from tinycnn import nn
from tinycnn.explain import grad_cam
from tinycnn.models import Ensemble, get_model, member_seed
from tinycnn.training import Trainer, build_model, default_settings, load_checkpoint, train_run
from tinycnn.training.schedules import ConstantLR

QUICK = {"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 2, "batch_size": 32, "seed": 0}


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 4), n=st.integers(1, 3), c=st.integers(2, 5), scale=st.sampled_from([1.0, 1e2, 1e4]),
       seed=st.integers(0, 10_000))
def test_forward_is_log_of_mean_softmax(k, n, c, scale, seed):
    rng = np.random.default_rng(seed)
    zs = [rng.normal(size=(n, c)) * scale for _ in range(k)]
    ens = Ensemble([FixedLogits(z) for z in zs])
    out = ens(tinycnn.tensor(np.zeros((n, 1)))).numpy()
    assert np.all(np.isfinite(out))                       # stable even where a member's softmax underflows
    expected = np.mean([_softmax(z) for z in zs], axis=0)
    np.testing.assert_allclose(_softmax(out), expected, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=1e-12)   # already normalised log-probabilities


def test_forward_and_input_gradient_match_torch():
    tinycnn.manual_seed(0)
    ens = get_model("simplecnn", ensemble=3).double()
    ens.eval()
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28))
    xt = tinycnn.tensor(x, requires_grad=True)
    out = ens(xt)
    (out * tinycnn.tensor(np.array([[1.0, -2.0], [0.5, 3.0]]))).sum().backward()

    tx = torch.tensor(x, requires_grad=True)
    sd = {k: torch.tensor(np.asarray(v)) for k, v in ens.state_dict().items()}
    F = torch.nn.functional
    logps = []
    for k in range(3):
        p = lambda name: sd[f"members.{k}.{name}"]  # noqa: E731
        h = F.max_pool2d(F.relu(F.conv2d(tx, p("conv1.weight"), p("conv1.bias"), padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, p("conv2.weight"), p("conv2.bias"), padding=1)), 2).flatten(1)
        z = F.linear(F.relu(F.linear(h, p("fc1.weight"), p("fc1.bias"))), p("fc2.weight"), p("fc2.bias"))
        logps.append(F.log_softmax(z, 1))
    ref = torch.logsumexp(torch.stack(logps), 0) - np.log(3)
    (ref * torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_gradcheck_float64():
    tinycnn.manual_seed(1)
    members = [nn.Sequential(nn.Flatten(1), nn.Linear(6, 3)) for _ in range(2)]
    ens = Ensemble(members).double()
    x = tinycnn.tensor(np.random.default_rng(2).normal(size=(2, 6)), requires_grad=True)
    assert tinycnn.gradcheck(lambda t: ens(t), (x,))


def test_get_model_ensemble_names_and_errors():
    ens = get_model("vgg", ensemble=2)
    assert isinstance(ens, Ensemble) and len(ens) == 2 and ens.cam_layer == "features.16"
    single = get_model("vgg").state_dict()
    assert sorted(ens.state_dict()) == sorted(f"members.{k}.{n}" for k in range(2) for n in single)
    assert not isinstance(get_model("vgg", ensemble=1), Ensemble)
    with pytest.raises(ValueError, match="ensemble must be a positive int, got 0"):
        get_model("vgg", ensemble=0)
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    assert member_seed(5, 0) == 5 and len({member_seed(5, k) for k in range(4)}) == 4


def _trainer(model, seed, train_kw):
    opt = tinycnn.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    return Trainer(model, opt, ConstantLR(opt), seed=seed, quiet=True, **train_kw)


def test_members_train_exactly_as_separate_runs():
    """Member k of an ensemble ends where a lone model with the same start and seed member_seed(seed, k) ends."""
    from tinycnn.data import make_synthetic
    from tinycnn.data import transforms as T

    ds = make_synthetic(96, 32, 32, seed=0)
    kw = dict(batch_size=32, augment=T.parse_augment("hflip,rotate=10"), mean=(0.5,), std=(0.25,),
              label_smoothing=0.1)
    tinycnn.manual_seed(0)
    ens = get_model("simplecnn", ensemble=2)            # no dropout: members' randomness is data order + augment
    starts = [{k: v.copy() for k, v in m.state_dict().items()} for m in ens.members]
    t = _trainer(ens, seed=7, train_kw=kw)
    t.fit(ds.train, ds.val, 2, ds.info.task, log=None)
    for k in range(2):
        lone = get_model("simplecnn")
        lone.load_state_dict(starts[k])
        _trainer(lone, seed=member_seed(7, k), train_kw=kw).fit(ds.train, ds.val, 2, ds.info.task, log=None)
        mine = ens.members[k].state_dict()
        for name, v in lone.state_dict().items():
            np.testing.assert_allclose(mine[name], v, rtol=1e-6, atol=1e-7, err_msg=f"member {k} {name}")


@pytest.fixture(scope="module")
def ens_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "run"
    res = train_run({**QUICK, "ensemble": 2, "out": str(out)}, log=None, quiet=True)
    return out, res


def test_run_writes_one_ensemble_checkpoint(ens_run):
    out, res = ens_run
    state, meta = load_checkpoint(out / "best.safetensors")
    assert meta["ensemble"] == 2 and meta["model"] == "simplecnn"
    assert any(k.startswith("members.1.") for k in state)
    model, _ = build_model(out / "best.safetensors")
    assert isinstance(model, Ensemble) and len(model) == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["ensemble"] == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 20 and 0 <= m["auc"] <= 1


def test_ensemble_resume_is_bit_identical(ens_run, tmp_path):
    assert_resume_is_bit_identical({**QUICK, "ensemble": 2}, ens_run[0], tmp_path / "b")


def test_evaluate_uses_the_averaged_probabilities(ens_run):
    from tinycnn.training.run import evaluate_checkpoint, load_data, predict_probs

    out, _ = ens_run
    m, probs, labels = evaluate_checkpoint(out / "best.safetensors")
    model, meta = build_model(out / "best.safetensors")
    ds = load_data({"dataset": "synthetic", "subset": 64, "seed": 0, "image_size": 28})
    each = [predict_probs(mem, meta, ds.test.images) for mem in model.members]
    np.testing.assert_allclose(probs, np.mean(each, axis=0), rtol=1e-6, atol=1e-9)


def test_transfer_into_an_ensemble_freezes_every_member(ens_run, tmp_path):
    out_a, _ = ens_run   # an ensemble source: member k starts from source member k mod 2
    train_run({**QUICK, "ensemble": 3, "epochs": 1, "out": str(tmp_path / "t"),
               "init_from": str(out_a / "best.safetensors"), "freeze": "conv1"}, log=None, quiet=True)
    src = tinycnn.load(out_a / "best.safetensors")
    dst = tinycnn.load(tmp_path / "t" / "last.safetensors")
    for k in range(3):
        for name in ("conv1.weight", "conv1.bias"):
            np.testing.assert_array_equal(dst[f"members.{k}.{name}"], src[f"members.{k % 2}.{name}"])
        assert not np.array_equal(dst[f"members.{k}.conv2.weight"], src[f"members.{k % 2}.conv2.weight"])


def test_grad_cam_of_an_ensemble_is_the_mean_of_member_maps():
    tinycnn.manual_seed(4)
    ens = get_model("simplecnn", ensemble=3)
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    cam, t = grad_cam(ens, x, upsample=False, normalize=False)
    with tinycnn.no_grad():
        ens.eval()
        expected_t = ens(tinycnn.tensor(x)).numpy().argmax(1)
    np.testing.assert_array_equal(t, expected_t)       # the ensemble's class, not each member's
    each = [grad_cam(m, x, "conv2", t, upsample=False, normalize=False)[0] for m in ens.members]
    np.testing.assert_allclose(cam, np.mean(each, axis=0), rtol=1e-5, atol=1e-7)
    # a member's layer named in full: the ensemble's own output is differentiated (not the member's logit)
    one, _ = grad_cam(ens, x, "members.1.conv2", t, upsample=False, normalize=False)
    assert one.shape == each[1].shape and one.min() >= 0 and not np.allclose(one, each[1])
    full, _ = grad_cam(ens, x)                         # defaults: upsampled to the input, scaled to [0, 1]
    assert full.shape == (2, 28, 28) and full.max() == pytest.approx(1.0)


@pytest.mark.parametrize("n,size,expected", [(64, 28, 5), (546, 28, 5), (1999, 28, 5), (2000, 28, 3),
                                              (4708, 28, 3), (7007, 28, 2), (10000, 28, 2), (12000, 28, 1),
                                              (34561, 28, 1), (150, 64, 4), (546, 64, 1), (4708, 64, 1)])
def test_recipe_ensemble_size_follows_the_training_passes(n, size, expected):
    from tinycnn.data import DatasetInfo
    from tinycnn.training.recipes import ENSEMBLE_PASSES, ensemble_size
    info = DatasetInfo("x", "binary-class", ("a", "b"), 1, size, {"train": n}, "generated")
    r = default_settings(info, np.arange(n) % 2)
    assert r["ensemble"] == expected
    # the members' passes stay within the budget unless one member alone exceeds it
    per_epoch = (n // r["batch_size"]) * r["batch_size"] if n > r["batch_size"] else n
    passes = per_epoch * r["epochs"] * (size / 28) ** 2
    assert expected == 1 or expected * passes <= ENSEMBLE_PASSES
    assert expected == 5 or (expected + 1) * passes > ENSEMBLE_PASSES
    assert ensemble_size(n, r["batch_size"], r["epochs"], size) == expected
