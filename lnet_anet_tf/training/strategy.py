"""Distribution strategies, precision policy and determinism for training.

Call these before building any model. `make_strategy("multi_worker")` and
`configure_logical_cpus` must run before TensorFlow executes its first op, because
both change how TensorFlow initialises its devices.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

STRATEGY_NAMES = ("auto", "mirrored", "multi_worker", "one_device")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Create the `tf.distribute.Strategy` named `name`.

    - `auto`: `MultiWorkerMirroredStrategy` when `TF_CONFIG` lists several workers,
      else `MirroredStrategy` when there are several GPUs (or several logical CPU
      devices and no GPU), else the default strategy (one device).
    - `mirrored`: `MirroredStrategy` over all local GPUs, or over all logical CPU
      devices when there is no GPU.
    - `multi_worker`: `MultiWorkerMirroredStrategy`; `TF_CONFIG` must describe the
      cluster and this process's task.
    - `one_device`: `OneDeviceStrategy` on the first GPU, or on the CPU.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(
            f"Invalid distribution strategy {name!r}; expected one of "
            f"{', '.join(STRATEGY_NAMES)}."
        )

    tf_config = read_tf_config() if name in ("auto", "multi_worker") else None
    if name == "multi_worker" or _num_workers(tf_config) > 1:
        if tf_config is None:
            raise ValueError(
                "Strategy 'multi_worker' needs the TF_CONFIG environment variable, "
                'for example {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()

    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy((gpus or cpus)[0].name)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy([device.name for device in gpus or cpus])

    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    return tf.distribute.get_strategy()


def read_tf_config() -> dict | None:
    """Parse and check the `TF_CONFIG` environment variable; None when it is unset."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None

    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}): {text!r}. Set it to an object "
            'such as {"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:23456"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        ) from None

    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(
            f"TF_CONFIG has no 'cluster' object mapping task types to address lists: "
            f"{text!r}."
        )
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(address, str) and ":" in address for address in addresses
        ):
            raise ValueError(
                f"TF_CONFIG cluster entry {task_type!r} must be a list of 'host:port' "
                f"strings, got {addresses!r}."
            )

    task = tf_config.get("task")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"TF_CONFIG 'task' must name one of the cluster's task types "
            f"{sorted(cluster)} as 'type', got {task!r}."
        )
    index = task.get("index")
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ValueError(
            f"TF_CONFIG task index {index!r} is out of range for the "
            f"{len(cluster[task['type']])} {task['type']!r} address(es)."
        )
    return tf_config


def _num_workers(tf_config: dict | None) -> int:
    if tf_config is None:
        return 0
    cluster = tf_config["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Return whether this process writes the shared outputs (logs, exports, markers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of worker processes (each with its own input pipeline) in `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    return _num_workers({"cluster": resolver.cluster_spec().as_dict()})


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """This process's task as `type-index`, for example `worker-1`; `local` alone."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}-{resolver.task_id}"


def configure_precision(mixed_precision: bool) -> str:
    """Set the global Keras dtype policy and return its name.

    `mixed_float16` computes in float16 with float32 variables; the training loop
    then wraps the optimizer in `keras.optimizers.LossScaleOptimizer` so that small
    float16 gradients do not underflow.
    """
    policy = "mixed_float16" if mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def enable_determinism(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras, and make TensorFlow ops deterministic.

    With both, two runs of the same program on the same machine and devices give
    bitwise equal results. Ops without a deterministic kernel then raise an error
    instead of running.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def configure_logical_cpus(count: int) -> None:
    """Split the first physical CPU into `count` logical devices.

    `MirroredStrategy` then runs `count` replicas on one CPU, which lets tests cover
    multi-replica code on a machine without accelerators.
    """
    if count < 1:
        raise ValueError(f"Logical CPU count must be at least 1, got {count}.")

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {count} logical devices because TensorFlow "
            f"has already initialised its devices ({error}). Call "
            "configure_logical_cpus at the start of the program, before any "
            "TensorFlow op runs."
        ) from error
