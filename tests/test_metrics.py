import json

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tinycnn import metrics as M

# scores drawn from a small set of values so that ties are frequent
SCORES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0])


@st.composite
def labels_and_preds(draw, max_k=5):
    n = draw(st.integers(1, 60))
    k = draw(st.integers(2, max_k))
    t = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    p = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    return t, p


@st.composite
def binary_scores(draw):
    n = draw(st.integers(2, 60))
    t = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 1)))
    if t.min() == t.max():
        t[0] = 1 - t[0]
    s = draw(hnp.arrays(np.float64, n, elements=SCORES))
    return t, s


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
@settings(max_examples=40, deadline=None)
@given(labels_and_preds())
def test_counting_metrics_equal_sklearn(tp):
    t, p = tp
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-15)
    np.testing.assert_array_equal(M.confusion_matrix(t, p), skm.confusion_matrix(t, p))
    np.testing.assert_array_equal(M.confusion_matrix(t, p, num_classes=6),
                                  skm.confusion_matrix(t, p, labels=list(range(6))))
    for avg in ("macro", "micro", "weighted", None):
        for ours, ref in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
            np.testing.assert_allclose(ours(t, p, average=avg), ref(t, p, average=avg, zero_division=0.0), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(labels_and_preds(max_k=2))
def test_binary_metrics_and_specificity(tp):
    t, p = tp
    for ours, ref in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
        assert ours(t, p) == pytest.approx(ref(t, p, labels=[0, 1], zero_division=0.0), abs=1e-12)
    # specificity of the positive class = recall of the negative class
    assert M.specificity(t, p, labels=[0, 1]) == pytest.approx(
        skm.recall_score(t, p, pos_label=0, labels=[0, 1], zero_division=0.0), abs=1e-12)
    assert M.sensitivity(t, p) == M.recall(t, p)


@settings(max_examples=80, deadline=None)
@given(binary_scores(), st.booleans())
def test_roc_curve_and_auc_equal_sklearn_with_ties(ts, drop):
    t, s = ts
    ours = M.roc_curve(t, s, drop_intermediate=drop)
    ref = skm.roc_curve(t, s, drop_intermediate=drop)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-15)
    assert M.roc_auc(t, s) == pytest.approx(skm.roc_auc_score(t, s), abs=1e-12)
    assert M.auc(ours[0], ours[1]) == pytest.approx(skm.auc(ref[0], ref[1]), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 6), st.integers(0, 10_000))
def test_multiclass_ovr_auc_equals_sklearn(k, seed):
    rng = np.random.default_rng(seed)
    n = 40
    t = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    logits = np.round(rng.standard_normal((n, k)), 1)  # rounding makes ties
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for avg in ("macro", "weighted"):
        assert M.roc_auc(t, prob, average=avg) == pytest.approx(
            skm.roc_auc_score(t, prob, multi_class="ovr", average=avg), abs=1e-12)


def medmnist_reference(y_true, y_score, task, threshold=0.5):
    """MedMNIST's official getAUC/getACC (medmnist/evaluator.py), restated with scikit-learn."""
    if task == "binary-class":
        auc = skm.roc_auc_score(y_true, y_score[:, -1])
        acc = skm.accuracy_score(y_true, (y_score[:, -1] > threshold).astype(int))
    elif task == "multi-label, binary-class":
        auc = np.mean([skm.roc_auc_score(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
        pred = np.where(y_score < threshold, 0, 1)
        acc = np.mean([skm.accuracy_score(y_true[:, i], pred[:, i]) for i in range(y_true.shape[1])])
    else:
        auc = np.mean([skm.roc_auc_score(np.where(y_true == i, 1, 0), y_score[:, i]) for i in range(y_score.shape[1])])
        acc = skm.accuracy_score(y_true, np.argmax(y_score, axis=1))
    return auc, acc


@pytest.mark.parametrize("task,k", [("binary-class", 2), ("multi-class", 4), ("ordinal-regression", 5),
                                    ("multi-label, binary-class", 3)])
@pytest.mark.parametrize("seed", range(5))
def test_medmnist_evaluate_equals_official_formula(task, k, seed):
    rng = np.random.default_rng(seed)
    n = 50
    if task.startswith("multi-label"):
        y = rng.integers(0, 2, (n, k))
        y[0], y[1] = 0, 1
        score = np.round(rng.random((n, k)), 1)  # includes exact 0.5 values: the threshold rule matters
    else:
        y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
        score = np.round(rng.random((n, k)), 1)
        score /= score.sum(1, keepdims=True) + 1e-12
        score[:3, -1] = 0.5
    res = M.medmnist_evaluate(y, score, task)
    auc, acc = medmnist_reference(y, score, task)
    assert res["auc"] == pytest.approx(auc, abs=1e-12)
    assert res["acc"] == pytest.approx(acc, abs=1e-12)
    if task == "binary-class":  # the (N, 1)-shaped labels of the npz files work too
        assert M.medmnist_evaluate(y[:, None], score, task) == res


def test_classification_report_binary_is_jsonable_and_correct(rng):
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    r = M.classification_report(y, probs, class_names=["normal", "pneumonia"])
    json.dumps(r)
    pred = (p1 > 0.5).astype(int)
    assert {"acc", "auc", "precision", "recall", "f1", "sensitivity", "specificity", "confusion_matrix", "n"} <= set(r)
    assert r["n"] == 200 and r["task"] == "binary-class"
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert r["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert r["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert r["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
    assert r["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert r["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert r["class_names"] == ["normal", "pneumonia"]


def test_classification_report_multiclass_and_multilabel(rng):
    y = np.r_[0, 1, 2, rng.integers(0, 3, 97)]
    probs = rng.dirichlet(np.ones(3), 100)
    r = M.classification_report(y, probs)
    pred = probs.argmax(1)
    assert r["task"] == "multi-class"
    assert r["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert len(r["per_class"]["recall"]) == 3
    ym = rng.integers(0, 2, (100, 4))
    rm = M.classification_report(ym, rng.random((100, 4)))
    json.dumps(rm)
    assert rm["task"] == "multi-label, binary-class" and np.array(rm["confusion_matrix"]).shape == (4, 2, 2)


def test_undefined_auc_is_none_in_report_and_error_in_roc_auc():
    y = np.zeros(5, int)
    probs = np.tile([0.7, 0.3], (5, 1))
    assert M.classification_report(y, probs)["auc"] is None
    with pytest.raises(ValueError, match="AUC is undefined when y_true holds only one class"):
        M.roc_auc(y, probs[:, 1])


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        M.precision([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="average='binary' needs at most 2 classes"):
        M.f1([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="task must be one of"):
        M.medmnist_evaluate([0, 1], [[0.1, 0.9], [0.2, 0.8]], "regression")
    with pytest.raises(ValueError, match=r"y_true holds labels \[3\] outside \[0, 2\]"):
        M.classification_report([0, 3, 1], np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="y_score must be finite"):
        M.roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(TypeError, match="y_true must hold integer class labels"):
        M.precision(["a", "b"], ["a", "b"])
