"""Plots of a run for people to look at: learning curves, ROC curves, confusion matrix (matplotlib, PNG).

Every function takes plain NumPy data / lists, writes one PNG atomically and returns its path.
Figures use the non-interactive Agg backend, so they work on machines without a display.
"""
from __future__ import annotations

import io
import os

import numpy as np

from .serialization import atomic_write_bytes

__all__ = ["plot_curves", "plot_roc", "plot_confusion", "plot_confusion_multilabel", "roc_points", "FIGSIZE", "DPI"]

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


def _trapezoid(y, x) -> float:
    return float(np.trapezoid(y, x)) if hasattr(np, "trapezoid") else float(np.trapz(y, x))


def _plot_roc_multilabel(y, p, path, names, title) -> str:
    """One ROC curve per label (y (N, L) of 0/1, p (N, L) per-label probabilities), legend sorted by AUC,
    and the macro mean AUC (MedMNIST's multi-label AUC) in the title."""
    plt = _plt()
    L = p.shape[1]
    curves = []
    for l in range(L):
        pos = y[:, l] == 1
        if pos.all() or not pos.any():
            continue  # undefined for a label absent (or always present) in this split
        fpr, tpr = roc_points(pos, p[:, l])
        curves.append((_trapezoid(tpr, fpr), names[l], fpr, tpr))
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = plt.get_cmap("tab20" if L > 10 else "tab10")
    for i, (auc, name, fpr, tpr) in enumerate(sorted(curves, key=lambda c: -c[0])):
        short = name if len(name) <= 16 else name[:15] + "."
        ax.plot(fpr, tpr, lw=1.2, color=cmap(i % cmap.N), label=f"{short} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    macro = np.mean([c[0] for c in curves]) if curves else float("nan")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"{title}\nper label, mean AUC {macro:.3f} over {len(curves)} labels", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7 if L <= 8 else 6, ncol=1 if L <= 8 else 2, title="label (AUC)",
              title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_roc(y_true, probs, path, class_names=None, title: str = "ROC curve (test)") -> str:
    """ROC curves: the positive class for binary tasks (score = P(class 1)), one-vs-rest per class otherwise;
    for multi-label data (y_true (N, L) of 0/1 with L > 1, probs (N, L) per-label probabilities) one curve
    per label, score = P(label l)."""
    plt = _plt()
    y2 = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y2.ndim == 2 and y2.shape[1] > 1:
        if p.shape != y2.shape:
            raise ValueError(f"multi-label probs must have the labels' shape {y2.shape}, got {p.shape}")
        names = list(class_names) if class_names is not None else [str(i) for i in range(p.shape[1])]
        return _plot_roc_multilabel(y2.astype(np.int64), p, path, names, title)
    y = y2.ravel().astype(np.int64)
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
        auc = _trapezoid(tpr, fpr)
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


def plot_confusion_multilabel(cms, path, class_names=None, title: str = "Per-label confusion (test)") -> str:
    """Multi-label confusion: one small 2x2 panel per label (cms (L, 2, 2), rows = true absent/present,
    columns = predicted absent/present at the report's threshold), counts and row percentages, with the
    label's sensitivity and specificity under its name. Colour = row fraction, so rare labels read too."""
    plt = _plt()
    cms = np.asarray(cms, dtype=np.int64)
    if cms.ndim != 3 or cms.shape[1:] != (2, 2):
        raise ValueError(f"cms must have shape (L, 2, 2), got {cms.shape}")
    L = cms.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(L)]
    cols = 5 if L > 8 else int(np.ceil(np.sqrt(L)))
    rows = -(-L // cols)
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, squeeze=False)
    fs = 9 if L <= 4 else 7 if L <= 9 else 6
    for i, ax in enumerate(axes.ravel()):
        if i >= L:
            ax.axis("off")
            continue
        cm = cms[i]
        frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for r in range(2):
            for c in range(2):
                ax.text(c, r, f"{cm[r, c]}\n{100 * frac[r, c]:.0f}%", ha="center", va="center", fontsize=fs,
                        color="white" if frac[r, c] > 0.5 else "black")
        sens = cm[1, 1] / max(cm[1].sum(), 1)
        spec = cm[0, 0] / max(cm[0].sum(), 1)
        name = names[i] if len(names[i]) <= 14 else names[i][:13] + "."
        ax.set_title(f"{name}\nsens {sens:.2f} spec {spec:.2f}", fontsize=fs + 1)
        first_col, last_row = i % cols == 0, i // cols == rows - 1 or i + cols >= L
        ax.set_xticks([0, 1], ["no", "yes"] if last_row else ["", ""], fontsize=fs)
        ax.set_yticks([0, 1], ["no", "yes"] if first_col else ["", ""], fontsize=fs)
        if last_row:
            ax.set_xlabel("predicted", fontsize=fs)
        if first_col:
            ax.set_ylabel("true", fontsize=fs)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
