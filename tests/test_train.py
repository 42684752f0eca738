"""Training: run directory contents, bit-identical --resume, schedules, NaN stop, transfer learning, recipes."""
import csv
import json
import math

import numpy as np
import pytest

import tinycnn
from _nn_compare import assert_resume_is_bit_identical
from tinycnn.training import (CheckpointError, Trainer, TrainingDiverged, WarmupCosine, build_model,
                              default_settings, load_checkpoint, train_run)
from tinycnn.training.checkpoint import _flatten_optimizer, _unflatten_optimizer

QUICK = {"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 2, "batch_size": 32, "seed": 0,
         "ensemble": 1}
RUN_FILES = ["config.json", "best.safetensors", "last.safetensors", "last.state.safetensors", "history.csv",
             "metrics.json", "curves.png", "roc.png", "confusion.png"]


def _quiet(**kw):
    return {**QUICK, **kw}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "a"
    res = train_run(_quiet(out=str(out)), log=None, quiet=True)
    return out, res


def test_run_directory_has_every_file(quick_run):
    out, res = quick_run
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    cfg = json.loads((out / "config.json").read_text())
    for key in ("settings", "version", "seed", "device", "kernel_family", "normalization", "dataset"):
        assert key in cfg, key
    assert cfg["settings"]["epochs"] == 2 and cfg["settings"]["model"] == "simplecnn"
    assert cfg["settings"]["optimizer"] == "adamw"  # filled in by the recipe
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_acc", "val_auc", "lr", "seconds"]
    m = json.loads((out / "metrics.json").read_text())
    for key in ("acc", "auc", "precision", "recall", "f1", "sensitivity", "specificity", "confusion_matrix", "n"):
        assert key in m, key
    assert m["n"] == 20 and np.sum(m["confusion_matrix"]) == 20
    # best validation AUC, ties going to the lower validation loss
    best = max(rows, key=lambda r: (float(r["val_auc"]), -float(r["val_loss"])))
    assert m["best_epoch"] == int(best["epoch"])


def test_checkpoint_metadata_rebuilds_the_model(quick_run):
    out, _ = quick_run
    state, meta = load_checkpoint(out / "best.safetensors")
    assert meta["model"] == "simplecnn" and meta["in_channels"] == 1 and meta["num_classes"] == 2
    assert len(meta["mean"]) == 1 and len(meta["std"]) == 1 and meta["class_names"]
    model, _ = build_model(out / "best.safetensors")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, state[k])


def test_resume_gives_bit_identical_weights(quick_run, tmp_path):
    assert_resume_is_bit_identical(QUICK, quick_run[0], tmp_path / "b")


def test_resume_without_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no config.json in"):
        train_run({"out": str(tmp_path / "none"), "resume": True}, log=None, quiet=True)


def test_optimizer_state_roundtrip():
    from tinycnn.models import get_model
    m = get_model("simplecnn")
    opt = tinycnn.optim.AdamW(m.parameters(), lr=1e-3)
    loss = m(tinycnn.randn(4, 1, 28, 28)).sum()
    loss.backward()
    opt.step()
    sd = opt.state_dict()
    arrays, spec = _flatten_optimizer(sd)
    spec = json.loads(json.dumps(spec))
    back = _unflatten_optimizer(arrays, spec)
    assert back["param_groups"] == json.loads(json.dumps(sd["param_groups"]))
    for i, entry in sd["state"].items():
        for name, v in entry.items():
            np.testing.assert_array_equal(np.asarray(back["state"][int(i)][name]), np.asarray(v))


def test_warmup_cosine_values():
    p = tinycnn.nn.Parameter(tinycnn.zeros(1))
    opt = tinycnn.optim.SGD([p], lr=1.0)
    s = WarmupCosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        s.apply()
        lrs.append(opt.param_groups[0]["lr"])
        s.step()
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)


def test_nan_loss_stops_with_a_clear_error():
    from tinycnn.data import ArrayDataset
    from tinycnn.models import get_model
    x = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)
    x[3, 0, 5, 5] = np.nan
    ds = ArrayDataset(x, np.arange(16) % 2)
    model = get_model("simplecnn")
    opt = tinycnn.optim.Adam(model.parameters())
    tr = Trainer(model, opt, None, batch_size=16, quiet=True)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch 1 .*lower --lr"):
        tr.fit(ds, ds, 1, "binary-class", log=None)


