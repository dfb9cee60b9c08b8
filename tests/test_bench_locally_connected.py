"""Tests of scripts/bench_locally_connected.py: the step it times runs the forward pass.

No test asserts a time: the numbers depend on the machine and its load.
"""

import os
import sys

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import bench_locally_connected  # noqa: E402

CASE = {
    "preset": "tiny",
    "layer": "conv3",
    "input_shape": [2, 6, 6, 3],
    "output_shape": [4, 4, 5],
    "filters": 5,
    "kernel_size": [3, 3],
    "strides": [1, 1],
    "padding": "valid",
    "share_size": [2, 2],
}


@pytest.mark.parametrize("implementation", ["ours", "ours_unshared", "tf_keras_1", "matmul_only"])
def test_step_returns_the_forward_loss(implementation):
    # The loss is linear in the input and the biases start at zero, so it equals
    # the sum of input * input gradient. A step pruned to its backward pass has
    # no loss to return.
    step, inputs = bench_locally_connected.build_step(CASE, implementation)

    loss, gradients = step(inputs)

    expected = float(np.sum(gradients[0].numpy() * inputs.numpy()))
    assert float(loss) != 0.0
    assert float(loss) == pytest.approx(expected, rel=1e-4)
