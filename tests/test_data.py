"""Input pipelines: the paper's splits, shapes, determinism, sharding and clear errors.

Offline: `digits` ships with scikit-learn, and the TFDS code runs on tiny datasets built
in a temporary directory (tests/tfds_fixtures.py) with the same features as CIFAR-10 and
ImageNet, so the real split slicing is exercised.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import tfds_fixtures as fake

from tf_oneshot.errors import UserError
from tf_oneshot.training import data


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels)


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def _context(pipeline_id: int) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
    )


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    fake.build(data_dir)
    return data_dir


@pytest.fixture
def fake_cifar(fake_dir, monkeypatch) -> str:
    """Points "cifar10" at the fake data, with a 40/20 slice of its 60 training examples."""
    source = dataclasses.replace(
        data.TFDS_SOURCES["cifar10"], tfds_name=fake.FAKE_CIFAR, train="train[:40]", validation="train[40:]"
    )
    monkeypatch.setitem(data.TFDS_SOURCES, "cifar10", source)
    return fake_dir


def _cifar_ids(images: np.ndarray) -> list[int]:
    """Undoes the normalization of un-augmented images and reads the ids back."""
    source = data.TFDS_SOURCES["cifar10"]
    pixels = np.round((images * source.std + source.mean) * 255).astype(np.uint8)
    return [fake.decode_id(p) for p in pixels]


# --- names, splits and errors ---------------------------------------------------------


def test_paper_split_table():
    # Bender et al. 2018, §4: 45,000/5,000/10,000 and 50,046 held out of ImageNet train.
    cifar, imagenet = data.TFDS_SOURCES["cifar10"], data.TFDS_SOURCES["imagenet2012"]
    assert (cifar.train, cifar.validation, cifar.test) == ("train[:45000]", "train[45000:]", "test")
    assert (imagenet.train, imagenet.validation, imagenet.test) == (
        "train[50046:]",
        "train[:50046]",
        "validation",
    )
    assert imagenet.image_shape == (224, 224, 3) and imagenet.stem_stride == 4
    assert data.dataset_names() == ("cifar10", "digits", "imagenet2012")


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(UserError, match="Unknown dataset 'mnist': use one of cifar10, digits, "):
        data.dataset_info("mnist")
    with pytest.raises(UserError, match="Unknown dataset"):
        data.make_dataset("mnist", "train", 8, training=True)


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012"])
def test_not_prepared_says_how_to_prepare_without_downloading(name, tmp_path):
    with pytest.raises(UserError) as err:
        data.make_dataset(name, "train", 8, training=True, data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert f"Dataset {name} is not prepared in {tmp_path}" in message
    assert f"`tfds build {name} --data_dir={tmp_path}`" in message
    assert ("downloads/manual" in message) == (name == "imagenet2012")
    assert not any(tmp_path.rglob("*.tfrecord*"))  # Nothing was fetched or written.


@pytest.mark.parametrize(
    "batch_size,match",
    [
        (0, "batch_size must be a positive integer. Received: batch_size=0"),
        (-4, "batch_size must be a positive integer"),
        (301, "batch_size=301 is larger than the 300 examples of digits validation: use at most 300"),
    ],
)
def test_bad_batch_size(batch_size, match):
    with pytest.raises(UserError, match=match):
        data.make_dataset("digits", "validation", batch_size, training=False)


def test_batch_size_not_divisible_by_replicas():
    context = tf.distribute.InputContext(num_replicas_in_sync=3)
    with pytest.raises(UserError, match="batch_size=10 is not divisible by the 3 replicas"):
        data.make_dataset("digits", "train", 10, training=True, input_context=context)


def test_unknown_split():
    with pytest.raises(UserError, match="Unknown split 'valid': use one of train, validation, test"):
        data.make_dataset("digits", "valid", 8, training=False)


# --- digits -----------------------------------------------------------------------------


def test_digits_info():
    info = data.dataset_info("digits")
    assert info == data.DatasetInfo(
        "digits", (8, 8, 1), 10, {"train": 1197, "validation": 300, "test": 300}, 1
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"


def test_digits_splits_are_disjoint_real_digits_standardized_on_train():
    splits = {s: _collect(data.make_dataset("digits", s, 100, training=False)) for s in data.SPLITS}
    assert {s: len(x) for s, (x, _) in splits.items()} == {
        "train": 1100,
        "validation": 300,
        "test": 300,
    }  # drop_remainder on 1,197.
    rows = {s: _rows(x) for s, (x, _) in splits.items()}
    assert not rows["train"] & rows["validation"]
    assert not rows["train"] & rows["test"]
    assert not rows["validation"] & rows["test"]
    train_x, train_y = splits["train"]
    assert train_x.dtype == np.float32 and train_x.shape[1:] == (8, 8, 1)
    assert train_y.dtype == np.int32 and set(train_y) == set(range(10))
    assert abs(train_x.mean()) < 0.05 and abs(train_x.std() - 1) < 0.05


def test_digits_training_is_deterministic_augmented_and_repeats():
    def first_batches(seed, n=12):  # 12 batches of 128 > 1,197: crosses an epoch.
        ds = data.make_dataset("digits", "train", 128, training=True, seed=seed)
        assert ds.element_spec[0].shape == (128, 8, 8, 1)
        assert ds.element_spec[1].shape == (128,) and ds.element_spec[1].dtype == tf.int32
        return [x.numpy() for x, _ in ds.take(n)]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    plain = _rows(_collect(data.make_dataset("digits", "train", 1197, training=False))[0])
    augmented = _rows(np.concatenate(a))
    assert augmented - plain  # Some images were shifted.


def test_digits_sharding_gives_disjoint_halves():
    halves = [
        _collect(data.make_dataset("digits", "validation", 4, training=False, input_context=_context(i)))[0]
        for i in range(2)
    ]
    assert [len(h) for h in halves] == [150, 150]  # Per-replica batch of 2.
    everything = _collect(data.make_dataset("digits", "validation", 300, training=False))[0]
    assert not _rows(halves[0]) & _rows(halves[1])
    assert _rows(halves[0]) | _rows(halves[1]) == _rows(everything)


def test_take_images():
    images = data.take_images("digits", "train", 64, seed=3)
    assert images.shape == (64, 8, 8, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images, data.take_images("digits", "train", 64, seed=3))
    assert not np.array_equal(images, data.take_images("digits", "train", 64, seed=4))
    plain = _rows(_collect(data.make_dataset("digits", "train", 1197, training=False))[0])
    assert _rows(images) <= plain  # Not augmented.
    with pytest.raises(UserError, match="count=1198 is larger than the 1197 examples"):
        data.take_images("digits", "train", 1198)


# --- TFDS: CIFAR-10 and ImageNet code on tiny offline datasets ---------------------------


def test_cifar_info_counts_the_sliced_splits(fake_cifar):
    info = data.dataset_info("cifar10", data_dir=fake_cifar)
    assert info == data.DatasetInfo(
        "cifar10", (32, 32, 3), 10, {"train": 40, "validation": 20, "test": 20}, 1
    )


def test_cifar_validation_is_the_held_out_tail_of_train(fake_cifar):
    def ids(split):
        ds = data.make_dataset("cifar10", split, 10, training=False, data_dir=fake_cifar)
        return _cifar_ids(_collect(ds)[0])

    train, validation, test = ids("train"), ids("validation"), ids("test")
    stored = tfds.load(fake.FAKE_CIFAR, split="train", data_dir=fake_cifar, shuffle_files=False)
    stored_ids = [fake.decode_id(e["image"].numpy()) for e in stored]
    assert train == stored_ids[:40] and validation == stored_ids[40:]
    assert sorted(train + validation) == list(range(60))
    assert sorted(test) == list(range(1000, 1020))


def test_full_train_is_train_then_validation(fake_cifar):
    """`FULL_TRAIN` (retrain --full_train, §3.4) reads both parts through one TFDS split expression."""
    info = data.dataset_info("cifar10", data_dir=fake_cifar)
    assert data.split_size(info, data.FULL_TRAIN) == 60

    def ids(split, batch):
        ds = data.make_dataset("cifar10", split, batch, training=False, data_dir=fake_cifar)
        return _cifar_ids(_collect(ds)[0])

    assert sorted(ids(data.FULL_TRAIN, 60)) == sorted(ids("train", 40) + ids("validation", 20)) == list(range(60))
    batch = next(iter(data.make_dataset("cifar10", data.FULL_TRAIN, 8, training=True, data_dir=fake_cifar)))
    assert batch[0].shape == (8, 32, 32, 3)
    assert data.take_images("cifar10", data.FULL_TRAIN, 60, data_dir=fake_cifar).shape == (60, 32, 32, 3)
    with pytest.raises(UserError, match="larger than the 60 examples of cifar10 train\\+validation"):
        data.make_dataset("cifar10", data.FULL_TRAIN, 61, training=True, data_dir=fake_cifar)


def test_cifar_training_augments_keeps_shape_and_is_deterministic(fake_cifar):
    def batches(seed):
        ds = data.make_dataset("cifar10", "train", 8, training=True, data_dir=fake_cifar, seed=seed)
        assert ds.element_spec[0].shape == (8, 32, 32, 3)
        return [x.numpy() for x, _ in ds.take(7)]  # 56 > 40: repeats.

    a = batches(0)
    np.testing.assert_array_equal(np.stack(a), np.stack(batches(0)))
    assert not np.array_equal(a[0], batches(1)[0])
    plain = _rows(_collect(data.make_dataset("cifar10", "train", 40, training=False, data_dir=fake_cifar))[0])
    assert len(_rows(np.concatenate(a)) - plain) > 40  # Cropped or flipped copies.
    assert np.isfinite(np.stack(a)).all()


def test_cifar_sharding_gives_disjoint_halves(fake_cifar):
    halves = [
        _cifar_ids(
            _collect(
                data.make_dataset(
                    "cifar10", "validation", 4, training=False, data_dir=fake_cifar, input_context=_context(i)
                )
            )[0]
        )
        for i in range(2)
    ]
    assert [len(h) for h in halves] == [10, 10]
    everything = _cifar_ids(
        _collect(data.make_dataset("cifar10", "validation", 20, training=False, data_dir=fake_cifar))[0]
    )
    assert not set(halves[0]) & set(halves[1])
    assert set(halves[0]) | set(halves[1]) == set(everything)


def test_imagenet_preprocessing_yields_224(fake_dir, monkeypatch):
    source = dataclasses.replace(
        data.TFDS_SOURCES["imagenet2012"],
        tfds_name=fake.FAKE_IMAGENET,
        train="train[4:]",
        validation="train[:4]",
    )
    monkeypatch.setitem(data.TFDS_SOURCES, "imagenet2012", source)
    info = data.dataset_info("imagenet2012", data_dir=fake_dir)
    assert info == data.DatasetInfo(
        "imagenet2012", (224, 224, 3), 1000, {"train": 8, "validation": 4, "test": 6}, 4
    )
    for split, training in (("train", True), ("validation", False), ("test", False)):
        x, y = next(iter(data.make_dataset("imagenet2012", split, 4, training=training, data_dir=fake_dir)))
        assert x.shape == (4, 224, 224, 3) and y.dtype == tf.int32
        assert np.isfinite(x.numpy()).all()
    images = data.take_images("imagenet2012", "train", 2, data_dir=fake_dir)
    assert images.shape == (2, 224, 224, 3)