def test_transfer_learning_new_head_and_freeze(quick_run, tmp_path):
    out_a, _ = quick_run
    res = train_run(_quiet(out=str(tmp_path / "t"), epochs=1, init_from=str(out_a / "best.safetensors"),
                           freeze="conv1,conv2"), log=None, quiet=True)
    src = tinycnn.load(out_a / "best.safetensors")
    dst = tinycnn.load(tmp_path / "t" / "last.safetensors")
    for k in ("conv1.weight", "conv1.bias", "conv2.weight"):
        np.testing.assert_array_equal(src[k], dst[k])   # frozen: unchanged by training
    assert not np.array_equal(src["fc1.weight"], dst["fc1.weight"])
    assert res["metrics"]["n"] == 20
    with pytest.raises(ValueError, match="--freeze prefix 'nope' matches no parameter"):
        train_run(_quiet(out=str(tmp_path / "u"), epochs=1, init_from=str(out_a / "best.safetensors"),
                         freeze="nope"), log=None, quiet=True)


def test_corrupted_checkpoint_is_a_checkpoint_error(tmp_path, quick_run):
    out_a, _ = quick_run
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((out_a / "best.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted or not a safetensors file"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.safetensors"
    tinycnn.save({"w": np.zeros(3, np.float32)}, plain)
    with pytest.raises(CheckpointError, match="without tinycnn metadata"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("channels,n,counts,expect_flip,expect_weights", [
    (1, 4708, (1214, 3494), False, "none"),      # large grayscale, imbalanced
    (1, 546, (147, 399), True, "balanced"),       # small grayscale, imbalanced
    (3, 1000, (500, 500), True, "none"),          # colour, balanced
])
def test_recipe_depends_on_properties(channels, n, counts, expect_flip, expect_weights):
    from tinycnn.data import DatasetInfo
    info = DatasetInfo("x", "binary-class", ("a", "b"), channels, 28, {"train": n}, "generated")
    labels = np.repeat([0, 1], counts)
    r = default_settings(info, labels)
    assert ("hflip" in r["augment"]) == expect_flip
    assert r["class_weights"] == expect_weights
    assert r["model"] == "vgg" and r["optimizer"] == "adamw" and r["label_smoothing"] == 0.1
    assert ("vflip" in r["augment"]) == (channels == 3)
    # weight averaging over 5% of the run's steps on small sets only (546 images: 8 steps x 167 epochs)
    assert r["ema"] == (0.98503 if n == 546 else 0.0 if n >= 2000 else r["ema"])
    assert (r["ema"] > 0) == (n < 2000)


def test_time_budget_shortens_the_run(tmp_path):
    out = tmp_path / "budget"
    res = train_run(_quiet(out=str(out), epochs=None, time_budget=1e-3), log=None, quiet=True)
    assert len(res["history"]) == 1   # stopped as soon as the next epoch would exceed the budget
    assert (out / "metrics.json").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["settings"]["epochs_given"] is False


def test_time_budget_refit_recovers_from_slow_early_epochs():
    """A busy machine during the first epochs must not shorten the whole run: later, faster epochs give
    the epochs back (while the run is young), and the cosine schedule follows the new length."""
    from tinycnn.training.trainer import BUDGET_FIT_EPOCHS
    m = tinycnn.models.get_model("simplecnn")
    opt = tinycnn.optim.AdamW(m.parameters(), lr=1e-3)
    t = Trainer(m, opt, WarmupCosine(opt, 100 * 10, 10), quiet=True)
    t.requested_epochs, t.target_epochs, t.steps_per_epoch = 100, 100, 10
    for e, sec in enumerate([30.0, 20.0, 20.0, 20.0, 10.0], start=1):   # compile, busy, busy, busy, idle
        t.epoch = e
        t.history.append({"seconds": sec})
        t._fit_budget(1000.0, log=None)
    # after epoch 5: spent 100 s, 900 s left at 10 s/epoch -> 5 + 90 = 95 epochs
    assert t.target_epochs == 95 and t.schedule.total == 95 * 10
    t.epoch = BUDGET_FIT_EPOCHS + 1
    t.history.append({"seconds": 1.0})
    t._fit_budget(1000.0, log=None)
    assert t.target_epochs == 95          # later epochs no longer change the length


def test_budget_resize_keeps_the_warmup_share():
    """A run the budget cuts from 30 to 3 epochs keeps a 2/30 warm-up share, not 2 of its 3 epochs; loading a
    saved (resized) schedule keeps the schedule as built as the reference for later resizes."""
    opt = tinycnn.optim.AdamW(tinycnn.models.get_model("simplecnn").parameters(), lr=1e-3)
    s = WarmupCosine(opt, total_steps=30 * 700, warmup_steps=2 * 700)
    s.resize(3 * 700)
    assert (s.total, s.warmup) == (2100, 140)
    assert s.factor(139) == pytest.approx(1.0) and s.factor(2099) < 0.01
    s.resize(12 * 700)
    assert (s.total, s.warmup) == (8400, 560)
    again = WarmupCosine(opt, total_steps=30 * 700, warmup_steps=2 * 700)
    again.load_state_dict(s.state_dict())
    assert (again.total, again.warmup) == (8400, 560)
    again.resize(6 * 700)
    assert (again.total, again.warmup) == (4200, 280)


def test_budget_probe_fits_a_long_first_epoch_early(monkeypatch):
    """On long epochs the run's length is fitted from the first steps' timing, before the first epoch
    ends, and a budget that holds fewer than 3 epochs gets a schedule of that many (no floor of 3)."""
    from tinycnn.training import trainer as tr
    m = tinycnn.models.get_model("simplecnn")
    opt = tinycnn.optim.AdamW(m.parameters(), lr=1e-3)
    t = Trainer(m, opt, WarmupCosine(opt, 30 * 1000, 2 * 1000), batch_size=100, quiet=True)
    t.requested_epochs, t.target_epochs, t.steps_per_epoch = 30, 30, 1000
    clock = [0.0]
    monkeypatch.setattr(tr.time, "perf_counter", lambda: clock[0])
    probe = t._budget_probe(700.0, log=None, eval_images=100_000 // 3)
    last = tr.PROBE_FIRST + max(tr.PROBE_STEPS, 1000 // 50)
    for done in range(1, last + 1):
        clock[0] += 0.3                       # 0.3 s per step: 300 s of training + 30 s of validation per epoch
        probe(done)
    assert t.target_epochs == 2               # 700 s // 330 s per epoch
    assert (t.schedule.total, t.schedule.warmup) == (2000, 133)
    short = Trainer(m, opt, WarmupCosine(opt, 30 * 10, 20), quiet=True)
    short.steps_per_epoch = 10
    assert short._budget_probe(700.0, log=None, eval_images=100) is None   # short epochs: fitted at their end
    assert t._budget_probe(None, log=None, eval_images=100) is None


def test_budget_shorter_than_one_epoch_trains_part_of_it(tmp_path):
    """A budget that holds part of the first epoch only: that many steps, the schedule annealed over them,
    one (short) epoch in the history, and no later refit that would start a second epoch."""
    from tinycnn.data import ArrayDataset
    from tinycnn.training import trainer as tr
    rng = np.random.default_rng(0)
    train = ArrayDataset(rng.random((tr.PROBE_MIN_STEPS * 4, 1, 8, 8), dtype=np.float32),
                         np.arange(tr.PROBE_MIN_STEPS * 4) % 2)
    val = ArrayDataset(train.images[:16], train.labels[:16])
    m = tinycnn.nn.Sequential(tinycnn.nn.Flatten(), tinycnn.nn.Linear(64, 2))
    opt = tinycnn.optim.AdamW(m.parameters(), lr=1e-3)
    t = Trainer(m, opt, WarmupCosine(opt, 5 * tr.PROBE_MIN_STEPS, tr.PROBE_MIN_STEPS // 2), batch_size=4, quiet=True)
    # the probe's epoch estimate is 4x the budget: a quarter of the epoch's steps fit
    t._budget_probe = lambda budget, log, n: (lambda done: t._fit_budget(budget, log, epoch_seconds=4 * budget)
                                              if done == tr.PROBE_FIRST else None)
    t.fit(train, val, 5, "binary-class", log=None, time_budget=100.0)
    assert t.step_limit == tr.PROBE_MIN_STEPS // 4 and t.schedule.step_count == t.step_limit
    assert len(t.history) == 1 and t.epoch == 1 and t.target_epochs == 1
    assert t.schedule.total == t.step_limit and t.schedule.factor(t.step_limit - 1) < 0.01


@pytest.mark.slow
def test_resume_after_a_real_kill(quick_run, tmp_path):
    """A `tinycnn train` process SIGKILLed after epoch 1, then `--resume`d, ends with the uninterrupted weights."""
    import os
    import signal
    import subprocess
    import sys
    import time
    out_a, _ = quick_run
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "tinycnn", "train", "--dataset", "synthetic", "--subset", "64", "--model",
            "simplecnn", "--epochs", "2", "--batch-size", "32", "--seed", "0", "--ensemble", "1", "--out", str(out),
            "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not (out / "last.state.safetensors").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    subprocess.run(args + ["--resume"], check=True, stdout=subprocess.DEVNULL)
    a = tinycnn.load(out_a / "last.safetensors")
    b = tinycnn.load(out / "last.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_keras_like_fit_evaluate_predict():
    from tinycnn.data import make_synthetic
    from tinycnn.models import get_model
    from tinycnn.training import evaluate, fit, predict
    tinycnn.manual_seed(0)
    ds = make_synthetic(64, 32, 32, seed=0)
    model = get_model("simplecnn")
    tr = fit(model, ds.train, ds.val, epochs=2, batch_size=32, quiet=True)
    assert len(tr.history) == 2 and tr.history[-1]["train_loss"] < tr.history[0]["train_loss"] * 1.5
    probs = predict(model, ds.test.images, tr.mean, tr.std)
    assert probs.shape == (32, 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    m = evaluate(model, ds.test, tr.mean, tr.std)
    assert m["n"] == 32 and 0 <= m["auc"] <= 1


def test_validation_auc_ties_go_to_the_lower_loss(tmp_path):
    """On separable data the validation AUC is 1.0 from the first epoch while the classes predicted are still
    poor; the checkpoint kept must be the best-fitted one (lowest validation loss), also after a resume."""
    from tinycnn.data import ArrayDataset
    from tinycnn.training import ConstantLR
    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = (rng.random((64, 1, 2, 2)) * 0.1 + y[:, None, None, None] * 0.2).astype(np.float32)
    ds = ArrayDataset(x, y)

    def trainer():
        tinycnn.manual_seed(0)
        m = tinycnn.nn.Sequential(tinycnn.nn.Flatten(), tinycnn.nn.Linear(4, 2))
        opt = tinycnn.optim.SGD(m.parameters(), lr=0.5)
        return Trainer(m, opt, ConstantLR(opt), batch_size=16, quiet=True)

    t = trainer()
    t.fit(ds, ds, 6, "binary-class", log=None)
    aucs, losses = [h["val_auc"] for h in t.history], [h["val_loss"] for h in t.history]
    assert aucs == [1.0] * 6 and losses[-1] < losses[0]
    assert t.best_epoch == 1 + int(np.argmin(losses)) and t.best_epoch > 1
    path = tmp_path / "state.safetensors"
    half = trainer()
    half.fit(ds, ds, 6, "binary-class", log=None, stop_after=3)
    half.save_state(path)
    resumed = trainer()
    resumed.load_state(path)
    assert resumed.best_loss == min(losses[:3])
    resumed.fit(ds, ds, 6, "binary-class", log=None)
    assert resumed.best_epoch == t.best_epoch


@pytest.mark.parametrize("loss,weights", [("focal", None), ("ce", [0.25, 0.75]), ("focal", [0.5, 1.5])])
def test_losses_and_early_stopping(loss, weights):
    from tinycnn.data import make_synthetic
    from tinycnn.models import get_model
    from tinycnn.training import ConstantLR
    tinycnn.manual_seed(0)
    ds = make_synthetic(32, 16, 16, seed=1)
    model = get_model("simplecnn")
    opt = tinycnn.optim.SGD(model.parameters(), lr=0.0)   # lr 0: validation never improves after epoch 1
    tr = Trainer(model, opt, ConstantLR(opt), loss=loss, class_weights=weights, batch_size=32, quiet=True)
    lines = []
    tr.fit(ds.train, ds.val, 10, "binary-class", patience=2, log=lines.append)
    assert len(tr.history) == 3 and tr.best_epoch == 1
    assert all(math.isfinite(h["train_loss"]) for h in tr.history)
    assert "early stopping" in lines[-1]
    with pytest.raises(ValueError, match="loss must be 'ce' or 'focal'"):
        Trainer(model, opt, None, loss="mse")
