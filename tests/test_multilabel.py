"""Multi-label training (ChestMNIST's task) end to end on the generated `synthetic-multilabel` set: per-label BCE
(with label smoothing) equal to PyTorch's, sigmoid probabilities in every output, metrics equal to
scikit-learn's, bit-identical resume, averaged-sigmoid ensembles, predict/Grad-CAM, clear refusals, learnability."""
import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import tinycnn
from _nn_compare import FixedLogits, assert_resume_is_bit_identical
from tinycnn import nn
from tinycnn.cli import main
from tinycnn.data import load_dataset
from tinycnn.models import Ensemble, get_model
from tinycnn.training import Trainer, build_model, train_run
from tinycnn.training.run import evaluate_checkpoint, load_data, predict_probs
from tinycnn.training.schedules import ConstantLR

TASK = "multi-label, binary-class"
QUICK = {"dataset": "synthetic-multilabel", "subset": 64, "model": "simplecnn", "epochs": 2, "batch_size": 32,
         "seed": 0, "ensemble": 1}
RUN_FILES = ["config.json", "best.safetensors", "last.safetensors", "last.state.safetensors", "history.csv",
             "metrics.json", "curves.png", "roc.png", "confusion.png"]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "run"
    res = train_run({**QUICK, "out": str(out)}, log=None, quiet=True)
    return out, res


@pytest.fixture(scope="module")
def test_split():
    return load_data({"dataset": "synthetic-multilabel", "subset": 64, "seed": 0, "image_size": 28}).test


def test_dataset_is_multilabel_and_seeded():
    a = load_dataset("synthetic-multilabel", synthetic_sizes=(40, 20, 20), seed=3)
    b = load_dataset("synthetic-multilabel", synthetic_sizes=(40, 20, 20), seed=3)
    assert a.info.task == TASK and a.info.n_classes == 4 and a.info.class_names[0] == "disc"
    assert a.train.labels.shape == (40, 4) and set(np.unique(a.train.labels)) <= {0, 1}
    assert a.train.images.shape == (40, 1, 28, 28) and a.train.images.dtype == np.float32
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert not np.array_equal(a.train.labels, load_dataset("synthetic-multilabel", synthetic_sizes=(40, 20, 20),
                                                           seed=4).train.labels)


def test_run_directory_and_multilabel_metrics(ml_run, test_split):
    out, res = ml_run
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    m = json.loads((out / "metrics.json").read_text())
    for key in ("acc", "auc", "precision", "recall", "f1", "sensitivity", "specificity", "confusion_matrix", "n",
                "per_class", "class_names"):
        assert key in m, key
    assert m["task"] == TASK and m["n"] == 20
    assert np.asarray(m["confusion_matrix"]).shape == (4, 2, 2)
    assert np.asarray(m["confusion_matrix"]).sum(axis=(1, 2)).tolist() == [20] * 4
    assert len(m["per_class"]["f1"]) == 4
    # the numbers of the saved probabilities: sigmoid per label, AUC = scikit-learn's macro AUC over labels
    model, meta = build_model(out / "best.safetensors")
    assert meta["task"] == TASK
    probs = predict_probs(model, meta, test_split.images)
    y = test_split.labels
    assert probs.shape == y.shape == (20, 4)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-12)
    assert m["acc"] == pytest.approx(np.mean((probs >= 0.5) == y), abs=1e-12)
    # model selection: best.safetensors is the epoch with the highest mean-over-labels val AUC
    assert m["best_epoch"] == 1 + int(np.argmax([float(r["val_auc"]) for r in rows]))
    val = load_data({**QUICK, "image_size": 28}).val
    assert meta["val_auc"] == pytest.approx(roc_auc_score(val.labels, predict_probs(model, meta, val.images)),
                                            abs=1e-9)


def test_probabilities_are_sigmoid_of_the_logits(ml_run, test_split):
    from tinycnn.training import predict_logits
    out, _ = ml_run
    model, meta = build_model(out / "best.safetensors")
    assert meta["tta"] == "hflip"          # a small set trains with flips, so it predicts with them too
    logits = predict_logits(model, test_split.images, meta["mean"], meta["std"], tta=meta["tta"], task=meta["task"])
    np.testing.assert_allclose(predict_probs(model, meta, test_split.images), _sigmoid(logits), rtol=1e-12)


def test_evaluate_json_and_probs_out(ml_run, tmp_path, capsys, test_split):
    out, _ = ml_run
    probs_path = tmp_path / "probs.npy"
    assert main(["evaluate", "--run", str(out), "--json", "--probs-out", str(probs_path)]) == 0
    m = json.loads(capsys.readouterr().out.strip())
    probs = np.load(probs_path, allow_pickle=False)
    assert probs.shape == (20, 4) and probs.min() >= 0 and probs.max() <= 1
    assert not np.allclose(probs.sum(1), 1)                      # independent labels, not a softmax
    assert m["task"] == TASK and np.asarray(m["confusion_matrix"]).shape == (4, 2, 2)
    assert m["auc"] == pytest.approx(roc_auc_score(test_split.labels, probs, average="macro"), abs=1e-6)
    saved = json.loads((out / "metrics.json").read_text())
    assert m["auc"] == pytest.approx(saved["auc"]) and m["acc"] == pytest.approx(saved["acc"])
    assert main(["evaluate", "--run", str(out)]) == 0          # the text form works too
    text = capsys.readouterr().out
    assert "test (20 images)" in text and "  ring: [[" in text


