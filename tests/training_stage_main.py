"""Train the tiny fixture stage in its own process, for the training-loop tests.

Tests run this file as a subprocess because logical CPU devices and
MultiWorkerMirroredStrategy must be configured before TensorFlow initialises, and
because the resume test kills the process with SIGKILL. It writes a JSON file with
the StageResult, the number of replicas and the final weights.
"""

import dataclasses
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Directory of the stage outputs.", required=True)
flags.DEFINE_string("result_path", None, "Where to write the result JSON.", required=True)
flags.DEFINE_string("strategy", "auto", "Name passed to make_strategy.")
flags.DEFINE_integer("logical_cpus", 1, "Split the CPU into this many logical devices.")
flags.DEFINE_integer("examples", 64, "Number of training examples.")
flags.DEFINE_integer("global_batch_size", 8, "Global batch size.")
flags.DEFINE_integer("steps_per_epoch", 4, "Steps per epoch.")
flags.DEFINE_integer("epochs", 3, "Epochs.")
flags.DEFINE_integer("checkpoint_every_steps", None, "Step checkpoint interval.")
flags.DEFINE_float("learning_rate", 0.05, "Adam learning rate.")
flags.DEFINE_bool("batch_norm", True, "Add a BatchNormalization layer.")
flags.DEFINE_float("dropout", 0.25, "Dropout rate; 0 removes the layer.")
flags.DEFINE_bool("validation", True, "Evaluate on held-out data after each epoch.")
flags.DEFINE_float("delay_s", 0.0, "Seconds each training batch takes to produce.")
flags.DEFINE_bool("mixed_precision", False, "Use the mixed_float16 policy.")
flags.DEFINE_bool("jit_compile", False, "Compile the forward and backward pass with XLA.")


def main(argv):
    del argv
    from lnet_anet_tf import training

    if FLAGS.logical_cpus > 1:
        training.configure_logical_cpus(FLAGS.logical_cpus)
    strategy = training.make_strategy(FLAGS.strategy)
    training.enable_determinism(0)
    training.configure_precision(FLAGS.mixed_precision)

    import keras
    import training_fixtures as fixtures

    with strategy.scope():
        model = fixtures.make_model(batch_norm=FLAGS.batch_norm, dropout=FLAGS.dropout)
        optimizer = keras.optimizers.Adam(FLAGS.learning_rate)

    features, labels = fixtures.make_data(FLAGS.examples, seed=0)
    val_features, val_labels = fixtures.make_data(24, seed=1)
    validation_dataset_fn = None
    if FLAGS.validation:
        validation_dataset_fn = fixtures.make_validation_dataset_fn(val_features, val_labels, 5)

    result = training.fit(
        stage_name="tiny",
        model=model,
        loss_fn=fixtures.loss_fn,
        metrics_fn=fixtures.metrics_fn,
        dataset_fn=fixtures.make_dataset_fn(
            features, labels, FLAGS.global_batch_size, delay_s=FLAGS.delay_s
        ),
        global_batch_size=FLAGS.global_batch_size,
        steps_per_epoch=FLAGS.steps_per_epoch,
        epochs=FLAGS.epochs,
        optimizer=optimizer,
        model_dir=FLAGS.model_dir,
        strategy=strategy,
        validation_dataset_fn=validation_dataset_fn,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        jit_compile=FLAGS.jit_compile,
        progress=False,
    )
    replica_spread = {
        variable.path: _replica_spread(strategy, variable)
        for variable in model.non_trainable_variables
    }
    output = {
        "result": dataclasses.asdict(result),
        "replicas": strategy.num_replicas_in_sync,
        "weights": [weight.tolist() for weight in model.get_weights()],
        "replica_spread": replica_spread,
    }
    with open(FLAGS.result_path, "w", encoding="utf-8") as file:
        json.dump(output, file)


def _replica_spread(strategy, variable):
    """Return how far the replicas' copies of `variable` are apart (max abs difference)."""
    import numpy as np

    copies = [copy.numpy() for copy in strategy.experimental_local_results(variable.value)]
    return max(float(np.abs(copy - copies[0]).max()) for copy in copies)


if __name__ == "__main__":
    app.run(main)
