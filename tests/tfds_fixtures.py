"""Tiny TFDS datasets built offline, to test the real TFDS reading and slicing code.

`tfds.testing.mock_data` ignores split expressions such as `train[:40]`, so these
builders write real TFDS files into a temporary `data_dir`.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

FAKE_CIFAR = "tf_oneshot_fake_cifar"
FAKE_IMAGENET = "tf_oneshot_fake_imagenet"
CIFAR_SIZES = {"train": 60, "test": 20}
IMAGENET_SIZES = {"train": 12, "validation": 6}


def cifar_image(example_id: int) -> np.ndarray:
    """A random 32x32x3 uint8 image whose first pixel spells out `example_id`."""
    image = np.random.default_rng(example_id).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image[0, 0, :2] = (example_id % 256, example_id // 256)
    return image


def decode_id(image: np.ndarray) -> int:
    """Reads back the id that `cifar_image` wrote, from a uint8 image."""
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


class TfOneshotFakeCifar(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10's features (PNG 32x32x3, 10 labels) with a few dozen examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(32, 32, 3)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            "train": self._generate_examples(0, CIFAR_SIZES["train"]),
            "test": self._generate_examples(1000, CIFAR_SIZES["test"]),
        }

    def _generate_examples(self, first_id: int, count: int):
        for i in range(first_id, first_id + count):
            yield i, {"image": cifar_image(i), "label": i % 10}


class TfOneshotFakeImagenet(tfds.core.GeneratorBasedBuilder):
    """ImageNet's features (JPEG of any size, 1,000 labels) with a dozen examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=1000),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(0, IMAGENET_SIZES["train"]),
            "validation": self._generate_examples(1000, IMAGENET_SIZES["validation"]),
        }

    def _generate_examples(self, first_id: int, count: int):
        for i in range(first_id, first_id + count):
            rng = np.random.default_rng(i)
            shape = (int(rng.integers(40, 90)), int(rng.integers(40, 90)), 3)
            yield i, {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 1000}


def build(data_dir: str) -> None:
    """Prepares both fake datasets in `data_dir`, offline."""
    tfds.disable_progress_bar()
    for name in (FAKE_CIFAR, FAKE_IMAGENET):
        tfds.builder(name, data_dir=data_dir).download_and_prepare()
