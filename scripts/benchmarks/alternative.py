"""The alternative a user would pick: MobileNetV3Small with a 40-sigmoid head, beside ANet.

Both nets train here from random weights on the same synthetic aligned faces:
`pipeline.aligned_face_dataset` gives the centre face of each aligned image,
flipped at random. They share the epochs, batch size and learning rate of the
config's `finetune_anet` stage, Adam with cosine decay, and the project's train
step, loss and metrics. That keeps the comparison like for like. It is not the
full method, in which ANet starts from identity pre-training, reads five patches
of the face that LNet_s found, and averages SVM scores over them.

ANet is scored twice: with its own 40-unit sigmoid head, and as the method uses
it, with one linear SVM per attribute on its features and Platt scaling fitted
on the validation partition. The test partition gives the metrics
(`lnet_anet_tf.metrics.attribute_metrics`). Each net is then converted to a
float32 and a full-int8 TFLite model of one face crop (int8 calibrated on
training crops), and the four models are timed by the LiteRT interpreter on
one thread, interleaved in one process.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from benchmarks import common
from lnet_anet_tf import attributes
from lnet_anet_tf import baselines
from lnet_anet_tf import metrics as metrics_lib
from lnet_anet_tf import tflite_export
from lnet_anet_tf.data import pipeline
from lnet_anet_tf.models import build_anet
from lnet_anet_tf.stages import fitting
from lnet_anet_tf.training import steps as steps_lib
from lnet_anet_tf.training import svm as svm_lib

STAGE = "finetune_anet"
CALIBRATION_IMAGES = 100


def build_mobilenet(size: int, batch_norm_momentum: float) -> keras.Model:
    """MobileNetV3Small without weights, global average pooling and a 40-logit head.

    `include_preprocessing=False` because the pipeline already gives values in
    [-1, 1], the range the net's own preprocessing would produce. Its batch
    normalization gets ANet's momentum: Keras builds MobileNetV3 with 0.999, whose
    moving statistics are still mostly at their initial values after a few hundred
    steps, so inference would read the wrong statistics after a short run.
    """
    images = keras.Input((size, size, 3), name="images")
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(size, size, 3),
        include_top=False,
        weights=None,
        pooling="avg",
        include_preprocessing=False,
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = batch_norm_momentum
    features = backbone(images)
    logits = keras.layers.Dense(attributes.NUM_ATTRIBUTES, name="attributes")(features)
    return keras.Model(images, {"logits": logits, "features": features}, name="mobilenet_v3_small")


def train(model: keras.Model, table, config, size: int) -> dict:
    """Train `model` as the `finetune_anet` stage would, on the aligned faces of `table`."""
    stage = config.stages[STAGE]
    steps_per_epoch = len(table) // stage.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        stage.learning_rate, decay_steps=max(1, stage.epochs * steps_per_epoch)
    )
    train_step = steps_lib.build_train_step(
        model,
        fitting.sigmoid_loss,
        keras.optimizers.Adam(schedule),
        tf.distribute.get_strategy(),
        global_batch_size=stage.batch_size,
        metrics_fn=fitting.attribute_metrics,
    )

    start = time.perf_counter()
    for epoch in range(stage.epochs):
        dataset = pipeline.aligned_face_dataset(
            table, size, stage.batch_size, training=True, epoch=epoch, augment=True,
            seed=config.seed,
        )
        iterator = iter(dataset)
        for _ in range(steps_per_epoch):
            values = train_step(iterator)
        logging.info("%s: epoch %d of %d, loss %.4f.", model.name, epoch + 1, stage.epochs,
                     float(values["loss"]))
    seconds = time.perf_counter() - start
    return {
        "epochs": stage.epochs,
        "batch_size": stage.batch_size,
        "steps": stage.epochs * steps_per_epoch,
        "seconds": seconds,
        "examples_per_second": stage.epochs * steps_per_epoch * stage.batch_size / seconds,
    }


def predict(model: keras.Model, table, size: int, batch_size: int) -> dict:
    """Return the "logits" and "features" of every aligned face of `table`, in row order."""
    outputs = {"logits": [], "features": []}
    for images, _ in pipeline.aligned_face_dataset(table, size, batch_size, training=False):
        result = model(images, training=False)
        for key in outputs:
            outputs[key].append(result[key].numpy())
    return {key: np.concatenate(values) for key, values in outputs.items()}


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _summary(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    metrics = metrics_lib.attribute_metrics(probabilities, labels)
    return {"mean_accuracy": metrics["mean_accuracy"],
            "mean_balanced_accuracy": metrics["mean_balanced_accuracy"]}


def svm_probabilities(anet_outputs: dict, tables: dict, config, work_dir: str):
    """Fit the attribute SVMs on ANet's training features; return them and the test probabilities."""
    svm, _ = svm_lib.train_svm(
        anet_outputs["train"]["features"], tables["train"].attributes, config.svm,
        model_dir=os.path.join(work_dir, "svm"), seed=config.seed, progress=False,
    )
    platt_split = "validation" if len(tables["validation"]) else "train"
    scale, offset = svm_lib.fit_platt(
        svm.decision_function(anet_outputs[platt_split]["features"]),
        tables[platt_split].attributes,
    )
    test_scores = svm.decision_function(anet_outputs["test"]["features"])
    return svm, svm_lib.platt_probabilities(test_scores, scale, offset), platt_split


