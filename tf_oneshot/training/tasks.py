"""Single-replica train and eval steps: the one-shot model under a sampler, and a stand-alone model.

A task holds a model, its loss and its L2 term and knows one replica; only
`tf_oneshot.training.strategy_loop` runs it across replicas. The data loss is averaged
over the global batch and the L2 term divided by the number of replicas, so
the gradients summed across replicas equal the single-replica ones (Bender et
al. 2018, §4.1: synchronous SGD over 16 workers). Each step returns a vector
of sums that the host loop adds up over replicas and steps: data loss,
correct predictions, examples, L2, skipped (non-finite) steps.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_oneshot.layers.common import nested_layers
from tf_oneshot.layers.quantize import decayed_weights

TOTALS = 5  # data loss, correct, examples, L2, skipped steps


def agree_on_finite(grads: list[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
    """Makes every replica see non-finite gradients if any replica has them.

    Keras' LossScaleOptimizer decides to skip a step from the first replica's
    gradients *before* they are all-reduced; a replica-local overflow would then
    be applied as inf. One scalar all-reduce makes the decision global.

    Returns:
        The gradients (NaN everywhere if any replica overflowed) and a float
        that is 1.0 when the step's gradients are finite on every replica.
    """
    local_bad = tf.cast(
        tf.logical_not(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])),
        tf.float32,
    )
    bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local_bad)
    finite = tf.cast(tf.equal(bad, 0.0), tf.float32)
    poison = tf.where(finite > 0, 1.0, float("nan"))
    return [None if g is None else g * tf.cast(poison, g.dtype) for g in grads], finite


class _Task:
    """Loss, gradient and optimizer update shared by both tasks."""

    def __init__(self, model: Any, optimizer: Any, global_batch: int, replicas: int,
                 weight_decay: float, loss_scaling: bool = False) -> None:
        self.model = model
        self.optimizer = optimizer
        self.global_batch = int(global_batch)
        self.replicas = int(replicas)
        self.weight_decay = float(weight_decay)
        self.loss_scaling = loss_scaling

    def _update(self, labels, logits_fn, l2_fn) -> tf.Tensor:
        with tf.GradientTape() as tape:
            # Mixed precision: the network computes in bfloat16/float16, the loss in float32.
            logits = tf.cast(logits_fn(), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            data_loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            l2 = tf.cast(self.weight_decay * l2_fn(), tf.float32)
            loss = data_loss + l2 / self.replicas
            scaled = self.optimizer.scale_loss(loss) if self.loss_scaling else loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        finite = tf.constant(1.0)
        if self.loss_scaling:
            grads, finite = agree_on_finite(grads)
        self.optimizer.apply_gradients(zip(grads, variables))
        return _sums(per_example, logits, labels, l2 / self.replicas, (1.0 - finite) / self.replicas)


def _sums(per_example, logits, labels, l2, skipped) -> tf.Tensor:
    correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
    return tf.stack([tf.reduce_sum(per_example), correct, tf.cast(tf.size(labels), tf.float32), l2, skipped])


def accuracy_sums(logits, labels) -> tf.Tensor:
    """[correct, examples] of one replica's evaluation batch."""
    hits = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels)
    return tf.stack([tf.reduce_sum(tf.cast(hits, tf.float32)), tf.cast(tf.size(labels), tf.float32)])


def evaluation_sums(logits, labels) -> tf.Tensor:
    """[correct, examples, summed cross-entropy] of one replica's evaluation batch.

    The loss ranks models whose accuracies tie on a small validation set
    ("Deeper insights" §3.1 ground truth on 300 digits: steps of 1/300).
    """
    logits = tf.cast(logits, tf.float32)
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return tf.concat([accuracy_sums(logits, labels), tf.reduce_sum(loss)[None]], 0)


