"""Classification metrics in NumPy: the numbers a clinician-researcher reads, equal to scikit-learn's.

Notation for class k (one-vs-rest): TP_k, FP_k, FN_k, TN_k from the confusion matrix C (rows = true
class, columns = predicted class): TP_k = C[k, k], FP_k = sum_i C[i, k] - TP_k, FN_k = sum_j C[k, j] - TP_k,
TN_k = n - TP_k - FP_k - FN_k.

    accuracy            mean(y_pred == y_true)
    precision_k         TP / (TP + FP)
    recall_k            TP / (TP + FN)         (= sensitivity, true positive rate)
    specificity_k       TN / (TN + FP)         (true negative rate)
    f1_k                2 TP / (2 TP + FP + FN)
A 0/0 ratio is `zero_division` (default 0.0), as in scikit-learn. `average`: "binary" (the `pos_label`
class only), "macro" (unweighted mean over classes), "weighted" (weighted by support), "micro" (pooled
counts), None (per-class array). Classes are the sorted union of the labels in y_true and y_pred unless
`labels=` is given (scikit-learn's rule).

ROC and AUC: `roc_curve` returns (fpr, tpr, thresholds) with thresholds decreasing, the first one +inf,
one point per distinct score (collinear points dropped with drop_intermediate=True); `roc_auc` is the
area under it, computed as the Mann-Whitney statistic with average ranks for ties,
AUC = (sum of ranks of positives - P (P + 1) / 2) / (P N). Multi-class AUC is one-vs-rest: the mean
(macro) or support-weighted mean of the per-class AUCs of score[:, k] for "class == k".

MedMNIST's official evaluator (`medmnist/evaluator.py`, getAUC/getACC) is `medmnist_evaluate`:
  binary-class:  AUC of the last column (the positive class); ACC with prediction score[:, -1] > 0.5
  multi-label:   mean over labels of AUC(y[:, l], score[:, l]) and of accuracy with score >= 0.5
  multi-class, ordinal-regression: mean one-vs-rest AUC over classes; ACC of argmax (first max on ties)
`classification_report(y_true, probs)` gathers everything into one JSON-able dict (metrics.json).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "precision", "recall", "sensitivity", "specificity", "f1",
           "roc_curve", "auc", "roc_auc", "medmnist_auc", "medmnist_acc", "medmnist_evaluate",
           "classification_report", "infer_task"]


def _labels_1d(y, name):
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
        a = a.astype(np.int64)
    elif a.dtype.kind == "b":
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    return a


def _pair(y_true, y_pred):
    t = _labels_1d(y_true, "y_true")
    p = _labels_1d(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.shape[0]} and {p.shape[0]}")
    return t, p


def _scores(y_score, name="y_score"):
    s = np.asarray(y_score, dtype=np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return s


def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches; for 2-D (multi-label) arrays a row counts only if all labels match."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("y_true is empty: accuracy needs at least one sample")
    eq = t == p
    return float(np.mean(eq.all(axis=1) if eq.ndim == 2 else eq))


def _resolve_labels(t, p, labels):
    if labels is None:
        return np.union1d(t, p)
    return np.asarray(labels)


def confusion_matrix(y_true, y_pred, labels=None, num_classes=None) -> np.ndarray:
    """C[i, j] = number of samples of true class labels[i] predicted as labels[j] (int64, (K, K)).

    labels: the classes in order (default: sorted union of both arrays); num_classes=K means range(K).
    """
    t, p = _pair(y_true, y_pred)
    if num_classes is not None:
        if labels is not None:
            raise ValueError("give labels or num_classes, not both")
        labels = np.arange(int(num_classes))
    lab = _resolve_labels(t, p, labels)
    k = len(lab)
    # map labels to positions; samples with labels outside `lab` are ignored (scikit-learn's rule)
    order = np.argsort(lab)
    ti = np.searchsorted(lab[order], t)
    pi = np.searchsorted(lab[order], p)
    ok = (ti < k) & (pi < k)
    ok[ok] &= (lab[order][ti[ok]] == t[ok]) & (lab[order][pi[ok]] == p[ok])
    ti, pi = order[ti[ok]], order[pi[ok]]
    return np.bincount(ti * k + pi, minlength=k * k).reshape(k, k).astype(np.int64)


def _counts(y_true, y_pred, labels):
    t, p = _pair(y_true, y_pred)
    lab = _resolve_labels(t, p, labels)
    c = confusion_matrix(t, p, labels=lab)
    tp = np.diag(c).astype(np.float64)
    fp = c.sum(axis=0) - tp
    fn = c.sum(axis=1) - tp
    tn = c.sum() - tp - fp - fn
    return lab, tp, fp, fn, tn


def _ratio(num, den, zero_division):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den == 0, float(zero_division), r)


def _averaged(kind, y_true, y_pred, average, pos_label, labels, zero_division):
    if average not in ("binary", "macro", "micro", "weighted", None):
        raise ValueError(f"average must be 'binary', 'macro', 'micro', 'weighted' or None, got {average!r}")
    lab, tp, fp, fn, tn = _counts(y_true, y_pred, labels)

    def per(tp, fp, fn, tn):
        if kind == "precision":
            return _ratio(tp, tp + fp, zero_division)
        if kind == "recall":
            return _ratio(tp, tp + fn, zero_division)
        if kind == "specificity":
            return _ratio(tn, tn + fp, zero_division)
        return _ratio(2 * tp, 2 * tp + fp + fn, zero_division)

    if average == "binary":
        if len(lab) > 2:
            raise ValueError(f"average='binary' needs at most 2 classes, got labels {lab.tolist()}; "
                             f"use average='macro', 'micro' or 'weighted'")
        where = np.flatnonzero(lab == pos_label)
        if where.size == 0:
            if len(lab) == 2:
                raise ValueError(f"pos_label={pos_label} is not one of the labels {lab.tolist()}")
            return float(zero_division) if kind != "specificity" else float(per(tp, fp, fn, tn)[0])
        i = where[0]
        return float(per(tp[i], fp[i], fn[i], tn[i]))
    if average == "micro":
        return float(per(tp.sum(), fp.sum(), fn.sum(), tn.sum()))
    vals = per(tp, fp, fn, tn)
    if average is None:
        return vals
    if average == "macro":
        return float(vals.mean())
    support = tp + fn
    return float((vals * support).sum() / support.sum()) if support.sum() > 0 else float(zero_division)


def precision(y_true, y_pred, average="binary", pos_label=1, labels=None, zero_division=0.0):
    """TP / (TP + FP), averaged as described in the module docstring."""
    return _averaged("precision", y_true, y_pred, average, pos_label, labels, zero_division)


def recall(y_true, y_pred, average="binary", pos_label=1, labels=None, zero_division=0.0):
    """TP / (TP + FN) (sensitivity)."""
    return _averaged("recall", y_true, y_pred, average, pos_label, labels, zero_division)


sensitivity = recall


def specificity(y_true, y_pred, average="binary", pos_label=1, labels=None, zero_division=0.0):
    """TN / (TN + FP) of the `pos_label` class (binary) or per class averaged; equals recall of the
    negative class in the binary case."""
    return _averaged("specificity", y_true, y_pred, average, pos_label, labels, zero_division)


def f1(y_true, y_pred, average="binary", pos_label=1, labels=None, zero_division=0.0):
    """2 TP / (2 TP + FP + FN), the harmonic mean of precision and recall."""
    return _averaged("f1", y_true, y_pred, average, pos_label, labels, zero_division)


def _binary_inputs(y_true, y_score, pos_label):
    t = np.asarray(y_true)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    s = _scores(y_score)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if t.ndim != 1 or s.ndim != 1:
        raise ValueError(f"binary y_true and y_score must be 1-D, got shapes {t.shape} and {s.shape}")
    if t.shape != s.shape:
        raise ValueError(f"y_true and y_score must have the same length, got {t.shape[0]} and {s.shape[0]}")
    if pos_label is None:
        u = np.unique(t)
        if not (np.all(np.isin(u, [0, 1])) or np.all(np.isin(u, [-1, 1]))):
            raise ValueError(f"y_true has labels {u.tolist()}: give pos_label for non-{{0, 1}} labels")
        pos_label = 1
    return (t == pos_label), s


def _clf_curve(pos, s):
    """Cumulative (fps, tps, thresholds) at each distinct score, scores in decreasing order."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted = s[order]
    pos_sorted = pos[order].astype(np.float64)
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(pos_sorted)[last_of_run]
    fps = (last_of_run + 1) - tps
    return fps, tps, s_sorted[last_of_run]


