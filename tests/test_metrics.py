"""Attribute and localization metrics, and the Markdown report built from them."""

import numpy as np
import pytest

from lnet_anet_tf import attributes
from lnet_anet_tf import metrics
from lnet_anet_tf import report


def test_balanced_accuracy_exposes_always_no():
    labels = np.zeros([100, 2], np.int64)
    labels[:10, 0] = 1
    labels[:50, 1] = 1
    always_no = np.zeros([100, 2])

    result = metrics.attribute_metrics(always_no, labels)

    assert result["per_attribute"]["0"]["accuracy"] == pytest.approx(0.9)
    assert result["per_attribute"]["0"]["balanced_accuracy"] == pytest.approx(0.5)
    assert result["per_attribute"]["1"]["balanced_accuracy"] == pytest.approx(0.5)
    assert result["mean_accuracy"] == pytest.approx(0.7)


def test_balanced_accuracy_hand_computed():
    labels = np.array([[1], [1], [1], [0]])
    probabilities = np.array([[0.9], [0.2], [0.6], [0.4]])

    result = metrics.attribute_metrics(probabilities, labels)["per_attribute"]["0"]

    # True positive rate 2/3, true negative rate 1.
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["positive_rate"] == pytest.approx(0.75)


def test_balanced_accuracy_without_positives():
    labels = np.zeros([4, 1])
    probabilities = np.array([[0.1], [0.7], [0.2], [0.3]])

    result = metrics.attribute_metrics(probabilities, labels)["per_attribute"]["0"]

    # Only the true negative rate is defined.
    assert result["balanced_accuracy"] == pytest.approx(0.75)


def test_roc_auc_hand_computed_with_ties():
    labels = np.array([[1], [1], [0], [0], [0]])
    scores = np.array([[0.9], [0.4], [0.4], [0.2], [0.8]])

    auc = metrics.roc_auc(scores, labels)

    # The positive 0.9 beats all three negatives. The positive 0.4 ties 0.4,
    # beats 0.2 and loses to 0.8, so the AUC is (3 + 0.5 + 1) / 6.
    assert auc[0] == pytest.approx(4.5 / 6)


def test_roc_auc_matches_pair_count():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, [60, 4])
    scores = np.round(rng.random([60, 4]) + 0.3 * labels, 1)  # rounding makes ties

    auc = metrics.roc_auc(scores, labels)

    for column in range(4):
        positive = scores[labels[:, column] == 1, column][:, None]
        negative = scores[labels[:, column] == 0, column][None, :]
        pairs = (positive > negative) + 0.5 * (positive == negative)
        assert auc[column] == pytest.approx(pairs.mean())


def test_roc_auc_undefined_without_both_classes():
    labels = np.array([[0, 1], [0, 0], [0, 1]])
    scores = np.array([[0.3, 0.9], [0.1, 0.2], [0.2, 0.1]])

    result = metrics.attribute_metrics(scores, labels)

    assert result["per_attribute"]["0"]["roc_auc"] is None
    assert result["per_attribute"]["1"]["roc_auc"] == pytest.approx(0.5)
    assert result["mean_roc_auc"] == pytest.approx(0.5)


def test_roc_auc_ignores_threshold():
    labels = np.array([[1], [0], [1], [0]])
    scores = np.array([[0.3], [0.1], [0.4], [0.2]])  # every score below 0.5

    result = metrics.attribute_metrics(scores, labels)["per_attribute"]["0"]

    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["roc_auc"] == pytest.approx(1.0)


def test_attribute_metrics_names_and_shape_check():
    labels = np.ones([3, attributes.NUM_ATTRIBUTES])
    result = metrics.attribute_metrics(np.ones_like(labels), labels)
    assert list(result["per_attribute"]) == list(attributes.ATTRIBUTE_NAMES)

    with pytest.raises(ValueError, match="must both be"):
        metrics.attribute_metrics(np.ones([3, 2]), np.ones([3, 3]))