def test_predict_prints_labels_and_gradcam(ml_run, tmp_path, capsys, test_split):
    from PIL import Image
    out, _ = ml_run
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray((test_split.images[i, 0] * 255).round().astype(np.uint8)).save(p)
        paths.append(str(p))
    cam = tmp_path / "cam.png"
    ckpt = str(out / "best.safetensors")
    assert main(["predict", "--checkpoint", ckpt, *paths, "--gradcam", str(cam), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = ["disc", "square", "cross", "ring"]
    for r in rows:
        p = np.array([r["probabilities"][n] for n in names])
        assert r["labels"] == [n for n, v in zip(names, p) if v >= 0.5]
        assert r["label"] == names[int(p.argmax())]
    assert Image.open(cam).format == "PNG"
    assert main(["predict", "--checkpoint", ckpt, paths[0]]) == 0
    text = capsys.readouterr().out
    assert "(p >= 0.5)" in text and "ring=" in text


def test_grad_cam_targets_the_most_probable_label(ml_run, test_split):
    from tinycnn.data import transforms as T
    from tinycnn.explain import grad_cam
    out, _ = ml_run
    model, meta = build_model(out / "best.safetensors")
    x = test_split.images[:4]
    cams, t = grad_cam(model, T.Normalize(meta["mean"], meta["std"])(x))
    # the model's own most probable label (the checkpoint's test-time flips are predict's business)
    np.testing.assert_array_equal(t, predict_probs(model, meta, x, tta="none").argmax(1))
    assert cams.shape == (4, 28, 28) and np.all(np.isfinite(cams))


def test_resume_gives_bit_identical_weights(ml_run, tmp_path):
    assert_resume_is_bit_identical(QUICK, ml_run[0], tmp_path / "b")


def _trainer(model, **kw):
    params = list(model.parameters()) or list(nn.Linear(1, 1).parameters())   # a Fixed model has none
    opt = tinycnn.optim.SGD(params, lr=0.0)
    return Trainer(model, opt, ConstantLR(opt), quiet=True, **kw)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_and_gradient_equal_torch_bce_with_smoothing(eps):
    """Training loss = BCEWithLogitsLoss(mean over N and L) with targets y (1 - eps) + eps / 2."""
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(6, 5)) * 3).astype(np.float32)
    y = (rng.random((6, 5)) < 0.4).astype(np.float32)
    t = _trainer(get_model("simplecnn", num_classes=5), label_smoothing=eps, task=TASK)
    zt = tinycnn.tensor(z, requires_grad=True)
    loss = t._loss(zt, tinycnn.tensor(y))
    loss.backward()
    tz = torch.tensor(z, requires_grad=True)
    ref = torch.nn.BCEWithLogitsLoss()(tz, torch.tensor(y * (1 - eps) + eps / 2))
    ref.backward()
    assert float(loss.item()) == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(zt.grad.numpy(), tz.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_validation_loss_is_plain_bce():
    from tinycnn.data import ArrayDataset
    rng = np.random.default_rng(2)
    z = rng.normal(size=(7, 3)) * 40           # large logits: the stable form must not overflow
    y = (rng.random((7, 3)) < 0.5).astype(np.int64)
    ref = torch.nn.BCEWithLogitsLoss()(torch.tensor(z.astype(np.float32).astype(np.float64)),
                                       torch.tensor(y, dtype=torch.float64))
    t = _trainer(FixedLogits(z.astype(np.float32)), label_smoothing=0.1, task=TASK)
    loss, probs, m = t.evaluate(ArrayDataset(np.zeros((7, 1, 4, 4), np.float32), y), TASK)
    assert np.isfinite(loss) and loss == pytest.approx(float(ref), rel=1e-6)   # unsmoothed
    np.testing.assert_allclose(probs, _sigmoid(z.astype(np.float32)), rtol=1e-6)


def test_focal_loss_and_class_weights_are_refused_for_multilabel(tmp_path):
    with pytest.raises(ValueError, match="focal is not supported for multi-label"):
        train_run({**QUICK, "loss": "focal", "out": str(tmp_path / "f")}, log=None, quiet=True)
    with pytest.raises(ValueError, match="not supported for the multi-label"):
        train_run({**QUICK, "class_weights": "balanced", "out": str(tmp_path / "w")}, log=None, quiet=True)
    assert not (tmp_path / "f").exists() and not (tmp_path / "w").exists()
    assert main(["train", "--dataset", "synthetic-multilabel", "--loss", "focal", "--out", str(tmp_path / "c"),
                 "--quiet"]) == 2


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_multilabel_ensemble_forward_is_logit_of_mean_sigmoid(scale):
    rng = np.random.default_rng(int(scale))
    zs = [rng.normal(size=(3, 4)) * scale for _ in range(3)]
    out = Ensemble([FixedLogits(z) for z in zs], multilabel=True)(tinycnn.tensor(np.zeros((3, 1)))).numpy()
    assert np.all(np.isfinite(out))
    expected = np.mean([torch.sigmoid(torch.tensor(z)).numpy() for z in zs], axis=0)
    np.testing.assert_allclose(torch.sigmoid(torch.tensor(out)).numpy(), expected, rtol=1e-9, atol=1e-300)


def test_multilabel_ensemble_input_gradient_matches_torch():
    tinycnn.manual_seed(0)
    ens = get_model("simplecnn", num_classes=3, ensemble=2, multilabel=True).double()
    ens.eval()
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28))
    xt = tinycnn.tensor(x, requires_grad=True)
    w = np.array([[1.0, -2.0, 0.5], [0.5, 3.0, -1.0]])
    (ens(xt) * tinycnn.tensor(w)).sum().backward()
    # torch reference: members' logits from tinycnn weights loaded into torch modules
    sd = ens.state_dict()
    tx = torch.tensor(x, requires_grad=True)
    zs = []
    for k in range(2):
        g = lambda n: torch.tensor(np.asarray(sd[f"members.{k}.{n}"]))  # noqa: E731
        h = torch.relu(torch.nn.functional.conv2d(tx, g("conv1.weight"), g("conv1.bias"), padding=1))
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.relu(torch.nn.functional.conv2d(h, g("conv2.weight"), g("conv2.bias"), padding=1))
        h = torch.nn.functional.max_pool2d(h, 2).flatten(1)
        h = torch.relu(torch.nn.functional.linear(h, g("fc1.weight"), g("fc1.bias")))
        zs.append(torch.nn.functional.linear(h, g("fc2.weight"), g("fc2.bias")))
    p = torch.stack([torch.sigmoid(z) for z in zs]).mean(0)
    ref = torch.log(p) - torch.log1p(-p)
    np.testing.assert_allclose(ens(tinycnn.tensor(x)).numpy(), ref.detach().numpy(), rtol=1e-8, atol=1e-10)
    (ref * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), tx.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_ensemble_run_averages_member_sigmoids(tmp_path):
    out = tmp_path / "ens"
    train_run({**QUICK, "ensemble": 2, "epochs": 1, "out": str(out)}, log=None, quiet=True)
    model, meta = build_model(out / "best.safetensors")
    assert isinstance(model, Ensemble) and model.multilabel and meta["ensemble"] == 2
    m, probs, labels = evaluate_checkpoint(out / "best.safetensors")
    each = [predict_probs(mem, meta, load_data({**QUICK, "image_size": 28}).test.images) for mem in model.members]
    np.testing.assert_allclose(probs, np.mean(each, axis=0), rtol=1e-6, atol=1e-9)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs, average="macro"), abs=1e-9)