def roc_curve(y_true, y_score, pos_label=None, drop_intermediate=True):
    """ROC curve of a binary problem: (fpr, tpr, thresholds), thresholds decreasing with +inf first.

    Point i counts the samples with score >= thresholds[i] as positive. With drop_intermediate=True the
    points that lie on a straight segment between their neighbours are dropped (same area, same corners).
    """
    pos, s = _binary_inputs(y_true, y_score, pos_label)
    if s.size == 0:
        raise ValueError("y_true is empty: roc_curve needs at least one sample")
    fps, tps, thr = _clf_curve(pos, s)
    if drop_intermediate and fps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def auc(x, y) -> float:
    """Area under a curve by the trapezoidal rule; x must be monotonic (increasing or decreasing)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}")
    dx = np.diff(x)
    if np.all(dx >= 0):
        sign = 1.0
    elif np.all(dx <= 0):
        sign = -1.0
    else:
        raise ValueError("x must be monotonic increasing or decreasing")
    return float(sign * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


def _average_ranks(s):
    """1-based ranks of s with ties given their average rank."""
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
    ends = np.r_[starts[1:], s_sorted.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _binary_auc(pos, s, what="y_true"):
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC is undefined when {what} holds only one class "
                         f"({n_pos} positive, {n_neg} negative samples)")
    r = _average_ranks(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true, y_score, average="macro", pos_label=None, labels=None) -> float:
    """Area under the ROC curve.

    Binary: y_score (N,) = score of the positive class (pos_label, default 1), or (N, 2) whose last column
    is used. Multi-class: y_score (N, K), one-vs-rest AUC of column k for class k (k = 0..K-1, or
    `labels[k]`), then the macro mean (average="macro") or support-weighted mean ("weighted").
    ValueError when a class has no positive or no negative sample (the AUC is undefined).
    """
    s = _scores(y_score)
    if s.ndim == 2 and s.shape[1] == 2 and np.asarray(y_true).ndim == 1 and labels is None and \
            np.all(np.isin(np.unique(y_true), [0, 1])):
        s = s[:, 1]
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        pos, s1 = _binary_inputs(y_true, s, pos_label)
        return _binary_auc(pos, s1)
    if s.ndim != 2:
        raise ValueError(f"y_score must have shape (N,) or (N, K), got {s.shape}")
    t = _labels_1d(y_true, "y_true")
    if t.shape[0] != s.shape[0]:
        raise ValueError(f"y_true and y_score must have the same length, got {t.shape[0]} and {s.shape[0]}")
    lab = np.arange(s.shape[1]) if labels is None else np.asarray(labels)
    if lab.size != s.shape[1]:
        raise ValueError(f"labels has {lab.size} entries, y_score has {s.shape[1]} columns")
    extra = np.setdiff1d(np.unique(t), lab)
    if extra.size:
        raise ValueError(f"y_true holds labels {extra.tolist()} outside the {s.shape[1]} score columns")
    if average not in ("macro", "weighted", None):
        raise ValueError(f"average must be 'macro', 'weighted' or None, got {average!r}")
    per = np.array([_binary_auc(t == c, s[:, k], f"y_true == {c}") for k, c in enumerate(lab)])
    if average is None:
        return per
    if average == "macro":
        return float(per.mean())
    w = np.array([(t == c).sum() for c in lab], dtype=np.float64)
    return float((per * w).sum() / w.sum())


MEDMNIST_TASKS = ("binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression")


def _check_task(task):
    if task not in MEDMNIST_TASKS:
        raise ValueError(f"task must be one of {MEDMNIST_TASKS}, got {task!r}")


def _medmnist_inputs(y_true, y_score, task):
    _check_task(task)
    s = _scores(y_score)
    t = np.asarray(y_true)
    if task.startswith("multi-label"):
        if t.shape != s.shape or t.ndim != 2:
            raise ValueError(f"multi-label y_true and y_score must both be (N, L), got {t.shape} and {s.shape}")
        return t, s
    t = _labels_1d(t, "y_true")
    if s.ndim == 1 and task == "binary-class":
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != t.shape[0]:
        raise ValueError(f"y_score must have shape (N, K) with N={t.shape[0]}, got {s.shape}")
    return t, s


def medmnist_auc(y_true, y_score, task) -> float:
    """AUC exactly as MedMNIST's getAUC (see the module docstring)."""
    t, s = _medmnist_inputs(y_true, y_score, task)
    if task == "binary-class":
        return _binary_auc(t == 1, s[:, -1])
    if task.startswith("multi-label"):
        return float(np.mean([_binary_auc(t[:, i] == 1, s[:, i], f"label {i}") for i in range(s.shape[1])]))
    return float(np.mean([_binary_auc(t == i, s[:, i], f"y_true == {i}") for i in range(s.shape[1])]))


