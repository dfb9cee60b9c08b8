"""Tests of the per-attribute linear SVMs and Platt scaling."""

import numpy as np
import pytest
from scipy import optimize

from lnet_anet_tf.config import SVMConfig
from lnet_anet_tf.training import svm


def _separable(num_examples, num_features, num_attributes, seed):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(num_features, num_attributes))
    offsets = rng.normal(size=num_attributes)
    features = rng.normal(loc=3.0, scale=2.0, size=(num_examples * 2, num_features))
    scores = (features - 3.0) / 2.0 @ directions + offsets
    # Keep only points with a clear margin for every attribute.
    keep = np.all(np.abs(scores) > 0.3, axis=1)
    features, scores = features[keep][:num_examples], scores[keep][:num_examples]
    return features.astype(np.float32), (scores > 0).astype(np.float32)


@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
def test_separable_features_high_accuracy(tmp_path, loss):
    features, labels = _separable(600, 8, 3, seed=0)
    train_x, train_y = features[:400], labels[:400]
    test_x, test_y = features[400:], labels[400:]
    config = SVMConfig(l2=1e-4, epochs=20, batch_size=50, learning_rate=0.05)

    model, result = svm.train_svm(train_x, train_y, config, model_dir=str(tmp_path), loss=loss)

    assert model.weights.shape == (8, 3)
    assert model.bias.shape == (3,)
    train_accuracy = np.mean((model.decision_function(train_x) > 0) == train_y)
    test_accuracy = np.mean((model.decision_function(test_x) > 0) == test_y)
    assert train_accuracy >= 0.97
    assert test_accuracy >= 0.95
    assert result.metrics["accuracy"] >= 0.95
    assert result.steps == 20 * 8


def _svm_objective(features, labels, l2, weights, bias):
    """The squared-hinge primal in standardised space, for weights in raw feature space."""
    mean, std = features.mean(axis=0), features.std(axis=0)
    x = (features - mean) / std
    y = 2.0 * labels - 1.0
    w = weights * std[:, None]
    b = bias + mean @ weights
    margins = np.maximum(0.0, 1.0 - y * (x @ w + b))
    return 0.5 * l2 * np.sum(w**2) + np.mean(np.sum(margins**2, axis=1))


def _reference_svm(features, labels, l2):
    """Minimise the squared-hinge primal with SciPy; return raw-space weights and bias."""
    mean, std = features.mean(axis=0), features.std(axis=0)
    x = (features - mean) / std
    y = 2.0 * labels - 1.0
    num_features, num_attributes = x.shape[1], y.shape[1]

    def objective(params):
        w = params[: num_features * num_attributes].reshape(num_features, num_attributes)
        b = params[num_features * num_attributes:]
        margins = np.maximum(0.0, 1.0 - y * (x @ w + b))
        value = 0.5 * l2 * np.sum(w**2) + np.mean(np.sum(margins**2, axis=1))
        grad_scores = -2.0 * y * margins / len(x)
        grad_w = l2 * w + x.T @ grad_scores
        grad_b = grad_scores.sum(axis=0)
        return value, np.concatenate([grad_w.ravel(), grad_b])

    start = np.zeros(num_features * num_attributes + num_attributes)
    solution = optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15}
    )
    w = solution.x[: num_features * num_attributes].reshape(num_features, num_attributes)
    b = solution.x[num_features * num_attributes:]
    # Fold the standardisation the same way the trainer does.
    return w / std[:, None], b - (mean / std) @ w


def test_matches_reference_solver(tmp_path):
    rng = np.random.default_rng(3)
    features = rng.normal(loc=[1.0, -2.0, 0.5], scale=[1.0, 3.0, 0.2], size=(40, 3))
    # Noisy labels: the problem is not separable, so the hinge terms matter.
    labels = (features @ [1.0, 0.3, -2.0] + rng.normal(scale=1.5, size=40) > 0)
    labels = np.stack([labels, ~labels], axis=1).astype(np.float64)
    config = SVMConfig(l2=0.1, epochs=60, batch_size=10, learning_rate=0.05)

    model, _ = svm.train_svm(features, labels, config, model_dir=str(tmp_path), progress=False)

    weights, bias = _reference_svm(features, labels, 0.1)
    np.testing.assert_allclose(model.weights, weights, atol=5e-3)
    np.testing.assert_allclose(model.bias, bias, atol=5e-3)
    optimum = _svm_objective(features, labels, 0.1, weights, bias)
    reached = _svm_objective(features, labels, 0.1, model.weights.astype(np.float64), model.bias)
    assert optimum <= reached <= optimum * (1 + 1e-4)


