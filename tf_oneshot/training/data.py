"""Input pipelines: the embedded digits set, CIFAR-10 and ImageNet with the paper's splits.

Every dataset has three splits. One-shot accuracies are measured on `"validation"`, a
part of the training data held out from training, and final accuracies on `"test"`
(Bender et al. 2018, §4):

| name           | train             | validation        | test                 |
| -------------- | ----------------- | ----------------- | -------------------- |
| `digits`       | 1,197 (seeded)    | 300 (seeded)      | 300 (seeded)         |
| `cifar10`      | TFDS `train[:45000]` | `train[45000:]` | TFDS `test`          |
| `imagenet2012` | TFDS `train[50046:]` | `train[:50046]` | TFDS `validation`    |

The split `FULL_TRAIN` ("train+validation") is the whole training set, for the final
models of §3.4 and §4.1, which are "trained from scratch ... on the full training set"
and evaluated on the test set (`retrain --full_train`).

`digits` is scikit-learn's `load_digits` (1,797 real 8x8 handwritten digits shipped with
the package), so the demo runs offline. The TFDS datasets must already be prepared in
`data_dir`: nothing here downloads.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_oneshot.errors import UserError

__all__ = [
    "FULL_TRAIN",
    "SPLITS",
    "TFDS_SOURCES",
    "DatasetInfo",
    "TfdsSource",
    "dataset_info",
    "dataset_names",
    "make_dataset",
    "split_size",
    "take_images",
]

SPLITS = ("train", "validation", "test")
FULL_TRAIN = "train+validation"  # train and validation together (§3.4: "the full training set")
_AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trainer need to know about a dataset.

    Attributes:
        name: the dataset name, e.g. `"cifar10"`.
        image_shape: `(height, width, channels)` of the images `make_dataset` yields.
        num_classes: number of labels.
        num_examples: examples in each of `"train"`, `"validation"`, `"test"`.
        stem_stride: suggested stride of the network stem (1 for small images,
            4 for 224x224 ImageNet inputs).
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_examples: Mapping[str, int]
    stem_stride: int


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """How a dataset name maps onto a TFDS dataset (Bender et al. 2018, §4).

    Attributes:
        tfds_name: the TFDS builder name.
        train, validation, test: TFDS split expressions for our three splits.
        preprocessing: `"cifar"` (small images, decoded once and kept in memory;
            training: pad 4, random crop, flip) or `"imagenet"` (JPEGs decoded on the
            fly; training: random resized crop 224, flip; evaluation: resize 256, center
            crop 224).
        image_shape: shape of the images after preprocessing.
        mean, std: per-channel normalization of images scaled to [0, 1].
        stem_stride: suggested stride of the network stem.
    """

    tfds_name: str
    train: str
    validation: str
    test: str
    preprocessing: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stem_stride: int


# Module-level so tests (and users with their own copy of a dataset) can swap the
# split table; the loaders read it at call time.
TFDS_SOURCES: dict[str, TfdsSource] = {
    "cifar10": TfdsSource(
        tfds_name="cifar10",
        train="train[:45000]",
        validation="train[45000:]",
        test="test",
        preprocessing="cifar",
        image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        stem_stride=1,
    ),
    # The paper holds out 50,046 training images for validation and reports test
    # accuracy on the official validation set; TFDS has no ImageNet test labels.
    "imagenet2012": TfdsSource(
        tfds_name="imagenet2012",
        train="train[50046:]",
        validation="train[:50046]",
        test="validation",
        preprocessing="imagenet",
        image_shape=(224, 224, 3),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        stem_stride=4,
    ),
}
DIGITS = "digits"
_DIGITS_SIZES = {"train": 1197, "validation": 300, "test": 300}
_DIGITS_SPLIT_SEED = 20180710  # Fixed: the split never depends on the run's seed.


def split_size(info: DatasetInfo, split: str) -> int:
    """Examples in `split`, `FULL_TRAIN` included."""
    _check_split(split)
    if split == FULL_TRAIN:
        return info.num_examples["train"] + info.num_examples["validation"]
    return info.num_examples[split]


def dataset_names() -> tuple[str, ...]:
    """Returns the dataset names `make_dataset` accepts."""
    return tuple(sorted((DIGITS, *TFDS_SOURCES)))


def dataset_info(name: str, data_dir: str | None = None) -> DatasetInfo:
    """Describes a dataset without building a pipeline.

    Args:
        name: one of `dataset_names()`.
        data_dir: TFDS data directory (default: TFDS's, `~/tensorflow_datasets`).

    Returns:
        A `DatasetInfo`. For TFDS datasets the split sizes come from the prepared data.

    Raises:
        UserError: for an unknown name, or a TFDS dataset not prepared in `data_dir`.
    """
    return _resolve(name, data_dir)[0]


def check_fits(name: str, data_dir: str | None, image_shape, num_classes: int) -> None:
    """UserError unless dataset `name` has images of `image_shape` and `num_classes` classes (a space's input)."""
    info = dataset_info(name, data_dir)
    if tuple(info.image_shape) != tuple(image_shape) or info.num_classes != num_classes:
        raise UserError(
            f"--dataset={name} has images {tuple(info.image_shape)} and {info.num_classes} classes, but the "
            f"search space was built for {tuple(image_shape)} and {num_classes}; pass the dataset the one-shot "
            "model was trained on."
        )


def input_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel with which `make_dataset` standardizes images scaled to [0, 1].

    The training split's statistics (digits: computed from it; the TFDS sets:
    their published ones). An export puts them in front of the network
    (`retrain.export_model`), so a user's [0, 1] images need no recipe from here.

    Raises:
        UserError: for an unknown dataset name.
    """
    if name == DIGITS:
        train = _digits_arrays()["train"][0]  # Standardize with train statistics only.
        mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
        return tuple(float(m) for m in np.atleast_1d(mean)), tuple(float(s) for s in np.atleast_1d(std))
    source = _source(name)
    return tuple(source.mean), tuple(source.std)


def make_dataset(
    name: str,
    split: str,
    batch_size: int,
    *,
    training: bool,
    data_dir: str | None = None,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 10_000,
    repeat: bool | None = None,
) -> tf.data.Dataset:
    """Builds a batched input pipeline.

    Batches have static shapes (`drop_remainder=True`, as TPUs need). The order of
    examples and the augmentation depend only on `seed` and `input_context`.

    Args:
        name: one of `dataset_names()`.
        split: `"train"`, `"validation"` or `"test"` (Bender et al. 2018, §4), or
            `FULL_TRAIN` (both training parts).
        batch_size: the global batch size; with `input_context`, each replica gets
            `input_context.get_per_replica_batch_size(batch_size)`.
        training: shuffle and augment (CIFAR: pad 4, random 32x32 crop, flip;
            ImageNet: random resized crop 224, flip; digits: random shift of up to
            one pixel). Without it: no shuffle, and ImageNet images are resized to 256
            and center-cropped to 224.
        data_dir: TFDS data directory.
        seed: seeds the shuffle and the augmentation.
        input_context: from `tf.distribute.Strategy.distribute_datasets_from_function`;
            this pipeline reads every `num_input_pipelines`-th example, starting at
            `input_pipeline_id`.
        shuffle_buffer: size of the shuffle buffer (used when `training`).
        repeat: repeat forever; defaults to `training`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 `[B, H, W, C]`, normalized per
        channel, and int32 `[B]`.

    Raises:
        UserError: for an unknown name or split, a TFDS dataset not prepared in
            `data_dir`, or a batch size that is not positive, larger than the split, or
            not divisible by the number of replicas.
    """
    info, builder = _resolve(name, data_dir)
    _check_count("batch_size", batch_size, split_size(info, split), name, split)
    per_replica = batch_size
    if input_context is not None:
        try:
            per_replica = input_context.get_per_replica_batch_size(batch_size)
        except ValueError:
            n = input_context.num_replicas_in_sync
            raise UserError(
                f"batch_size={batch_size} is not divisible by the {n} replicas: use a multiple of {n}."
            ) from None
    ds = _examples(
        info,
        builder,
        split,
        seed=seed,
        augment=training,
        shuffle=training,
        shuffle_buffer=shuffle_buffer,
        repeat=training if repeat is None else repeat,
        input_context=input_context,
    )
    return ds.batch(per_replica, drop_remainder=True).prefetch(_AUTOTUNE)


def take_images(name: str, split: str, count: int, data_dir: str | None = None, seed: int = 0) -> np.ndarray:
    """Returns `count` normalized images drawn at random, without augmentation.

    For recalibrating batch norm statistics (Guo et al., SPOS) or comparing output
    distributions of candidate architectures (Bender et al. 2018, §5).

    Args:
        name: one of `dataset_names()`.
        split: `"train"`, `"validation"`, `"test"` or `FULL_TRAIN`.
        count: how many images.
        data_dir: TFDS data directory.
        seed: picks the images.

    Returns:
        float32 array `[count, H, W, C]`.

    Raises:
        UserError: as `make_dataset`, for `count` in place of `batch_size`.
    """
    info, builder = _resolve(name, data_dir)
    _check_count("count", count, split_size(info, split), name, split)
    # TFDS shuffles records when it prepares a dataset, so a bounded buffer is random
    # enough and keeps ImageNet's encoded images from filling memory.
    buffer = min(split_size(info, split), 10_000)
    ds = _examples(
        info,
        builder,
        split,
        seed=seed,
        augment=False,
        shuffle=True,
        shuffle_buffer=buffer,
        repeat=False,
        input_context=None,
    )
    images = next(iter(ds.take(count).batch(count).map(lambda x, y: x)))
    return images.numpy()


# --- internals -------------------------------------------------------------------------


def _source(name: str) -> TfdsSource:
    if name not in TFDS_SOURCES:
        raise UserError(f"Unknown dataset {name!r}: use one of {', '.join(dataset_names())}.")
    return TFDS_SOURCES[name]


def _check_split(split: str) -> None:
    if split not in (*SPLITS, FULL_TRAIN):
        raise UserError(f"Unknown split {split!r}: use one of {', '.join((*SPLITS, FULL_TRAIN))}.")


def _check_count(what: str, value: int, available: int, name: str, split: str) -> None:
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise UserError(f"{what} must be a positive integer. Received: {what}={value!r}.")
    if value > available:
        raise UserError(
            f"{what}={value} is larger than the {available} examples of {name} {split}: "
            f"use at most {available}."
        )


def _prepared_builder(name: str, source: TfdsSource, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder, checking for prepared files without downloading."""
    builder = tfds.builder(source.tfds_name, data_dir=data_dir, try_gcs=False)
    if not builder.is_prepared():
        root = builder.data_dir_root
        manual = (
            f"put the ILSVRC2012 archives in {root}/downloads/manual, then "
            if source.preprocessing == "imagenet"
            else ""
        )
        raise UserError(
            f"Dataset {name} is not prepared in {root}: {manual}run "
            f"`tfds build {source.tfds_name} --data_dir={root}`, or point --data_dir at a "
            f"directory that holds it."
        )
    return builder


def _resolve(name: str, data_dir: str | None) -> tuple[DatasetInfo, tfds.core.DatasetBuilder | None]:
    """Returns the dataset's info and, for a TFDS dataset, its prepared builder."""
    if name == DIGITS:
        return DatasetInfo(DIGITS, (8, 8, 1), 10, dict(_DIGITS_SIZES), stem_stride=1), None
    source = _source(name)
    builder = _prepared_builder(name, source, data_dir)
    splits = builder.info.splits
    info = DatasetInfo(
        name=name,
        image_shape=source.image_shape,
        num_classes=int(builder.info.features["label"].num_classes),
        num_examples={s: int(splits[getattr(source, s)].num_examples) for s in SPLITS},
        stem_stride=source.stem_stride,
    )
    return info, builder


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The seeded digits split, images scaled to [0, 1]: `{split: (images, labels)}`."""
    from sklearn.datasets import load_digits  # Imported here: only digits needs it.

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    out, start = {}, 0
    for split in SPLITS:
        idx = order[start : start + _DIGITS_SIZES[split]]
        out[split] = (images[idx], labels[idx])
        start += _DIGITS_SIZES[split]
    return out


def _examples(
    info: DatasetInfo,
    builder: tfds.core.DatasetBuilder | None,
    split: str,
    *,
    seed: int,
    augment: bool,
    shuffle: bool,
    shuffle_buffer: int,
    repeat: bool,
    input_context: tf.distribute.InputContext | None,
) -> tf.data.Dataset:
    """Unbatched, normalized `(image, label)` pairs: read, shard, shuffle, repeat, augment."""
    if builder is None:  # digits
        arrays = _digits_arrays()
        parts = split.split("+")  # FULL_TRAIN: train, then validation
        examples = tuple(np.concatenate([arrays[p][i] for p in parts]) for i in (0, 1))
        ds = tf.data.Dataset.from_tensor_slices(examples)
        preprocess, decode = _preprocess_digits, None
    else:
        source = TFDS_SOURCES[info.name]
        # Images stay encoded until after sharding, so a pipeline decodes only its share.
        # FULL_TRAIN is a TFDS split expression too: "train[:45000]+train[45000:]".
        ds = builder.as_dataset(
            split="+".join(getattr(source, part) for part in split.split("+")),
            shuffle_files=False,
            as_supervised=True,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(try_autocache=False),
        )
        if source.preprocessing == "cifar":  # Small: decode once, keep in memory.
            preprocess, decode = _preprocess_cifar, functools.partial(_decode, shape=info.image_shape)
        else:  # ImageNet: decode (and crop) each JPEG on the fly.
            preprocess, decode = _preprocess_imagenet, None

    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        ds = ds.shard(num_pipelines, pipeline_id)
    if decode is not None:
        ds = ds.map(decode, num_parallel_calls=_AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    mean, std = (tf.constant(v, tf.float32) for v in input_statistics(info.name))

    def _map(index: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]):
        image, label = example
        # One stateless seed per element, unique across pipelines and epochs, so the
        # augmentation is reproducible under a parallel map.
        element_seed = tf.stack([tf.constant(seed, tf.int64), index * num_pipelines + pipeline_id])
        image = preprocess(image, element_seed, augment=augment, shape=info.image_shape)
        return (image - mean) / std, tf.cast(label, tf.int32)

    return ds.enumerate().map(_map, num_parallel_calls=_AUTOTUNE, deterministic=True)


def _decode(encoded: tf.Tensor, label: tf.Tensor, *, shape: tuple[int, int, int]):
    image = tf.io.decode_image(encoded, channels=shape[-1], expand_animations=False)
    image.set_shape(shape)
    return image, label


def _preprocess_digits(
    image: tf.Tensor, seed: tf.Tensor, *, augment: bool, shape: tuple[int, int, int]
) -> tf.Tensor:
    if augment:  # Shift by up to one pixel; no flip, digits are not mirror-symmetric.
        image = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
        image = tf.image.stateless_random_crop(image, shape, seed=seed)
    return image


def _preprocess_cifar(
    image: tf.Tensor, seed: tf.Tensor, *, augment: bool, shape: tuple[int, int, int]
) -> tf.Tensor:
    image = tf.cast(image, tf.float32) / 255.0
    if augment:  # Pad 4, random crop back to size, horizontal flip: the standard recipe.
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
        image = tf.image.stateless_random_crop(image, shape, seed=crop_seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def _preprocess_imagenet(
    encoded: tf.Tensor, seed: tf.Tensor, *, augment: bool, shape: tuple[int, int, int]
) -> tf.Tensor:
    size, channels = shape[0], shape[-1]
    if augment:  # Inception-style random resized crop (area 8-100%, aspect 3/4-4/3), flip.
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.io.extract_jpeg_shape(encoded),
            tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=crop_seed,
            min_object_covered=0.1,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)
        image = tf.image.resize(image, [size, size], method="bicubic") / 255.0
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    else:  # Resize the short side to 256 (for size 224), then take the central crop.
        image = tf.io.decode_jpeg(encoded, channels=channels)
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = (size * 256 / 224) / tf.reduce_min(hw)
        image = tf.image.resize(image, tf.cast(tf.round(hw * scale), tf.int32), method="bicubic") / 255.0
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    image = tf.clip_by_value(image, 0.0, 1.0)  # Bicubic overshoots.
    image.set_shape(shape)
    return image