def tflite_model(
    model: keras.Model, size: int, variant: str, calibration: np.ndarray, svm=None
) -> bytes:
    """Convert face crop [1, size, size, 3] in [-1, 1] -> 40 scores to TFLite `variant`.

    With `svm`, the scores are the SVMs' on the features; otherwise the logits.
    """
    spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def scores(image):
        outputs = model(image, training=False)
        if svm is None:
            return {"scores": outputs["logits"]}
        return {"scores": tf.matmul(outputs["features"], svm.weights) + svm.bias}

    # Frozen first, as the project's exports are: converting Keras 3 variables
    # directly gave NaN outputs.
    frozen = convert_variables_to_constants_v2(scores.get_concrete_function())
    module = tf.Module(name=f"frozen_{model.name}")

    @tf.function(input_signature=[spec])
    def predict_scores(image):
        return {"scores": frozen(image)[0]}

    module.predict = predict_scores
    return tflite_export.convert(
        predict_scores.get_concrete_function(), module, variant,
        representative_data=lambda: iter(calibration),
    )


def time_tflite(paths: list[str], runs: int, warmup: int) -> dict:
    """Return path -> latency on one thread, all models interleaved in one child process."""
    spec = {"kind": "tflite_set", "paths": paths, "threads": 1, "runs": runs, "warmup": warmup,
            "input_range": [-1.0, 1.0]}
    return common.run_child("inference_child", spec)


def run(config, data, work_dir: str, sizes: dict) -> dict:
    os.makedirs(work_dir, exist_ok=True)
    size = config.anet.input_size
    tables = {name: data.table.partition(name) for name in ("train", "validation", "test")}
    batch_size = config.stages[STAGE].batch_size
    calibration_faces = pipeline.aligned_face_dataset(
        tables["train"], size, batch_size, training=False
    ).unbatch().take(min(CALIBRATION_IMAGES, sizes["calibration_images"]))
    calibration = np.stack([image.numpy() for image, _ in calibration_faces])

    nets = {
        "anet": build_anet(config.anet, attributes.NUM_ATTRIBUTES, "attributes", name="anet"),
        "mobilenet_v3_small": build_mobilenet(size, config.anet.batch_norm_momentum),
    }
    results = {"input_size": size, "majority": baselines.majority_baseline(tables["train"], tables["test"])}
    outputs = {}
    for name, model in nets.items():
        logging.info("Training %s on %d aligned faces.", name, len(tables["train"]))
        training = train(model, tables["train"], config, size)
        outputs[name] = {split: predict(model, table, size, batch_size)
                         for split, table in tables.items() if len(table)}
        results[name] = {
            "parameters": int(model.count_params()),
            "training": training,
            "head": _summary(_sigmoid(outputs[name]["test"]["logits"]), tables["test"].attributes),
        }

    svm, probabilities, platt_split = svm_probabilities(outputs["anet"], tables, config, work_dir)
    results["anet"]["svm"] = _summary(probabilities, tables["test"].attributes)
    results["anet"]["platt_split"] = platt_split

    paths = {}
    for name, model in nets.items():
        for variant in ("float32", "int8"):
            logging.info("Converting %s to %s TFLite.", name, variant)
            content = tflite_model(
                model, size, variant, calibration, svm if name == "anet" else None
            )
            paths[name, variant] = os.path.join(work_dir, f"{name}_{variant}.tflite")
            tflite_export.write_model(paths[name, variant], content)
    latencies = time_tflite(list(paths.values()), sizes["runs"], sizes["warmup"])
    for (name, variant), path in paths.items():
        results[name][variant] = dict(latencies[path], bytes=os.path.getsize(path))
    keras.backend.clear_session()
    return results


