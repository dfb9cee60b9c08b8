"""Inference: the exported SavedModel and every TFLite variant, per image, with file sizes.

The nets have random weights (`tests/export_fixtures.write_model_dir` with the
benchmark's config): latency and size depend on the architecture, not on the
weight values, so no training run is needed. The export is the command a user
runs, `python -m lnet_anet_tf.export`, with fewer calibration and
quantization-aware training images than its defaults, which changes only the
int8 ranges and the QAT weights, not the graph.

Models run in child processes (`benchmarks.inference_child`): the TFLite models
together, interleaved, for latency, and then each alone for its peak resident
memory.
"""

from __future__ import annotations

import os
import sys
import time

from absl import logging

from benchmarks import common

TFLITE_THREADS = (1, 2)
SAVED_MODEL_BATCH_SIZES = (1, 32)
# Canvas side of the SavedModel's inputs: the TFLite cascade's default canvas, so
# both run the nets on images of the same size.
IMAGE_SIDE = 256
# Targets for the int8 cascade against float32, on one thread.
INT8_MIN_SPEEDUP = 2.0
INT8_MAX_SIZE_FRACTION = 0.30


def write_random_model_dir(model_dir: str, config) -> str:
    tests_dir = os.path.join(common.REPO_ROOT, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import export_fixtures

    return export_fixtures.write_model_dir(model_dir, config)


def export(model_dir: str, export_dir: str, celeba_dir: str, sizes: dict) -> float:
    """Run the export command; return its wall-clock seconds."""
    start = time.perf_counter()
    common.run_script(
        [
            "-m", "lnet_anet_tf.export",
            f"--model_dir={model_dir}",
            f"--export_dir={export_dir}",
            f"--data_dir={celeba_dir}",
            f"--calibration_images={sizes['calibration_images']}",
            f"--qat_images={sizes['qat_images']}",
            f"--qat_epochs={sizes['qat_epochs']}",
        ]
        + ([f"--variants={','.join(sizes['variants'])}"] if sizes.get("variants") else [])
    )
    return time.perf_counter() - start


def directory_bytes(path: str) -> int:
    total = 0
    for folder, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(folder, name)) for name in names)
    return total


def measure_tflite_files(tflite_dir: str, runs: int, warmup: int) -> list[dict]:
    """Time every .tflite file, all models interleaved per thread count; memory one by one."""
    paths = sorted(
        os.path.join(tflite_dir, name) for name in os.listdir(tflite_dir) if name.endswith(".tflite")
    )
    latencies = {}
    for threads in TFLITE_THREADS:
        logging.info("Timing %d TFLite models on %d thread(s).", len(paths), threads)
        spec = {"kind": "tflite_set", "paths": paths, "threads": threads, "runs": runs,
                "warmup": warmup}
        latencies[threads] = common.run_child("inference_child", spec)

    rows = []
    for path in paths:
        model, _, variant = os.path.basename(path)[: -len(".tflite")].partition("_")
        spec = {"kind": "tflite", "path": path, "threads": 1, "runs": 3, "warmup": 1}
        memory = common.run_child("inference_child", spec)
        rows.append({
            "model": model,
            "variant": variant,
            "bytes": os.path.getsize(path),
            "threads": {str(threads): latencies[threads][path] for threads in TFLITE_THREADS},
            "peak_rss_mib": memory["peak_rss_mib"],
            "baseline_rss_mib": memory["baseline_rss_mib"],
        })
    return rows


def int8_targets(tflite_rows: list[dict]) -> dict:
    """Compare the int8 cascade with the float32 cascade on one thread."""
    by_variant = {row["variant"]: row for row in tflite_rows if row["model"] == "cascade"}
    if "int8" not in by_variant or "float32" not in by_variant:
        return {}
    int8, float32 = by_variant["int8"], by_variant["float32"]
    speedup = float32["threads"]["1"]["median_ms"] / int8["threads"]["1"]["median_ms"]
    size_fraction = int8["bytes"] / float32["bytes"]
    return {
        "speedup": speedup,
        "speedup_target": INT8_MIN_SPEEDUP,
        "speedup_met": speedup >= INT8_MIN_SPEEDUP,
        "size_fraction": size_fraction,
        "size_target": INT8_MAX_SIZE_FRACTION,
        "size_met": size_fraction <= INT8_MAX_SIZE_FRACTION,
    }