def test_localization_recall_and_histogram():
    truth = np.array([[0.0, 0.0, 0.5, 0.5]] * 4, np.float32)
    predicted = np.array(
        [
            [0.0, 0.0, 0.5, 0.5],  # IoU 1
            [0.0, 0.0, 0.5, 0.25],  # IoU 0.5
            [0.0, 0.0, 0.25, 0.25],  # IoU 0.25
            [0.5, 0.5, 1.0, 1.0],  # IoU 0
        ],
        np.float32,
    )

    result = metrics.localization_metrics(predicted, truth)

    assert result["recall"] == pytest.approx(0.5)
    assert result["mean_iou"] == pytest.approx((1 + 0.5 + 0.25) / 4)
    assert sum(result["iou_histogram"]["counts"]) == 4
    assert result["iou_histogram"]["counts"][0] == 1
    assert result["iou_histogram"]["counts"][-1] == 1


def test_box_shape_placement_and_size():
    truth = np.array([[0.2, 0.2, 0.6, 0.6]] * 3, np.float32)
    predicted = np.array(
        [
            [0.1, 0.1, 0.7, 0.7],  # contains the whole true box, area ratio 2.25
            [0.3, 0.3, 0.5, 0.5],  # contains the centre only, area ratio 0.25
            [0.7, 0.7, 0.9, 0.9],  # misses, area ratio 0.25
        ],
        np.float32,
    )

    result = metrics.localization_metrics(predicted, truth)

    assert result["centre_inside"] == pytest.approx(2 / 3)
    assert result["true_box_inside"] == pytest.approx(1 / 3)
    assert result["median_area_ratio"] == pytest.approx(0.25)


def test_report_box_shape_table():
    text = report.render(_document("synthetic"))

    assert "| lnet_s | 1.000 | 100.00 | 100.00 | 1.00 |" in text


def _document(dataset):
    labels = np.random.default_rng(0).integers(0, 2, [20, attributes.NUM_ATTRIBUTES])
    box = np.array([[0.1, 0.1, 0.6, 0.6]] * 20, np.float32)
    return {
        "dataset": dataset,
        "preset": "demo",
        "num_test_images": 20,
        "seconds_per_image": 0.01,
        "attributes": metrics.attribute_metrics(labels * 0.8 + 0.1, labels),
        "localization": {
            "lnet_o": metrics.localization_metrics(box, box),
            "lnet_s": metrics.localization_metrics(box, box),
        },
        "baselines": {"majority": {"mean_accuracy": 0.5, "mean_balanced_accuracy": 0.5}},
    }


def test_report_rows_and_labels():
    text = report.render(_document("synthetic"))

    assert "synthetic" in text
    assert "published" not in text
    for name in attributes.ATTRIBUTE_NAMES:
        assert f"| {name} |" in text
    assert "| lnet_s recall at IoU >= 0.5 (%) | 100.00 |" in text
    # Every label is scored 0.9 when present and 0.1 when absent.
    assert "| mean ROC AUC | 1.000 | n/a | n/a | |" in text
    smiling_row = next(line for line in text.splitlines() if line.startswith("| Smiling |"))
    assert smiling_row.endswith("| 100.00 | 1.000 |")


def test_report_scores_on_annotated_boxes():
    document = _document("celeba")
    labels = np.zeros([20, attributes.NUM_ATTRIBUTES])
    labels[:5] = 1  # a quarter positive: all-negative predictions score 75%
    document["attributes_at_annotated_boxes"] = metrics.attribute_metrics(labels * 0.0, labels)

    text = report.render(document)

    assert "| mean accuracy, ANet on the annotated face boxes (%) | 75.00 | | | |" in text
    assert "| mean balanced accuracy, ANet on the annotated face boxes (%) | 50.00 | | | |" in text
    eyeglasses_row = next(line for line in text.splitlines() if line.startswith("| Eyeglasses |"))
    assert eyeglasses_row.rstrip().endswith("| 75.00 | 99 |")


def test_report_omits_annotated_box_rows():
    text = report.render(_document("synthetic"))

    assert "annotated" not in text


def test_report_on_celeba_shows_published_numbers():
    text = report.render(_document("celeba"))

    assert "| Eyeglasses | " in text
    eyeglasses_row = next(line for line in text.splitlines() if line.startswith("| Eyeglasses |"))
    assert eyeglasses_row.rstrip().endswith("| 99 |")
