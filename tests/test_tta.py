"""Test-time flips (`--tta`): the averaged prediction over an image and its flips, in validation, the
checkpoint, `evaluate` and `predict`, and the recipe that turns it on for models trained with flips."""
import json

import numpy as np
import pytest

import tinycnn
from _nn_compare import assert_resume_is_bit_identical
from tinycnn.data import DatasetInfo
from tinycnn.models import get_model
from tinycnn.training import build_model, default_settings, load_checkpoint, train_run
from tinycnn.training.recipes import augment_flips
from tinycnn.training.run import evaluate_checkpoint, load_data, predict_probs, resolve_settings
from tinycnn.training.trainer import flip_views, parse_tta, predict_logits

QUICK = {"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 2, "batch_size": 32, "seed": 0,
         "ensemble": 1, "augment": "hflip,rotate=10"}
MEAN, STD = [0.4], [0.3]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("tta,expected", [
    (None, ()), ("", ()), ("none", ()), ("hflip", ("hflip",)), ("vflip", ("vflip",)),
    ("vflip,hflip", ("hflip", "vflip")), (" hflip , vflip ", ("hflip", "vflip")), (["vflip"], ("vflip",)),
])
def test_parse_tta(tta, expected):
    assert parse_tta(tta) == expected


@pytest.mark.parametrize("bad", ["rotate", "hflip,spin", "none,hflip"])
def test_parse_tta_names_the_setting_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"tta must be 'none' or .*hflip, vflip.*got"):
        parse_tta(bad)


def test_flip_views_are_every_combination_identity_first():
    assert flip_views("none") == [()]
    assert flip_views("hflip") == [(), (3,)]
    assert flip_views("vflip") == [(), (2,)]
    assert flip_views("hflip,vflip") == [(), (3,), (2,), (2, 3)]


@pytest.mark.parametrize("augment,expected", [
    ("hflip,rotate=10,shift=0.07", "hflip"), ("vflip,hflip", "hflip,vflip"), ("rotate=10", "none"),
    ("none", "none"), ("", "none"), (None, "none"), ("hflip=0.5", "hflip"), ("hflip=0", "none"),
])
def test_recipe_flips_follow_the_augmentation(augment, expected):
    assert augment_flips(augment) == expected


@pytest.mark.parametrize("channels,n,expected", [(1, 546, "hflip"), (1, 4708, "none"), (3, 1000, "hflip,vflip"),
                                                 (3, 90_000, "hflip,vflip")])
def test_recipe_turns_tta_on_for_the_flips_it_trains_with(channels, n, expected):
    info = DatasetInfo("x", "binary-class", ("a", "b"), channels, 28, {"train": n}, "generated")
    r = default_settings(info, np.arange(n) % 2)
    assert r["tta"] == expected == augment_flips(r["augment"])


def test_user_augmentation_decides_the_default_tta():
    ds = load_data({"dataset": "synthetic", "subset": 64, "seed": 0, "image_size": 28})
    assert resolve_settings({"augment": "rotate=10"}, ds)["tta"] == "none"
    assert resolve_settings({"augment": "vflip"}, ds)["tta"] == "vflip"
    assert resolve_settings({"augment": "vflip", "tta": "hflip"}, ds)["tta"] == "hflip"   # given: kept


