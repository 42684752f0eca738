"""Plots: non-empty PNGs of the configured size, and input checks."""
import numpy as np
import pytest
from PIL import Image

from tinycnn import report

SIZE = (int(report.FIGSIZE[0] * report.DPI), int(report.FIGSIZE[1] * report.DPI))


def _check_png(path):
    im = Image.open(path)
    assert im.format == "PNG" and im.size == SIZE == (640, 480)
    a = np.asarray(im.convert("L"))
    assert a.std() > 5  # something was drawn, not a blank canvas


def test_curves_png(tmp_path):
    h = [dict(epoch=i, train_loss=1 / i, val_loss=1.1 / i, val_acc=0.6 + i / 50, val_auc=0.7 + i / 40,
              lr=1e-3 * i) for i in range(1, 6)]
    _check_png(report.plot_curves(h, tmp_path / "curves.png"))
    with pytest.raises(ValueError, match="history must hold at least one epoch"):
        report.plot_curves([], tmp_path / "x.png")


@pytest.mark.parametrize("classes", [2, 4])
def test_roc_png_and_points_match_sklearn(tmp_path, rng, classes):
    from sklearn.metrics import roc_auc_score, roc_curve
    y = rng.integers(0, classes, 200)
    p = rng.random((200, classes)) + np.eye(classes)[y] * 0.5
    p /= p.sum(1, keepdims=True)
    _check_png(report.plot_roc(y, p, tmp_path / "roc.png", class_names=[f"c{i}" for i in range(classes)]))
    fpr, tpr = report.roc_points(y == 1, p[:, 1])
    f2, t2, _ = roc_curve(y == 1, p[:, 1], drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2, atol=1e-12)
    np.testing.assert_allclose(tpr, t2, atol=1e-12)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y == 1, p[:, 1]))
    with pytest.raises(ValueError, match=r"probs must have shape \(N, classes\) with N=200"):
        report.plot_roc(y, p[:10], tmp_path / "bad.png")


def test_confusion_png(tmp_path):
    _check_png(report.plot_confusion([[50, 3], [7, 90]], tmp_path / "cm.png", ["normal", "pneumonia"]))
    _check_png(report.plot_confusion(np.arange(81).reshape(9, 9), tmp_path / "cm9.png"))
    with pytest.raises(ValueError, match="cm must be a square"):
        report.plot_confusion([[1, 2, 3]], tmp_path / "bad.png")
