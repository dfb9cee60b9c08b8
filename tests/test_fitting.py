"""Tests of lnet_anet_tf/stages/fitting.py's validation cache."""

import numpy as np
import pytest
import tensorflow as tf

from lnet_anet_tf.stages import fitting


def _file_dataset(paths):
    """Batches of each file's bytes as uint8, read from disk on every pass."""
    dataset = tf.data.Dataset.from_tensor_slices(paths)
    dataset = dataset.map(
        lambda path: tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), [8])
    )
    return dataset.batch(2)


def _write_files(folder, fill):
    paths = []
    for index in range(4):
        path = folder / f"{index}.bin"
        path.write_bytes(bytes([fill + index]) * 8)
        paths.append(str(path))
    return paths


def _values(dataset):
    return np.concatenate([batch.numpy() for batch in dataset])


def test_small_dataset_read_once(tmp_path):
    paths = _write_files(tmp_path, fill=10)
    dataset = fitting.cache_if_small(_file_dataset(paths), batch_size=2)

    first = _values(dataset)
    _write_files(tmp_path, fill=50)

    np.testing.assert_array_equal(_values(dataset), first)
    assert first[0, 0] == 10


def test_large_dataset_read_every_pass(tmp_path, monkeypatch):
    # 4 examples of 8 bytes need 32 bytes.
    monkeypatch.setattr(fitting, "VALIDATION_CACHE_BYTES", 31)
    paths = _write_files(tmp_path, fill=10)
    dataset = fitting.cache_if_small(_file_dataset(paths), batch_size=2)

    _values(dataset)
    _write_files(tmp_path, fill=50)

    assert _values(dataset)[0, 0] == 50


@pytest.mark.parametrize("budget, cached", [(32, True), (31, False)])
def test_budget_counts_every_component(tmp_path, monkeypatch, budget, cached):
    # Each example is 6 bytes of uint8 and 2 bytes of int16: 4 examples need 32 bytes.
    monkeypatch.setattr(fitting, "VALIDATION_CACHE_BYTES", budget)
    paths = _write_files(tmp_path, fill=10)
    pairs = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: (
            tf.reshape(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), [8])[:6],
            tf.zeros([1], tf.int16),
        )
    ).batch(2)
    dataset = fitting.cache_if_small(pairs, batch_size=2)

    first = _values(dataset.map(lambda images, _: images))
    _write_files(tmp_path, fill=50)

    second = _values(dataset.map(lambda images, _: images))
    assert (second[0, 0] == first[0, 0]) == cached


def test_unknown_length_not_cached(tmp_path):
    paths = _write_files(tmp_path, fill=10)
    dataset = _file_dataset(paths).filter(lambda batch: True)
    assert int(dataset.cardinality()) < 0

    assert fitting.cache_if_small(dataset, batch_size=2) is dataset


def test_unknown_shape_not_cached(tmp_path):
    paths = _write_files(tmp_path, fill=10)
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: tf.io.decode_raw(tf.io.read_file(path), tf.uint8)
    ).batch(2)

    assert fitting.cache_if_small(dataset, batch_size=2) is dataset
