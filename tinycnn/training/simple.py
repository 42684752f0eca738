"""Keras-like one-call helpers over `Trainer`: `fit(model, train, val)`, `evaluate(model, ds)`, `predict(model, x)`.

    from tinycnn import data, models
    from tinycnn.training import fit, evaluate, predict
    ds = data.load_dataset("synthetic")
    model = models.get_model("vgg")
    trainer = fit(model, ds.train, ds.val, epochs=5)        # AdamW + warm-up cosine, like the CLI recipe
    print(evaluate(model, ds.test, trainer.mean, trainer.std)["auc"])
    probs = predict(model, ds.test.images, trainer.mean, trainer.std)

Multi-label data (labels (N, L) of 0/1) is recognised by its 2-D labels: `fit` trains per-label BCE,
`evaluate` and `predict(..., task="multi-label, binary-class")` give per-label sigmoid probabilities.
"""
from __future__ import annotations

import numpy as np

import tinycnn

from .schedules import WarmupCosine
from .trainer import MULTILABEL, Trainer, predict_logits, probs_from_logits

__all__ = ["fit", "evaluate", "predict"]


def fit(model, train, val=None, *, epochs=10, batch_size=128, lr=2e-3, weight_decay=0.05, warmup_epochs=1,
        augment=None, label_smoothing=0.0, class_weights=None, loss="ce", task=None, seed=0, device="cpu",
        quiet=False, log=print) -> Trainer:
    """Train `model` on an ArrayDataset (validating on `val`, default: train); returns the Trainer.

    Normalisation statistics are computed on `train` and kept on the Trainer (`mean`, `std`).
    """
    from tinycnn.data import transforms as T

    if isinstance(augment, str):
        augment = T.parse_augment(augment)
    mean = train.images.mean(axis=(0, 2, 3)).tolist()
    std = np.maximum(train.images.std(axis=(0, 2, 3)), 1e-6).tolist()
    model.to(device)
    opt = tinycnn.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps = max(len(train) // batch_size, 1) if len(train) > batch_size else 1
    sched = WarmupCosine(opt, steps * epochs, min(steps * warmup_epochs, steps * epochs))
    tr = Trainer(model, opt, sched, loss=loss, class_weights=class_weights, label_smoothing=label_smoothing,
                 mean=mean, std=std, augment=augment, batch_size=batch_size, seed=seed, device=device, quiet=quiet)
    n_classes = int(np.max(train.labels)) + 1
    if task is None and np.ndim(train.labels) == 2:
        task = MULTILABEL
    task = task or ("binary-class" if n_classes <= 2 else "multi-class")
    tr.fit(train, val if val is not None else train, epochs, task, log=None if quiet else log)
    return tr


def predict(model, images, mean=(0.0,), std=(1.0,), batch_size=256, device="cpu", task=None) -> np.ndarray:
    """Class probabilities (N, classes) of images (N, C, H, W in [0, 1]); per-label sigmoid probabilities
    (N, labels) when `task` is multi-label."""
    logits = predict_logits(model, np.asarray(images, dtype=np.float32), mean, std, batch_size, device)
    return probs_from_logits(logits, task)


def evaluate(model, dataset, mean=(0.0,), std=(1.0,), task=None, device="cpu") -> dict:
    """`tinycnn.metrics.classification_report` of `model` on an ArrayDataset."""
    from tinycnn.metrics import classification_report

    if task is None and np.ndim(dataset.labels) == 2:
        task = MULTILABEL
    probs = predict(model, dataset.images, mean, std, device=device, task=task)
    return classification_report(dataset.labels, probs, task=task)