def render(results: dict) -> str:
    from benchmarks.markdown import table

    anet, mobile = results["anet"], results["mobilenet_v3_small"]
    training = anet["training"]
    def deployment(net):
        return [net["int8"]["bytes"] / 2**20, net["float32"]["median_ms"], net["int8"]["median_ms"],
                net["training"]["examples_per_second"]]

    rows = [
        ["ANet + SVMs (Platt on " + anet["platt_split"] + ")", anet["parameters"],
         anet["svm"]["mean_accuracy"], anet["svm"]["mean_balanced_accuracy"]] + deployment(anet),
        ["ANet, own sigmoid head", anet["parameters"], anet["head"]["mean_accuracy"],
         anet["head"]["mean_balanced_accuracy"], "", "", "", ""],
        ["MobileNetV3Small + 40 sigmoids", mobile["parameters"], mobile["head"]["mean_accuracy"],
         mobile["head"]["mean_balanced_accuracy"]] + deployment(mobile),
        ["majority per attribute", 0, results["majority"]["mean_accuracy"],
         results["majority"]["mean_balanced_accuracy"], "", "", "", ""],
    ]
    text = [
        f"Both nets trained from random weights on the synthetic aligned faces at "
        f"{results['input_size']} x {results['input_size']} px for {training['epochs']} epoch(s) "
        f"at batch {training['batch_size']} ({training['steps']} steps), scored on the test "
        "partition. The TFLite models take one face crop; ANet's include the SVMs. "
        "Parameters of ANet include its 40-unit head, which has as many weights as the SVMs.",
        "",
        table(["model", "parameters", "mean accuracy", "mean balanced accuracy", "int8 MiB",
               "float32 ms, 1 thread", "int8 ms, 1 thread", "training ex/s"], rows),
        "",
        "Where the alternative wins: " + _wins(anet, mobile),
        "",
        "Not measured: MobileNetV3Small with ImageNet weights, which a user would "
        "usually start from; the weights are a download, and this run has no network.",
    ]
    return "\n".join(text)


def _wins(anet: dict, mobile: dict) -> str:
    comparisons = [
        ("mean accuracy", mobile["head"]["mean_accuracy"], anet["svm"]["mean_accuracy"], True),
        ("mean balanced accuracy", mobile["head"]["mean_balanced_accuracy"],
         anet["svm"]["mean_balanced_accuracy"], True),
        ("parameters", mobile["parameters"], anet["parameters"], False),
        ("int8 size", mobile["int8"]["bytes"], anet["int8"]["bytes"], False),
        ("int8 latency", mobile["int8"]["median_ms"], anet["int8"]["median_ms"], False),
        ("training speed", mobile["training"]["examples_per_second"],
         anet["training"]["examples_per_second"], True),
    ]
    wins = [name for name, alternative, ours, higher_is_better in comparisons
            if (alternative > ours if higher_is_better else alternative < ours)]
    losses = [name for name, *_ in comparisons if name not in wins]
    sentence = (", ".join(wins) if wins else "nowhere") + " (against ANet + SVMs)."
    if losses:
        sentence += f" ANet + SVMs is better on {', '.join(losses)}."
    return sentence
