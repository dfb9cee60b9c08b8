"""TFDS dataset `celeb_a_in_the_wild`: CelebA's in-the-wild images with boxes.

Build it with `tfds build lnet_anet_tf/data/celeb_a_in_the_wild --manual_dir=CELEBA`
(the `tfds` command of tensorflow-datasets 4.9.10 imports apache-beam and
mlcroissant at start-up; the `test` extra installs both), or
import `celeb_a_in_the_wild_dataset_builder` to register it with `tfds.builder` and
call `download_and_prepare` with `tfds.download.DownloadConfig(manual_dir=CELEBA)`.
This file imports nothing: `tfds build` imports the builder module under the
package name `celeb_a_in_the_wild`, and a second import under this package's full
name would register the dataset twice.
"""
