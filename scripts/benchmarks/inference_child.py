"""Child process: latency and peak memory of one exported model.

    python -m benchmarks.inference_child '{"kind": "tflite", "path": "...", "threads": 1, ...}'

Kinds:

- "tflite": a .tflite file run by the LiteRT interpreter
  (`ai_edge_litert.interpreter.Interpreter`) with `threads` threads, on random
  float32 inputs of the model's input shape with values in `input_range`
  (default [0, 255], the exported models' pixel range). TensorFlow
  is not imported, so the peak memory is the interpreter's and the model's.
- "tflite_set": the latency of several .tflite files (`paths`) in one process,
  interleaved: each of `runs` rounds calls every model once. Load from other
  processes then slows all models alike, which keeps their ratios fair. No
  memory figures, since the models share the process.
- "saved_model": the `predict_images` signature of a SavedModel, loaded with
  `tf.saved_model.load`, on random images of `side` x `side` pixels at each of
  `batch_sizes`. TensorFlow uses its default thread pools (all cores).

Each measurement calls the model `warmup` times untimed, then `runs` times, and
reports the median milliseconds per image. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median_ms(call, runs: int, warmup: int, images_per_call: int) -> dict:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    per_image = [value * 1000 / images_per_call for value in seconds]
    return {"median_ms": statistics.median(per_image), "min_ms": min(per_image),
            "max_ms": max(per_image), "runs": runs}


def _load_interpreter(path: str, threads: int, input_range) -> tuple:
    """Return (interpreter with random inputs set, images per call)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    low, high = input_range
    for detail in interpreter.get_input_details():
        values = rng.uniform(low, high, detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], values)
    return interpreter, int(interpreter.get_input_details()[0]["shape"][0])


def measure_tflite(spec: dict) -> dict:
    from benchmarks import common

    import ai_edge_litert.interpreter  # noqa: F401  (imported before the baseline is read)

    baseline_mib = common.peak_rss_mib()
    interpreter, images = _load_interpreter(
        spec["path"], spec["threads"], spec.get("input_range", (0.0, 255.0))
    )
    latency = _median_ms(interpreter.invoke, spec["runs"], spec["warmup"], images)
    latency.update(baseline_rss_mib=baseline_mib, peak_rss_mib=common.peak_rss_mib())
    return latency


def measure_tflite_set(spec: dict) -> dict:
    input_range = spec.get("input_range", (0.0, 255.0))
    models = {
        path: _load_interpreter(path, spec["threads"], input_range) for path in spec["paths"]
    }
    for interpreter, _ in models.values():
        for _ in range(spec["warmup"]):
            interpreter.invoke()

    milliseconds = {path: [] for path in models}
    for _ in range(spec["runs"]):
        for path, (interpreter, images) in models.items():
            start = time.perf_counter()
            interpreter.invoke()
            milliseconds[path].append((time.perf_counter() - start) * 1000 / images)
    return {
        path: {"median_ms": statistics.median(values), "min_ms": min(values),
               "max_ms": max(values), "runs": len(values)}
        for path, values in milliseconds.items()
    }


def measure_saved_model(spec: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    from benchmarks import common

    baseline_mib = common.peak_rss_mib()
    loaded = tf.saved_model.load(spec["path"])
    predict = loaded.signatures["predict_images"]
    rng = np.random.default_rng(0)
    result = {"batches": {}}
    for batch_size in spec["batch_sizes"]:
        images = tf.constant(
            rng.uniform(0.0, 255.0, (batch_size, spec["side"], spec["side"], 3)).astype(np.float32)
        )

        def call():
            outputs = predict(images=images)
            outputs["attribute_probabilities"].numpy()

        result["batches"][str(batch_size)] = _median_ms(call, spec["runs"], spec["warmup"], batch_size)
    result.update(baseline_rss_mib=baseline_mib, peak_rss_mib=common.peak_rss_mib())
    return result


def main(spec: dict) -> dict:
    if spec["kind"] == "tflite":
        return measure_tflite(spec)
    if spec["kind"] == "tflite_set":
        return measure_tflite_set(spec)
    if spec["kind"] == "saved_model":
        return measure_saved_model(spec)
    raise ValueError(
        f"Unknown kind {spec['kind']!r}; expected 'tflite', 'tflite_set' or 'saved_model'."
    )


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
