"""Attribute and localization metrics, in NumPy, on whole evaluation splits."""

from __future__ import annotations

import numpy as np

from lnet_anet_tf import attributes
from lnet_anet_tf import localization

# Bin edges of the IoU histogram in the evaluation report.
IOU_BIN_EDGES = np.linspace(0.0, 1.0, 11)


def attribute_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    """Compute per-attribute accuracy, balanced accuracy and ROC AUC, and their means.

    `probabilities` and `labels` are [N, 40]; labels are 0/1. Balanced accuracy is
    the mean of the true positive rate and the true negative rate. When a split
    has no positive (or no negative) example of an attribute, that rate is
    undefined and balanced accuracy falls back to the rate that is defined. The
    ROC AUC (`roc_auc`) is then undefined: it is None, and the mean leaves it out.
    The AUC does not depend on the threshold, so it shows whether the scores
    rank an attribute well even where the threshold never predicts it.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if probabilities.shape != labels.shape or probabilities.ndim != 2:
        raise ValueError(
            f"probabilities {probabilities.shape} and labels {labels.shape} must both "
            f"be [examples, attributes]."
        )
    predictions = probabilities >= threshold

    accuracy = (predictions == labels).mean(axis=0)
    positives = labels.sum(axis=0)
    negatives = (~labels).sum(axis=0)
    true_positive_rate = _safe_divide((predictions & labels).sum(axis=0), positives)
    true_negative_rate = _safe_divide((~predictions & ~labels).sum(axis=0), negatives)
    balanced = np.nanmean(np.stack([true_positive_rate, true_negative_rate]), axis=0)
    auc = roc_auc(probabilities, labels)

    names = attributes.ATTRIBUTE_NAMES if labels.shape[1] == attributes.NUM_ATTRIBUTES else None
    per_attribute = {}
    for index in range(labels.shape[1]):
        name = names[index] if names else str(index)
        per_attribute[name] = {
            "accuracy": float(accuracy[index]),
            "balanced_accuracy": float(balanced[index]),
            "positive_rate": float(positives[index] / len(labels)),
            "roc_auc": None if np.isnan(auc[index]) else float(auc[index]),
        }
    defined = auc[~np.isnan(auc)]
    return {
        "num_examples": int(len(labels)),
        "mean_accuracy": float(accuracy.mean()),
        "mean_balanced_accuracy": float(np.nanmean(balanced)),
        "mean_roc_auc": float(defined.mean()) if len(defined) else None,
        "per_attribute": per_attribute,
    }


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the area under the ROC curve of each column of [N, K] scores, NaN where undefined.

    The AUC is the probability that a random positive example scores above a
    random negative one, with ties counted as one half: the Mann-Whitney U
    statistic over the number of pairs. A column without positives or without
    negatives has no pairs, and its AUC is NaN.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    result = np.full(scores.shape[1], np.nan)
    for column in range(scores.shape[1]):
        positive = labels[:, column]
        num_positive, num_negative = positive.sum(), (~positive).sum()
        if num_positive == 0 or num_negative == 0:
            continue
        ranks = _average_ranks(scores[:, column])
        rank_sum = ranks[positive].sum()
        result[column] = (rank_sum - num_positive * (num_positive + 1) / 2) / (
            num_positive * num_negative
        )
    return result


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks of `values`, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)
    mean_rank = last_rank - (counts - 1) / 2.0
    return mean_rank[inverse]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    result = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


def localization_metrics(predicted: np.ndarray, ground_truth: np.ndarray, threshold: float = 0.5) -> dict:
    """Recall at IoU >= `threshold`, mean IoU and the IoU histogram of [N, 4] boxes.

    Both box sets are normalized [ymin, xmin, ymax, xmax] in the same images.
    Every image has exactly one predicted and one true face box, so recall here
    is the fraction of images whose predicted box overlaps the true box enough.
    """
    predicted = np.asarray(predicted, np.float32)
    ground_truth = np.asarray(ground_truth, np.float32)
    overlaps = localization.iou(predicted, ground_truth).numpy()
    counts, _ = np.histogram(overlaps, bins=IOU_BIN_EDGES)
    return {
        "num_examples": int(len(overlaps)),
        "iou_threshold": threshold,
        "recall": _mean(overlaps >= threshold),
        "mean_iou": _mean(overlaps),
        "iou_histogram": {
            "bin_edges": [float(edge) for edge in IOU_BIN_EDGES],
            "counts": [int(count) for count in counts],
        },
        **box_shape_metrics(predicted, ground_truth),
    }


def box_shape_metrics(predicted: np.ndarray, ground_truth: np.ndarray) -> dict:
    """Say how predicted boxes miss: placement, size and coverage of the true boxes.

    "centre_inside" is the fraction of predicted boxes that contain the true box's
    centre, "true_box_inside" the fraction that contain the whole true box, and
    "median_area_ratio" the median of predicted area / true area. A box with a low
    IoU but its centre inside is well placed and wrongly sized.
    """
    ymin, xmin, ymax, xmax = np.moveaxis(predicted, -1, 0)
    true_ymin, true_xmin, true_ymax, true_xmax = np.moveaxis(ground_truth, -1, 0)
    centre_y = (true_ymin + true_ymax) / 2
    centre_x = (true_xmin + true_xmax) / 2
    centre_inside = (ymin <= centre_y) & (centre_y <= ymax) & (xmin <= centre_x) & (centre_x <= xmax)
    true_box_inside = (ymin <= true_ymin) & (true_ymax <= ymax) & (xmin <= true_xmin) & (true_xmax <= xmax)

    area = (ymax - ymin) * (xmax - xmin)
    true_area = (true_ymax - true_ymin) * (true_xmax - true_xmin)
    ratios = area[true_area > 0] / true_area[true_area > 0]
    return {
        "centre_inside": _mean(centre_inside),
        "true_box_inside": _mean(true_box_inside),
        "median_area_ratio": float(np.median(ratios)) if len(ratios) else float("nan"),
    }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