def test_constant_feature_stays_finite(tmp_path):
    features, labels = _separable(200, 4, 2, seed=1)
    features[:, 2] = 7.0
    config = SVMConfig(l2=1e-3, epochs=3, batch_size=50, learning_rate=0.05)

    model, _ = svm.train_svm(features, labels, config, model_dir=str(tmp_path))

    assert np.all(np.isfinite(model.weights))
    assert np.all(np.isfinite(model.bias))
    assert model.weights[2].tolist() == [0.0, 0.0]


def test_finished_svm_stage_skipped(tmp_path):
    features, labels = _separable(200, 4, 2, seed=2)
    config = SVMConfig(l2=1e-3, epochs=2, batch_size=50, learning_rate=0.05)

    first, first_result = svm.train_svm(features, labels, config, model_dir=str(tmp_path))
    second, second_result = svm.train_svm(features, labels, config, model_dir=str(tmp_path))

    assert not first_result.skipped
    assert second_result.skipped
    np.testing.assert_array_equal(first.weights, second.weights)
    np.testing.assert_array_equal(first.bias, second.bias)


def test_invalid_labels_rejected(tmp_path):
    features = np.zeros((4, 2), np.float32)
    labels = np.array([[0], [1], [-1], [1]])

    with pytest.raises(ValueError, match=r"found -1 at row 2, column 0"):
        svm.train_svm(features, labels, SVMConfig(), model_dir=str(tmp_path))


def test_nonfinite_features_rejected(tmp_path):
    features = np.zeros((4, 2), np.float32)
    features[1, 1] = np.nan

    with pytest.raises(ValueError, match=r"nan at row 1, column 1"):
        svm.train_svm(features, np.zeros((4, 1)), SVMConfig(), model_dir=str(tmp_path))


def test_invalid_loss_rejected(tmp_path):
    with pytest.raises(ValueError, match="Invalid SVM loss 'logistic'"):
        svm.train_svm(
            np.zeros((4, 2)), np.zeros((4, 1)), SVMConfig(), model_dir=str(tmp_path), loss="logistic"
        )


def test_platt_recovers_true_calibration():
    rng = np.random.default_rng(0)
    true_scale = np.array([1.5, 0.7])
    true_offset = np.array([-0.5, 1.0])
    scores = rng.normal(scale=2.0, size=(20000, 2))
    probabilities = 1 / (1 + np.exp(-(scores * true_scale + true_offset)))
    labels = (rng.uniform(size=scores.shape) < probabilities).astype(np.float32)

    scale, offset = svm.fit_platt(scores, labels)

    np.testing.assert_allclose(scale, true_scale, atol=0.08)
    np.testing.assert_allclose(offset, true_offset, atol=0.08)
    predicted = svm.platt_probabilities(scores, scale, offset)
    for column in range(2):
        bins = np.digitize(predicted[:, column], np.linspace(0.1, 0.9, 9))
        for index in np.unique(bins):
            members = bins == index
            if members.sum() < 500:
                continue
            observed = labels[members, column].mean()
            assert abs(predicted[members, column].mean() - observed) < 0.03


def test_platt_matches_logistic_regression_optimum():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(300, 1))
    labels = (rng.uniform(size=(300, 1)) < 1 / (1 + np.exp(-2 * scores))).astype(np.float32)
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    targets = np.where(labels[:, 0] == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def objective(params):
        logits = params[0] * scores[:, 0] + params[1]
        return np.sum(targets * np.logaddexp(0, -logits) + (1 - targets) * np.logaddexp(0, logits))

    reference = optimize.minimize(objective, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}).x
    scale, offset = svm.fit_platt(scores, labels)

    np.testing.assert_allclose([scale[0], offset[0]], reference, atol=1e-4)


def test_platt_single_class_stays_finite():
    scores = np.linspace(-1, 1, 50)[:, None]
    labels = np.ones((50, 1))

    scale, offset = svm.fit_platt(scores, labels)

    probabilities = svm.platt_probabilities(scores, scale, offset)
    assert np.all(np.isfinite(probabilities))
    assert np.all(probabilities > 0.5)
