"""The synthetic dataset that every measurement reads, generated once into a cache."""

from __future__ import annotations

import dataclasses

from absl import logging

from lnet_anet_tf.config import SyntheticConfig
from lnet_anet_tf.data import celeba
from lnet_anet_tf.data import synthetic
from lnet_anet_tf.data.table import CelebATable

# --quick: enough images for one batch of every pipeline and a train/test split.
QUICK_SYNTHETIC = SyntheticConfig(
    num_identities=10, images_per_identity=4, object_classes=2, object_images_per_class=8
)


@dataclasses.dataclass(frozen=True)
class BenchmarkData:
    """The synthetic CelebA copy, its table and the object-class folders."""

    celeba_dir: str
    objects_dir: str
    table: CelebATable
    synthetic_config: SyntheticConfig

    @property
    def train(self) -> CelebATable:
        return self.table.partition("train")

    @property
    def test(self) -> CelebATable:
        return self.table.partition("test")


def prepare(cache_dir: str, synthetic_config: SyntheticConfig, quick: bool) -> BenchmarkData:
    """Generate (or reuse) the synthetic datasets in `cache_dir` and read the table."""
    config = QUICK_SYNTHETIC if quick else synthetic_config
    celeba_dir, objects_dir = synthetic.ensure_default_dataset(cache_dir, config)
    table = celeba.load_celeba(celeba_dir)
    logging.info("Synthetic CelebA in %s: %d images.", celeba_dir, len(table))
    return BenchmarkData(celeba_dir, objects_dir, table, config)


def describe(data: BenchmarkData) -> dict:
    config = data.synthetic_config
    return {
        "images": len(data.table),
        "train_images": len(data.train),
        "test_images": len(data.test),
        "identities": config.num_identities,
        "object_images": config.object_classes * config.object_images_per_class,
        "object_classes": config.object_classes,
    }
