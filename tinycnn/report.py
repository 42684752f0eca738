"""Plots of a run for people to look at: learning curves, ROC curves, confusion matrix (matplotlib, PNG).

Every function takes plain NumPy data / lists, writes one PNG atomically and returns its path.
Figures use the non-interactive Agg backend, so they work on machines without a display.
"""
from __future__ import annotations

import io
import os

import numpy as np

from .serialization import atomic_write_bytes

__all__ = ["plot_curves", "plot_roc", "plot_confusion", "roc_points", "FIGSIZE", "DPI"]

FIGSIZE = (6.4, 4.8)
DPI = 100  # 640 x 480 pixels per figure


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def plot_curves(history: list[dict], path, title: str = "Training curves") -> str:
    """Loss (train and val), validation accuracy/AUC and learning rate per epoch.

    history: one dict per epoch with keys epoch, train_loss, val_loss, val_acc, val_auc, lr.
    """
    if not history:
        raise ValueError("history must hold at least one epoch, got an empty list")
    plt = _plt()
    ep = [int(h["epoch"]) for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=FIGSIZE)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train loss", ms=3)
    ax1.plot(ep, [h["val_loss"] for h in history], "s-", label="val loss", ms=3)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.set_title("Loss")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.plot(ep, [h["val_acc"] for h in history], "o-", label="val ACC", ms=3)
    ax2.plot(ep, [h["val_auc"] for h in history], "s-", label="val AUC", ms=3)
    best = int(np.nanargmax([h["val_auc"] if np.isfinite(h["val_auc"]) else -1 for h in history]))
    ax2.axvline(ep[best], color="grey", ls="--", lw=1, label=f"best val AUC (epoch {ep[best]})")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("metric")
    ax2.set_title("Validation")
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(ep, [h["lr"] for h in history], ":", color="tab:green", label="learning rate")
    ax3.set_ylabel("learning rate")
    lines = ax2.get_legend_handles_labels()
    lines3 = ax3.get_legend_handles_labels()
    ax2.legend(lines[0] + lines3[0], lines[1] + lines3[1], loc="best", fontsize=8, framealpha=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def roc_points(y_true, scores):
    """ROC curve (fpr, tpr) of binary labels `y_true` (0/1) against `scores`, thresholds at every distinct score."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    P, N = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / N], np.r_[0.0, tps / P]


def plot_roc(y_true, probs, path, class_names=None, title: str = "ROC curve (test)") -> str:
    """ROC curves: the positive class for binary tasks (score = P(class 1)), one-vs-rest per class otherwise."""
    plt = _plt()
    y = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must have shape (N, classes) with N={len(y)}, got {p.shape}")
    C = p.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    classes = [1] if C == 2 else range(C)
    for c in classes:
        pos = y == c
        if pos.all() or not pos.any():
            continue  # ROC is undefined for a class that is absent (or alone) in this split
        fpr, tpr = roc_points(pos, p[:, c])
        auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
        label = f"{names[c]} (AUC {auc:.3f})" if C > 2 else f"positive = {names[c]} (AUC {auc:.3f})"
        ax.plot(fpr, tpr, lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm, path, class_names=None, title: str = "Confusion matrix (test)") -> str:
    """Confusion matrix (rows = true class, columns = predicted), counts and row percentages."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (C, C) matrix, got shape {cm.shape}")
    C = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, label="images")
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    thresh = cm.max() / 2 if cm.size else 0
    if C <= 12:
        for i in range(C):
            for j in range(C):
                ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.0f}%", ha="center", va="center",
                        fontsize=9 if C <= 6 else 6, color="white" if cm[i, j] > thresh else "black")
    short = [n if len(n) <= 14 else n[:13] + "." for n in names]
    ax.set_xticks(range(C), short, rotation=30 if C > 2 else 0, ha="right" if C > 2 else "center")
    ax.set_yticks(range(C), short)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