def test_plots_are_readable_pngs(ml_run):
    from PIL import Image
    out, _ = ml_run
    for name in ("roc.png", "confusion.png", "curves.png"):
        im = Image.open(out / name)
        assert im.format == "PNG" and im.size == (640, 480), name
        assert np.asarray(im.convert("L")).std() > 5, name       # not a blank figure


def test_multilabel_synthetic_is_learnable(tmp_path):
    """A seeded short run separates the 4 shapes: mean-over-labels val AUC > 0.9 (about 10 s on 2 cores)."""
    res = train_run({"dataset": "synthetic-multilabel", "subset": 512, "model": "simplecnn", "epochs": 6,
                     "augment": "none", "ensemble": 1, "seed": 0, "out": str(tmp_path / "learn")},
                    log=None, quiet=True)
    assert max(h["val_auc"] for h in res["history"]) > 0.9
    assert res["metrics"]["auc"] > 0.9


def test_keras_like_helpers_handle_multilabel():
    from tinycnn.training import evaluate, fit, predict
    ds = load_dataset("synthetic-multilabel", synthetic_sizes=(64, 32, 32))
    tinycnn.manual_seed(0)
    model = get_model("simplecnn", num_classes=4)
    tr = fit(model, ds.train, ds.val, epochs=1, batch_size=32, quiet=True)
    assert tr.multilabel
    probs = predict(model, ds.test.images, tr.mean, tr.std, task=TASK)
    assert probs.shape == (32, 4) and not np.allclose(probs.sum(1), 1)
    m = evaluate(model, ds.test, tr.mean, tr.std)
    assert m["task"] == TASK and m["auc"] == pytest.approx(roc_auc_score(ds.test.labels, probs), abs=1e-9)