def medmnist_acc(y_true, y_score, task, threshold=0.5) -> float:
    """ACC exactly as MedMNIST's getACC: binary score[:, -1] > threshold; multi-label score >= threshold,
    mean over labels; otherwise argmax."""
    t, s = _medmnist_inputs(y_true, y_score, task)
    if task == "binary-class":
        return float(np.mean((s[:, -1] > threshold).astype(np.int64) == t))
    if task.startswith("multi-label"):
        return float(np.mean(((s >= threshold).astype(np.int64) == t).mean(axis=0)))
    return float(np.mean(np.argmax(s, axis=1) == t))


def medmnist_evaluate(y_true, y_score, task, threshold=0.5) -> dict:
    """{"auc": getAUC, "acc": getACC} of MedMNIST's official evaluator."""
    return {"auc": medmnist_auc(y_true, y_score, task), "acc": medmnist_acc(y_true, y_score, task, threshold)}


def infer_task(y_true, probs) -> str:
    """binary-class if the scores have 1 or 2 columns, multi-label if y_true is (N, L) with L > 1, else multi-class."""
    t, s = np.asarray(y_true), np.asarray(probs)
    if t.ndim == 2 and t.shape[1] > 1:
        return "multi-label, binary-class"
    if s.ndim == 1 or s.shape[1] <= 2:
        return "binary-class"
    return "multi-class"


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def classification_report(y_true, probs, task=None, threshold=0.5, class_names=None) -> dict:
    """All test metrics in one JSON-able dict (the run directory's metrics.json).

    y_true: (N,) int labels ((N, L) 0/1 for multi-label). probs: (N, K) class probabilities ((N,) or (N, 2)
    for binary; (N, L) per-label probabilities for multi-label).
    Keys: task, n, acc, auc (both MedMNIST's definitions; auc is None when undefined, e.g. a single class),
    precision, recall, sensitivity (= recall), specificity, f1, confusion_matrix (list of lists; (L, 2, 2)
    for multi-label), threshold, per_class {precision, recall, specificity, f1, support}, class_names.
    Binary: predictions are prob(class 1) > threshold and precision/recall/f1/specificity are those of class 1
    (sensitivity = detection rate of the positive class, specificity = of the negative class). Multi-class:
    argmax predictions, macro averages. Multi-label: score >= threshold, macro averages over labels.
    """
    s = _scores(probs, "probs")
    t0 = np.asarray(y_true)
    task = task or infer_task(t0, s)
    task_eval = task
    t, s2 = _medmnist_inputs(t0, s, task_eval)
    n = int(t.shape[0])
    if n == 0:
        raise ValueError("y_true is empty: classification_report needs at least one sample")
    if not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    try:
        auc_value = medmnist_auc(t, s2, task_eval)
    except ValueError:
        auc_value = None
    acc_value = medmnist_acc(t, s2, task_eval, threshold)
    out = {"task": task, "n": n, "acc": acc_value, "auc": _num(auc_value), "threshold": float(threshold)}
    if task.startswith("multi-label"):
        pred = (s2 >= threshold).astype(np.int64)
        per = {k: [] for k in ("precision", "recall", "specificity", "f1", "support")}
        cms = []
        for i in range(t.shape[1]):
            ti, pi = t[:, i].astype(np.int64), pred[:, i]
            cms.append(confusion_matrix(ti, pi, labels=[0, 1]).tolist())
            per["precision"].append(precision(ti, pi, labels=[0, 1]))
            per["recall"].append(recall(ti, pi, labels=[0, 1]))
            per["specificity"].append(specificity(ti, pi, labels=[0, 1]))
            per["f1"].append(f1(ti, pi, labels=[0, 1]))
            per["support"].append(int(ti.sum()))
        out.update({k: float(np.mean(per[k])) for k in ("precision", "recall", "specificity", "f1")})
        out["confusion_matrix"] = cms
    else:
        k = s2.shape[1] if s2.shape[1] > 1 else 2
        labels = np.arange(k)
        bad = t[(t < 0) | (t >= k)]
        if bad.size:
            raise ValueError(f"y_true holds labels {np.unique(bad).tolist()} outside [0, {k - 1}] "
                             f"for probs with {k} classes")
        if task == "binary-class":
            pred = (s2[:, -1] > threshold).astype(np.int64)
            avg = "binary"
        else:
            pred = np.argmax(s2, axis=1)
            avg = "macro"
        for name, fn in (("precision", precision), ("recall", recall), ("specificity", specificity), ("f1", f1)):
            out[name] = fn(t, pred, average=avg, labels=labels)
        out["confusion_matrix"] = confusion_matrix(t, pred, labels=labels).tolist()
        per = {name: [float(v) for v in fn(t, pred, average=None, labels=labels)]
               for name, fn in (("precision", precision), ("recall", recall), ("specificity", specificity),
                                ("f1", f1))}
        per["support"] = [int(v) for v in np.bincount(t, minlength=k)]
    out["sensitivity"] = out["recall"]
    out["per_class"] = per
    if class_names is not None:
        out["class_names"] = [str(c) for c in class_names]
    for key in ("acc", "precision", "recall", "sensitivity", "specificity", "f1"):
        out[key] = float(out[key])
    return out