def _images(n=5, c=1, h=9, w=7, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


@pytest.mark.parametrize("tta", ["hflip", "vflip", "hflip,vflip"])
@pytest.mark.parametrize("batch_size", [2, 256])
def test_predict_logits_averages_the_softmax_of_the_flipped_images(tta, batch_size):
    tinycnn.manual_seed(3)
    model = get_model("simplecnn", in_channels=1, num_classes=3)
    x = _images(h=28, w=28)
    flipped = {(): x, (3,): x[..., ::-1], (2,): x[:, :, ::-1, :], (2, 3): x[:, :, ::-1, ::-1]}
    views = flip_views(tta)
    expected = np.mean([_softmax(predict_logits(model, flipped[v].copy(), MEAN, STD)) for v in views], axis=0)
    got = _softmax(predict_logits(model, x, MEAN, STD, batch_size=batch_size, tta=tta))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    plain = _softmax(predict_logits(model, x, MEAN, STD))
    assert np.abs(got - plain).max() > 1e-4       # the flips change the answer of a non-symmetric model


def test_no_tta_is_the_plain_forward_bit_for_bit():
    tinycnn.manual_seed(4)
    model = get_model("simplecnn", in_channels=1, num_classes=2)
    x = _images(h=28, w=28)
    plain = predict_logits(model, x, MEAN, STD)
    assert np.array_equal(predict_logits(model, x, MEAN, STD, tta="none"), plain)
    with tinycnn.no_grad():
        direct = model(tinycnn.tensor((x - 0.4) / np.float32(0.3))).numpy()
    np.testing.assert_allclose(plain, direct, rtol=1e-5, atol=1e-6)


def test_a_flip_symmetric_input_is_unchanged_by_tta():
    tinycnn.manual_seed(5)
    model = get_model("simplecnn", in_channels=1, num_classes=2)
    x = _images(h=28, w=28)
    x = 0.5 * (x + x[..., ::-1])                   # mirror-symmetric images: both views are the same image
    np.testing.assert_allclose(_softmax(predict_logits(model, x, MEAN, STD, tta="hflip")),
                               _softmax(predict_logits(model, x, MEAN, STD)), rtol=1e-5, atol=1e-7)


def test_multilabel_tta_averages_the_per_label_sigmoids():
    tinycnn.manual_seed(6)
    model = get_model("simplecnn", in_channels=1, num_classes=4, ensemble=2, multilabel=True)
    x = _images(h=28, w=28)
    task = "multi-label, binary-class"
    expected = 0.5 * (_sigmoid(predict_logits(model, x, MEAN, STD, task=task))
                      + _sigmoid(predict_logits(model, x[..., ::-1].copy(), MEAN, STD, task=task)))
    got = _sigmoid(predict_logits(model, x, MEAN, STD, tta="hflip", task=task))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # averaging softmaxes instead (the single-label rule) would give a different answer
    wrong = _sigmoid(predict_logits(model, x, MEAN, STD, tta="hflip"))
    assert np.abs(wrong - expected).max() > 1e-4


def test_ensemble_with_tta_is_the_mean_over_members_and_views():
    tinycnn.manual_seed(7)
    ens = get_model("simplecnn", in_channels=1, num_classes=3, ensemble=3)
    x = _images(h=28, w=28)
    each = [_softmax(predict_logits(m, v, MEAN, STD)) for m in ens.members for v in (x, x[..., ::-1].copy())]
    np.testing.assert_allclose(_softmax(predict_logits(ens, x, MEAN, STD, tta="hflip")), np.mean(each, axis=0),
                               rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta") / "run"
    res = train_run({**QUICK, "out": str(out)}, log=None, quiet=True)
    return out, res


def test_run_records_and_uses_the_flips(tta_run):
    out, res = tta_run
    assert res["settings"]["tta"] == "hflip"                          # from --augment's hflip
    assert json.loads((out / "config.json").read_text())["settings"]["tta"] == "hflip"
    _, meta = load_checkpoint(out / "best.safetensors")
    assert meta["tta"] == "hflip"
    # the test metrics are those of the flip-averaged prediction ...
    m, probs, labels = evaluate_checkpoint(out / "best.safetensors")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["acc"] == pytest.approx(m["acc"]) and saved["auc"] == pytest.approx(m["auc"])
    model, meta = build_model(out / "best.safetensors")
    ds = load_data({"dataset": "synthetic", "subset": 64, "seed": 0, "image_size": 28})
    both = 0.5 * (predict_probs(model, meta, ds.test.images, tta="none")
                  + predict_probs(model, meta, ds.test.images[..., ::-1].copy(), tta="none"))
    np.testing.assert_allclose(probs, both, rtol=1e-5, atol=1e-7)
    # ... and so was the validation that chose the checkpoint (its recorded val AUC and loss)
    mv, pv, yv = evaluate_checkpoint(out / "best.safetensors", split="val")
    assert meta["val_auc"] == pytest.approx(mv["auc"], abs=1e-12)
    _, pv_plain, _ = evaluate_checkpoint(out / "best.safetensors", split="val", tta="none")
    assert np.abs(pv - pv_plain).max() > 1e-4


def test_tta_resume_is_bit_identical(tta_run, tmp_path):
    assert_resume_is_bit_identical(QUICK, tta_run[0], tmp_path / "b")


def test_checkpoints_without_tta_predict_plainly(tta_run, tmp_path):
    out, _ = tta_run
    run = train_run({**QUICK, "tta": "none", "epochs": 1, "out": str(tmp_path / "plain")}, log=None, quiet=True)
    _, meta = load_checkpoint(tmp_path / "plain" / "best.safetensors")
    assert meta["tta"] == "none" and run["settings"]["tta"] == "none"
    model, meta = build_model(tmp_path / "plain" / "best.safetensors")
    meta.pop("tta")                                           # a checkpoint from before --tta existed
    x = load_data({"dataset": "synthetic", "subset": 64, "seed": 0, "image_size": 28}).test.images
    np.testing.assert_array_equal(predict_probs(model, meta, x), predict_probs(model, meta, x, tta="none"))


def test_cli_tta_override_and_errors(tta_run, capsys):
    from tinycnn.cli import main

    out, _ = tta_run
    assert main(["evaluate", "--run", str(out), "--json", "--quiet"]) == 0
    with_tta = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--run", str(out), "--json", "--quiet", "--tta", "none"]) == 0
    plain = json.loads(capsys.readouterr().out)
    m_plain, _, _ = evaluate_checkpoint(out / "best.safetensors", tta="none")
    assert plain["auc"] == pytest.approx(m_plain["auc"]) and with_tta["n"] == plain["n"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", str(out), "--tta", "spin"])
    assert exc.value.code == 2
    assert "--tta: expected 'none' or flips among hflip, vflip" in capsys.readouterr().err


def test_predict_reports_and_explains_the_flip_averaged_class(tta_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from tinycnn import explain
    from tinycnn.cli import main

    out, _ = tta_run
    model, meta = build_model(out / "best.safetensors")
    x = load_data({"dataset": "synthetic", "subset": 64, "seed": 0, "image_size": 28}).test.images[:6]
    paths = []
    for i, img in enumerate(x):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((img.transpose(1, 2, 0).squeeze(-1) * 255).round().astype(np.uint8)).save(paths[-1])
    seen = {}
    real = explain.grad_cam

    def spy(model, images, layer=None, target=None, **kw):
        seen["target"] = np.asarray(target)
        return real(model, images, layer=layer, target=target, **kw)

    monkeypatch.setattr(explain, "grad_cam", spy)
    assert main(["predict", "--checkpoint", str(out / "best.safetensors"), "--json", "--gradcam",
                 str(tmp_path / "cam.png"), *paths]) == 0
    rows = json.loads(capsys.readouterr().out)
    from tinycnn.cli import load_images
    xs = load_images(paths, 3 if meta["in_channels"] == 3 else 1, 28)
    probs = predict_probs(model, meta, xs)                           # with the checkpoint's flips
    np.testing.assert_allclose([[r["probabilities"][k] for k in r["probabilities"]] for r in rows], probs,
                               rtol=1e-6)
    np.testing.assert_array_equal(seen["target"], [r["class"] for r in rows])
    np.testing.assert_array_equal(seen["target"], probs.argmax(1))
    assert (tmp_path / "cam.png").exists()
