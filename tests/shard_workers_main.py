"""Read TFRecord shards as one worker of a MultiWorkerMirroredStrategy; write what it read.

The two-process test in test_shard_pipeline.py starts this file twice with a
TF_CONFIG naming two workers on 127.0.0.1, because the strategy must be set up
before TensorFlow initialises. Each worker iterates the distributed datasets and
writes its input pipeline id and the table rows of its local batches as JSON.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Synthetic CelebA folder.", required=True)
flags.DEFINE_string("shard_dir", None, "TFRecord folder of its in-the-wild images.", required=True)
flags.DEFINE_string("result_path", None, "Where to write the result JSON.", required=True)

IMAGE_SIZE = 16
GLOBAL_BATCH_SIZE = 4


def local_rows(strategy, dataset_fn) -> tuple[list, int]:
    """Return the "index" values of this worker's batches and the number of steps."""
    rows, steps = [], 0
    for features, _ in strategy.distribute_datasets_from_function(dataset_fn):
        steps += 1
        for value in strategy.experimental_local_results(features["index"]):
            rows.extend(int(index) for index in value.numpy())
    return rows, steps


def main(argv):
    del argv
    from lnet_anet_tf import training

    strategy = training.make_strategy("multi_worker")
    training.enable_determinism(0)

    import numpy as np

    from lnet_anet_tf.data import celeba
    from lnet_anet_tf.data import shard_pipeline
    from lnet_anet_tf.data import shard_source
    from lnet_anet_tf.data import tfrecords

    table = celeba.load_celeba(FLAGS.data_dir)
    source = shard_source.open_shards(FLAGS.shard_dir, table)
    rows = np.arange(len(table))
    labels = table.attributes.astype(np.float32)
    contexts = []

    def joined(training_mode):
        def dataset_fn(input_context):
            contexts.append((input_context.input_pipeline_id, input_context.num_input_pipelines))
            return shard_pipeline.whole_image_shard_dataset(
                source, rows, labels, IMAGE_SIZE, GLOBAL_BATCH_SIZE, training=training_mode,
                input_context=input_context, with_index=True,
            )

        return dataset_fn

    def pattern_reader(input_context):
        return tfrecords.tfrecord_dataset(
            os.path.join(FLAGS.shard_dir, "*" + tfrecords.SHARD_SUFFIX), IMAGE_SIZE,
            GLOBAL_BATCH_SIZE, training=False, input_context=input_context, with_index=True,
        )

    evaluation_rows, evaluation_steps = local_rows(strategy, joined(False))
    training_rows, training_steps = local_rows(strategy, joined(True))
    pattern_rows, _ = local_rows(strategy, pattern_reader)
    result = {
        "input_contexts": sorted(set(contexts)),
        "evaluation_rows": evaluation_rows,
        "evaluation_steps": evaluation_steps,
        "training_rows": training_rows,
        "training_steps": training_steps,
        "pattern_rows": pattern_rows,
    }
    with open(FLAGS.result_path, "w", encoding="utf-8") as file:
        json.dump(result, file)


if __name__ == "__main__":
    app.run(main)
