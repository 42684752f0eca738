"""examples/recipe_cv.py: k-fold cross-validation of recipes on train + val, never on the test split."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import recipe_cv  # noqa: E402


def test_parse_overrides_reads_json_values_and_keeps_strings():
    got = recipe_cv.parse_overrides(["weight_decay=0.2", "ensemble=1", "augment=hflip,rotate=10", "ema=null"])
    assert got == {"weight_decay": 0.2, "ensemble": 1, "augment": "hflip,rotate=10", "ema": None}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        recipe_cv.parse_overrides(["weight_decay"])


def test_stratified_folds_split_every_class_evenly_and_repeat():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
    fold = recipe_cv.stratified_folds(labels, 3)
    for c in (0, 1, 2):
        counts = np.bincount(fold[labels == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(fold, recipe_cv.stratified_folds(labels, 3))


def test_cross_validation_predicts_every_image_once_and_never_sees_test(tmp_path, monkeypatch):
    import tinycnn.training.run as run

    seen = []
    real = run.train_run

    def spy(settings, **kw):
        data = kw["data"]
        seen.append((len(data.train), len(data.val)))
        assert data.test is data.val        # the fold's "test" is its held-out fold, not the test split
        return real(settings, **kw)

    monkeypatch.setattr(run, "train_run", spy)
    lines = []
    res = recipe_cv.cross_validate("synthetic", None, {"model": "simplecnn", "epochs": 1, "batch_size": 32,
                                                       "ensemble": 1}, 0, 2, tmp_path, log=lines.append, subset=48)
    n = res["n_images"]
    assert len(seen) == 2 and sum(v for _, v in seen) == n and all(t + v == n for t, v in seen)
    assert len(res["fold_auc"]) == 2 and len(lines) == 2
    assert 0.0 <= res["auc"] <= 1.0 and 0.0 <= res["acc"] <= 1.0 and res["nll"] > 0
    assert res["mean_fold_auc"] == pytest.approx(np.mean(res["fold_auc"]))
    # the last checkpoints are scored too, and their pooled numbers come from their own predictions
    last = res["last"]
    assert len(last["fold_auc"]) == 2 and last["mean_fold_auc"] == pytest.approx(np.mean(last["fold_auc"]))
    assert not np.isnan(res["last_probs"]).any() and res["last_probs"].shape == (n, 2)
    np.testing.assert_allclose(res["last_probs"].sum(1), 1.0, rtol=1e-5)
    assert last == {**last, **recipe_cv.scores(res["labels"], res["last_probs"])}


def test_scores_match_sklearn():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50)
    probs = rng.dirichlet(np.ones(3), 50)
    got = recipe_cv.scores(labels, probs)
    assert got["auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert got["nll"] == pytest.approx(log_loss(labels, probs))
    assert got["acc"] == pytest.approx(np.mean(probs.argmax(1) == labels))
    two = rng.dirichlet(np.ones(2), 50)
    y2 = rng.integers(0, 2, 50)
    assert recipe_cv.scores(y2, two)["auc"] == pytest.approx(roc_auc_score(y2, two[:, 1]))


def test_command_line_appends_one_json_line_per_seed(tmp_path, capsys):
    out = tmp_path / "cv.jsonl"
    argv = ["--dataset", "synthetic", "--tag", "t", "--seeds", "0,1", "--folds", "2", "--subset", "40",
            "--set", "model=simplecnn", "--set", "epochs=1", "--set", "ensemble=1", "--out", str(tmp_path / "runs"),
            "--json", str(out)]
    assert recipe_cv.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed"] for r in rows] == [0, 1] and all(r["tag"] == "t" for r in rows)
    assert rows[0]["settings"] == {"model": "simplecnn", "epochs": 1, "ensemble": 1}
    assert all(set(r["last"]) == {"auc", "acc", "nll", "fold_auc", "mean_fold_auc"} for r in rows)
    printed = capsys.readouterr().out
    assert "mean over seeds" in printed and "mean over seeds (last checkpoints)" in printed
    assert "seed ensemble of the last checkpoints (2 seeds)" in printed
