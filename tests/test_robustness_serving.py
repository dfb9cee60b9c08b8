"""The exported model and the predictor under load, with valid and invalid images mixed.

Serving: the SavedModel of a random-weight model directory, loaded with
`tf.saved_model.load`, is called through `serving_default` from 8 threads at once.
Every response must equal the serial response to the same request, and every valid
item must be marked valid.

Predictor: `python -m lnet_anet_tf.predict FOLDER --model=...` must write one JSON
line per valid file and one error line per invalid file and exit with code 1, on
the unusual encodings, damaged files and decompression bombs of the image tests
and on folders of small images with 5% invalid files. Its peak memory must stay
nearly flat when the folder grows from 100 to 1,000 files.
"""

import concurrent.futures
import os

import numpy as np
import pytest
import tensorflow as tf

import robustness_predictor_rss as predictor_runs
import test_robustness_images as image_cases

NUM_THREADS = 8
OUTPUT_KEYS = ("attribute_probabilities", "face_box", "localization_score", "valid")


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    return predictor_runs.export_random_model(str(tmp_path_factory.mktemp("export")))


@pytest.fixture(scope="module")
def serving_default(version_dir):
    return tf.saved_model.load(version_dir).signatures["serving_default"]


def _requests(count: int, seed: int = 1) -> tuple[list, set]:
    """Return `count` batches of 1 to 3 items, and the set of valid items.

    About a third of the items are invalid.
    """
    valid = predictor_runs.photos(6, 48)
    invalid = predictor_runs.invalid_images(valid[0])
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        batch = []
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 1 / 3:
                batch.append(invalid[int(rng.integers(len(invalid)))])
            else:
                batch.append(valid[int(rng.integers(len(valid)))])
        requests.append(batch)
    return requests, set(valid)


def _call(serving_default, batch) -> dict:
    outputs = serving_default(image_bytes=tf.constant(batch))
    return {key: outputs[key].numpy() for key in OUTPUT_KEYS}


def _serve_concurrently(serving_default, requests_per_thread: int) -> None:
    requests, valid = _requests(NUM_THREADS * requests_per_thread)
    # One serial response per distinct batch is the reference.
    serial = {}
    for batch in requests:
        if tuple(batch) not in serial:
            serial[tuple(batch)] = _call(serving_default, batch)

    def serve(thread_index):
        return [(batch, _call(serving_default, batch)) for batch in requests[thread_index::NUM_THREADS]]

    with concurrent.futures.ThreadPoolExecutor(NUM_THREADS) as pool:
        responses = [response for chunk in pool.map(serve, range(NUM_THREADS)) for response in chunk]

    assert len(responses) == len(requests)
    for batch, outputs in responses:
        assert outputs["valid"].tolist() == [item in valid for item in batch]
        expected = serial[tuple(batch)]
        for key in OUTPUT_KEYS:
            np.testing.assert_array_equal(outputs[key], expected[key], err_msg=key)
        assert not outputs["attribute_probabilities"][~outputs["valid"]].any()
        assert np.isfinite(outputs["attribute_probabilities"]).all()


def test_concurrent_requests_match_serial(serving_default):
    _serve_concurrently(serving_default, requests_per_thread=4)


@pytest.mark.slow
def test_concurrent_requests_match_serial_long(serving_default):
    _serve_concurrently(serving_default, requests_per_thread=100)


# ---------------------------------------------------------------------------
# The predictor.


def _check_predictor_run(result, valid, invalid, image_side=predictor_runs.SIDE) -> None:
    assert result["returncode"] == 1
    assert [record["path"] for record in result["records"]] == valid
    for record in result["records"]:
        assert record["image_size"] == {"height": image_side, "width": image_side}
        assert len(record["attributes"]) == 40
    file_errors = result["errors"][:-1]
    assert len(file_errors) == len(invalid)
    for path, line in zip(invalid, file_errors):
        assert line.startswith(f"error: {path}: ")
    assert result["errors"][-1] == f"error: {len(invalid)} file(s) could not be processed."


def test_predictor_on_unusual_and_invalid_images(version_dir, tmp_path):
    folder = tmp_path / "photos"
    os.makedirs(folder)
    valid = [image_cases.write_file(folder, name, contents) for name, contents, _, _ in image_cases.VALID_CASES]
    rotated, _ = image_cases.exif_rotated_jpeg()
    rotated_path = image_cases.write_file(folder, "rotated.jpg", rotated)
    bad_cases = [(name, contents, reason) for name, contents, reason in image_cases.INVALID_CASES]
    bad_cases += [(name, contents, f"the image is {size}") for name, contents, size in image_cases.BOMB_CASES]
    invalid = {image_cases.write_file(folder, name, contents): reason for name, contents, reason in bad_cases}

    result = predictor_runs.run_predictor([folder], version_dir, str(tmp_path / "run"))

    assert result["returncode"] == 1
    records = {record["path"]: record for record in result["records"]}
    assert set(records) == set(valid) | {rotated_path}
    for path in valid:
        assert records[path]["image_size"] == {"height": image_cases.SIDE, "width": image_cases.SIDE}
    # EXIF orientation is not applied: the size is that of the stored pixels.
    assert records[rotated_path]["image_size"] == {"height": image_cases.SIDE, "width": image_cases.SIDE // 2}
    for path, reason in invalid.items():
        [line] = [line for line in result["errors"] if line.startswith(f"error: {path}: ")]
        assert reason in line
    assert result["errors"][-1] == f"error: {len(invalid)} file(s) could not be processed."


def test_predictor_max_pixels_flag(version_dir, tmp_path):
    name, contents, _, _ = image_cases.VALID_CASES[0]
    path = image_cases.write_file(tmp_path, name, contents)
    limit = image_cases.SIDE * image_cases.SIDE - 1

    result = predictor_runs.run_predictor([path], version_dir, str(tmp_path / "run"), f"--max_pixels={limit}")

    assert result["returncode"] == 1
    assert result["records"] == []
    assert f"more than max_pixels={limit}" in result["errors"][0]
    assert "Pass a larger --max_pixels if the file is trusted." in result["errors"][0]


# Peak RSS may grow by this much from 100 to 1,000 files. Per-file state that is never
# freed would add at least a few kilobytes per file, so 900 more files would show it.
# The allowance covers allocator noise around the predictor's footprint of several
# hundred megabytes.
_PREDICTOR_RSS_GROWTH_BOUND = 64 * 2**20


@pytest.mark.slow
def test_predictor_memory_flat_over_1000_files(version_dir, tmp_path):
    small_valid, small_invalid = predictor_runs.write_folder(str(tmp_path / "small"), 100)
    large_valid, large_invalid = predictor_runs.write_folder(str(tmp_path / "large"), 1000)

    small = predictor_runs.run_predictor([tmp_path / "small"], version_dir, str(tmp_path / "small_run"))
    large = predictor_runs.run_predictor([tmp_path / "large"], version_dir, str(tmp_path / "large_run"))

    _check_predictor_run(small, small_valid, small_invalid)
    _check_predictor_run(large, large_valid, large_invalid)
    assert len(large["records"]) == 950
    growth = large["peak_rss_bytes"] - small["peak_rss_bytes"]
    assert growth < _PREDICTOR_RSS_GROWTH_BOUND, (small["peak_rss_bytes"], large["peak_rss_bytes"])
