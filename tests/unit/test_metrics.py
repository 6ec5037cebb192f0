import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from assets.model import metrics

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
Y_PRED = np.array([0, 1, 0, 1, 2, 2, 2, 0, 2, 1])


def test_confusion_and_per_class_by_hand():
    counts = metrics.confusion(Y_TRUE, Y_PRED, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]
    classes = metrics.per_class(counts)
    # class 0: precision 2/3, recall 2/3; class 1: 2/3, 2/3; class 2: 3/4, 3/4
    assert classes["precision"] == pytest.approx([2 / 3, 2 / 3, 3 / 4])
    assert classes["f1"] == pytest.approx([2 / 3, 2 / 3, 3 / 4])
    assert classes["support"].tolist() == [3, 3, 4]
    assert metrics.score("macro_f1", Y_TRUE, Y_PRED, 3) == pytest.approx((2 / 3 * 2 + 3 / 4) / 3)


def test_metrics_agree_with_sklearn_including_absent_classes():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 3, 300)
    assert metrics.score("macro_f1", y_true, y_pred, 4) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", labels=range(4), zero_division=0)
    )
    assert metrics.score("macro_recall", y_true, y_pred, 4) == pytest.approx(
        recall_score(y_true, y_pred, average="macro", labels=range(4), zero_division=0)
    )


def test_bootstrap_matches_a_naive_loop_over_the_same_resamples():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, 1 - y_true)
    low, high = metrics.bootstrap_interval("macro_f1", y_true, y_pred, 2, resamples=1000, seed=9)
    index = np.random.default_rng(9).integers(0, 200, size=(1000, 200))
    naive = [f1_score(y_true[i], y_pred[i], average="macro") for i in index]
    assert (low, high) == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))
    point = metrics.score("macro_f1", y_true, y_pred, 2)
    assert low < point < high
    assert metrics.bootstrap_interval("macro_f1", y_true, y_pred, 2, seed=9) == (low, high)


def test_expected_calibration_error_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y_true = np.array([0, 1, 1, 1])
    # 4 bins: [0.75, 1] holds 0.9 (right) and 0.8 (wrong); [0.5, 0.75) holds 0.7 and 0.6 (right)
    expected = 0.5 * abs(0.85 - 0.5) + 0.5 * abs(0.65 - 1.0)
    assert metrics.expected_calibration_error(probabilities, y_true, bins=4) == pytest.approx(
        expected
    )


def test_the_reliability_table_holds_the_bins_the_calibration_error_sums():
    from assets.model.calibration import reliability_bins

    rng = np.random.default_rng(4)
    probabilities = rng.dirichlet([0.5, 0.5, 0.5], 500)
    probabilities[:5] = [1.0, 0.0, 0.0]  # certain: a bin of their own
    y_true = rng.integers(0, 3, 500)
    y_true[:5] = [1, 1, 0, 0, 0]  # two of the certain answers wrong
    table = reliability_bins(probabilities, y_true, bins=10)
    assert sum(b["texts"] for b in table) == 500
    assert table[-1] == {"low": 1.0, "high": 1.0, "texts": 5, "confidence": 1.0, "accuracy": 0.6}
    gaps = sum(b["texts"] / 500 * abs(b["confidence"] - b["accuracy"]) for b in table)
    assert gaps == pytest.approx(metrics.expected_calibration_error(probabilities, y_true, 10))


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="metric 'auc' is not one of macro_f1, macro_recall"):
        metrics.score("auc", Y_TRUE, Y_PRED, 3)


def test_the_official_metric_of_one_class_or_of_named_classes():
    names = ["none", "against", "favor"]
    counts = metrics.confusion(Y_TRUE, Y_PRED, 3)
    f1 = metrics.per_class(counts)["f1"]
    assert metrics.score(metrics.parse_metric("f1:favor", names), Y_TRUE, Y_PRED, 3) == (
        pytest.approx(f1[2])
    )
    stance = metrics.parse_metric("mean_f1:against,favor", names)
    assert stance.classes == (1, 2)
    assert metrics.score(stance, Y_TRUE, Y_PRED, 3) == pytest.approx((f1[1] + f1[2]) / 2)
    low, high = metrics.bootstrap_interval(stance, Y_TRUE, Y_PRED, 3, resamples=200)
    assert low <= metrics.score(stance, Y_TRUE, Y_PRED, 3) <= high
    assert metrics.metric_label("mean_f1:against,favor") == "mean F1 of against, favor"
    assert metrics.metric_label("f1:irony") == "F1 of irony"


def test_a_metric_naming_other_classes_says_which_classes_there_are():
    with pytest.raises(ValueError, match="'ironic' is not a class of this task") as error:
        metrics.parse_metric("f1:ironic", ["non_irony", "irony"])
    assert "(classes: non_irony, irony)" in str(error.value)
    with pytest.raises(ValueError, match="is not one of macro_f1, macro_recall, f1:<class>"):
        metrics.check_metric_syntax("mean_f1:favor")  # one class: that is f1:favor
    with pytest.raises(ValueError, match="needs the task's label names"):
        metrics.score("f1:irony", Y_TRUE, Y_PRED, 3)