def run(config, data, work_dir: str, sizes: dict) -> dict:
    model_dir = write_random_model_dir(os.path.join(work_dir, "model"), config)
    export_dir = os.path.join(work_dir, "export")
    logging.info("Exporting %s into %s.", model_dir, export_dir)
    export_seconds = export(model_dir, export_dir, data.celeba_dir, sizes)

    base = os.path.join(export_dir, "saved_model", "lnet_anet")
    version_dir = os.path.join(base, sorted(os.listdir(base), key=int)[-1])
    saved_model = common.run_child(
        "inference_child",
        {"kind": "saved_model", "path": version_dir, "batch_sizes": list(SAVED_MODEL_BATCH_SIZES),
         "side": IMAGE_SIDE, "runs": sizes["runs"], "warmup": sizes["warmup"]},
    )
    saved_model["bytes"] = directory_bytes(version_dir)

    tflite = measure_tflite_files(os.path.join(export_dir, "tflite"), sizes["runs"], sizes["warmup"])
    return {
        "preset": config.preset,
        "export_seconds": export_seconds,
        "export_sizes": sizes,
        "image_side": IMAGE_SIDE,
        "saved_model": saved_model,
        "tflite": tflite,
        "targets": int8_targets(tflite),
    }


def render(results: dict) -> str:
    from benchmarks.markdown import table

    saved = results["saved_model"]
    saved_rows = [
        [f"batch {size}", timing["median_ms"], timing["min_ms"]]
        for size, timing in saved["batches"].items()
    ]
    float32_bytes = {row["model"]: row["bytes"] for row in results["tflite"] if row["variant"] == "float32"}
    tflite_rows = []
    for row in results["tflite"]:
        one, two = row["threads"]["1"], row["threads"]["2"]
        tflite_rows.append([
            row["model"],
            row["variant"],
            row["bytes"] / 2**20,
            f"{100 * row['bytes'] / float32_bytes[row['model']]:.0f}%" if row["model"] in float32_bytes else "",
            one["median_ms"],
            one["min_ms"],
            two["median_ms"],
            row["peak_rss_mib"],
            row["peak_rss_mib"] - row["baseline_rss_mib"],
        ])
    sizes = results["export_sizes"]
    text = [
        f"The {results['preset']} preset's cascade with random weights (latency and size do "
        "not depend on the weight values), exported by `python -m lnet_anet_tf.export` in "
        f"{results['export_seconds']:.0f} s with {sizes['calibration_images']} calibration "
        f"images and quantization-aware training on {sizes['qat_images']} faces for "
        f"{sizes['qat_epochs']} epoch(s). Milliseconds per image are medians of "
        f"{sizes['runs']} calls after {sizes['warmup']} untimed ones, on random pixels.",
        "",
        f"SavedModel (`predict_images` signature, {results['image_side']} x "
        f"{results['image_side']} images, TensorFlow's default threads), "
        f"{saved['bytes'] / 2**20:.1f} MiB on disk, peak RSS {saved['peak_rss_mib']:.0f} MiB:",
        "",
        table(["input", "ms per image (median)", "ms per image (min)"], saved_rows),
        "",
        "TFLite, LiteRT interpreter (`ai_edge_litert.interpreter.Interpreter`). `cascade` "
        f"takes a {results['image_side']} x {results['image_side']} canvas; `anet` takes a "
        "face crop and runs ANet on its five patches with the SVMs. For each thread count, "
        "all models run in one child process, interleaved (each round calls every model "
        "once), so load from other processes slows them alike. Memory comes from one "
        "more child per model, on one thread: its peak RSS (high-water mark) and what "
        "the model added after the interpreter module was imported.",
        "",
        table(["model", "variant", "MiB", "of float32", "ms, 1 thread", "min ms, 1 thread",
               "ms, 2 threads", "peak RSS MiB", "added MiB"], tflite_rows),
    ]
    targets = results["targets"]
    if targets:
        text += [
            "",
            f"Targets for the int8 cascade against float32 on one thread: speed-up "
            f"{targets['speedup']:.2f}x (target >= {targets['speedup_target']:g}x, "
            f"{'met' if targets['speedup_met'] else 'missed'}); size "
            f"{100 * targets['size_fraction']:.0f}% of float32 (target <= "
            f"{100 * targets['size_target']:.0f}%, {'met' if targets['size_met'] else 'missed'}).",
        ]
    return "\n".join(text)