class OneShotTask(_Task):
    """One replica's step of one-shot training: the sampler's paths, L2 on active paths only.

    The sampler draws masks for every ghost batch of the *global* batch from
    (seed, step) on the host (or in the graph, path dropout); this replica
    keeps its own slice, so 1 or N replicas train on the same paths (Bender et
    al. 2018, §3.2: one pattern per ghost batch). The L2 term weighs each
    kernel by the share of the global ghost batches using it (§3.2,
    "Preventing over-regularization").

    Args:
        model: a `tf_oneshot.OneShotModel`.
        sampler: a `tf_oneshot.training.samplers.Sampler`.
        optimizer: a built Keras optimizer.
        step: the global step variable (drives in-graph sampling).
        seed: the run's seed.
        global_batch, replicas, local_ghosts: the batch layout.
        weight_decay: the L2 coefficient.
        loss_scaling: float16 loss scaling.
    """

    def __init__(self, model, sampler, optimizer, step: tf.Variable, seed: int, global_batch: int,
                 replicas: int, local_ghosts: int, weight_decay: float, loss_scaling: bool = False) -> None:
        super().__init__(model, optimizer, global_batch, replicas, weight_decay, loss_scaling)
        self.sampler = sampler
        self.step = step
        self.seed = tf.constant([int(seed), 0], tf.int64)
        self.local_ghosts = int(local_ghosts)

    def train_step(self, batch, masks: dict[str, tf.Tensor], skip: bool) -> tf.Tensor:
        """One step on this replica's examples; `masks` are the global [G, ...] host masks."""
        images, labels = batch
        masks = self.sampler.in_graph(masks, self.step.read_value(), self.seed)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        mine = {k: tf.gather(v, replica * self.local_ghosts + tf.range(self.local_ghosts))
                for k, v in masks.items()}
        return self._update(
            labels,
            lambda: self.model({"images": images, **mine}, training=True, skip_inactive=skip),
            lambda: self.model.masked_l2(masks),
        )

    def eval_step(self, batch, masks: dict[str, tf.Tensor]) -> tf.Tensor:
        """[correct, examples] with the given masks ([G, ...] or one architecture)."""
        images, labels = batch
        return accuracy_sums(self.model({"images": images, **masks}, training=False), labels)


class StandaloneTask(_Task):
    """One replica's step of a stand-alone Keras model: plain L2 on its kernels and PACT clips (§3.4, §4.1)."""

    def __init__(self, model, optimizer, global_batch: int, replicas: int, weight_decay: float) -> None:
        super().__init__(model, optimizer, global_batch, replicas, weight_decay)
        self.kernels = decayed_weights(nested_layers(model))

    def train_step(self, batch, per_step=None) -> tf.Tensor:
        images, labels = batch
        return self._update(
            labels,
            lambda: self.model(images, training=True),
            lambda: tf.add_n([tf.reduce_sum(tf.square(k)) for k in self.kernels]),
        )

    def eval_step(self, batch) -> tf.Tensor:
        images, labels = batch
        return accuracy_sums(self.model(images, training=False), labels)


class FixedChildTask(_Task):
    """One replica's step of a single child inside the one-shot model: stand-alone training, traced once.

    The child enters as masks held in variables (`masks`, one per mask key,
    without the ghost axis), so one traced step trains every child of a
    space, each from its own fresh weights ("Deeper insights" §3.1 ground
    truth). With the masks fixed, the one-shot model computes exactly the
    child's network (the space contract: one-shot logits equal the
    stand-alone model's), the ops off get zero gradient, and the masked L2
    decays exactly the child's kernels, so each step equals the child's
    stand-alone step.
    """

    def __init__(self, model, optimizer, masks: dict[str, tf.Variable], global_batch: int, replicas: int,
                 weight_decay: float) -> None:
        super().__init__(model, optimizer, global_batch, replicas, weight_decay)
        self.masks = masks

    def inputs(self, images) -> dict[str, tf.Tensor]:
        """The one-shot model's inputs: the images and the child's masks (tiled over ghost batches)."""
        return {"images": images, **{k: v.read_value() for k, v in self.masks.items()}}

    def eval_logits(self, images) -> tf.Tensor:
        """Inference logits of any number of images (statically known).

        The one-shot model takes whole ghost batches; evaluation with moving
        statistics treats every image alone, so zero images pad the batch
        and their logits are dropped.
        """
        count = int(images.shape[0])
        pad = -count % self.model.ghost_batch_size
        padded = tf.pad(images, [[0, pad]] + [[0, 0]] * (images.shape.rank - 1)) if pad else images
        return self.model(self.inputs(padded), training=False)[:count]

    def train_step(self, batch, per_step=None) -> tf.Tensor:
        images, labels = batch
        masks = {k: v.read_value()[None] for k, v in self.masks.items()}  # one ghost row: the child
        return self._update(
            labels,
            lambda: self.model(self.inputs(images), training=True),
            lambda: self.model.masked_l2(masks),
        )
