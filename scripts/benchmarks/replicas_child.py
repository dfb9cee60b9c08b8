"""Child process: the train step on one CPU replica against two logical CPU replicas.

    python -m benchmarks.replicas_child '{"preset": "demo", "quick": false, ...}'

The CPU is split into two logical devices before TensorFlow initialises its
devices, which is why this runs in its own process. Both strategies then run in
this process on the same cached global batch: `OneDeviceStrategy` on the first
logical CPU and `MirroredStrategy` on both, each replica taking half the batch.
Both logical devices share the same physical cores and thread pools. Prints one
JSON line.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(spec: dict) -> dict:
    from lnet_anet_tf.training import strategy as strategy_lib

    # Before anything else runs a TensorFlow op.
    strategy_lib.configure_logical_cpus(2)

    import keras
    import tensorflow as tf

    from benchmarks import common
    from benchmarks import data as data_lib
    from benchmarks import training

    config = common.benchmark_config(spec["preset"], spec["quick"])
    data = data_lib.prepare(spec["cache_dir"], config.synthetic, spec["quick"])
    sizes = training.Sizes(**spec["sizes"])
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    strategies = {
        1: tf.distribute.OneDeviceStrategy(devices[0]),
        2: tf.distribute.MirroredStrategy(devices[:2]),
    }

    results = []
    for stage in spec["stages"]:
        batch_size = config.stages[stage].batch_size
        batch = training.first_batch(
            training.stage_setup(stage, config, data, batch_size).dataset_fn()
        )
        rates = {}
        for replicas, strategy in strategies.items():
            with strategy.scope():
                setup = training.stage_setup(stage, config, data, batch_size)
            step = training.build_step(setup, strategy=strategy)
            iterator = training.cached_iterator(batch, strategy)
            rates[replicas] = training.time_steps(step, iterator, batch_size, sizes)
            keras.backend.clear_session()
        results.append(
            {
                "stage": stage,
                "batch_size": batch_size,
                "one_replica": rates[1],
                "two_replicas": rates[2],
                "two_to_one": rates[2]["median"] / rates[1]["median"],
            }
        )
    return {"stages": results, "peak_rss_mib": common.peak_rss_mib()}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
