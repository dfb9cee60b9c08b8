"""CelebA on-disk formats, the embedded synthetic dataset and tf.data pipelines."""
