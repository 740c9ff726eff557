"""K children of the darts64 space in one network, each with its own weights (HFTA, Wang et al. MLSys 2021).

The ground truth of the 64-child space ("Deeper insights" §3.1) trains every
child from scratch; at digits scale a child's step is a few hundred tiny
operators, so K children run one at a time (or as K graphs in one step) cost
K times those operators. HFTA (§3) fuses the same operator of many models
horizontally: `Darts64FusedModel` mirrors the one-shot model layer for layer
with `tf_oneshot.layers.stacked` twins, the K children side by side on the
channel axis, so K children cost about the operators of one. Each child runs
under its own fixed masks, [K, 4] per edge: an op that some child of the
group uses runs for all K, and a child's ops off are multiplied by 0 (exact
zeros forward, zero gradients back); an op with weights no child uses is skipped
(tf.cond, as in the one-shot model). One graph serves every group.

    model({"images": [K, N, H, W, C], "edge_01": [K, 4], ...}, training=...) -> logits [K, N, classes]
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.layers.choice import masked_sum, skip_which
from tf_oneshot.layers.common import apply_layers, nested_layers, track_layers
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.layers.stacked import join, split, stacked_kernels, stacked_layers
from tf_oneshot.search_spaces.darts64.model import Darts64OneShotModel
from tf_oneshot.search_spaces.darts64.space import EDGE_KEYS


class Darts64FusedModel(keras.Model):
    """K fully independent children of a darts64 space in one network (no weight sharing between them).

    Args:
        oneshot: a fully shared one-shot model of the space: the template
            whose layers are mirrored and whose weight order `set_children`
            and `child_weights` follow.
        children: K.
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: a one-shot model with copies of its weights (partial sharing).
    """

    def __init__(self, oneshot: Darts64OneShotModel, children: int, **kwargs) -> None:
        if oneshot.shared_segments is not None:
            raise ValueError(f"a fused model mirrors a fully shared one-shot model. Received: "
                             f"shared_segments={oneshot.shared_segments!r}")
        super().__init__(**kwargs)
        self.space, self.count, self.ghost_batch_size = oneshot.space, children, oneshot.ghost_batch_size
        pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

        def twins(prefix: str, layers: Sequence[keras.layers.Layer]) -> list[keras.layers.Layer]:
            out = track_layers(self, prefix, stacked_layers(layers, children))
            pairs.extend(zip(layers, out))
            return out

        self.stem = twins("stem", oneshot.stem)
        self.cell_inputs, self.edge_ops = [], []
        for k, edges in enumerate(oneshot.edge_ops):
            self.cell_inputs.append(twins(f"cell{k}_input", oneshot.cell_inputs[k]))
            self.edge_ops.append([[twins(f"cell{k}_edge{e}_op{o}_", layers) for o, layers in enumerate(ops)]
                                  for e, ops in enumerate(edges)])
        self.head = twins("head", [oneshot.head_bn, oneshot.classifier])
        index = {id(weight): i for i, weight in enumerate(oneshot.weights)}
        # (the template's weight index, the child's shape, the twin weight holding K of them)
        self.links = sorted((index[id(w)], tuple(w.shape), t) for layer, twin in pairs
                            for w, t in zip(layer.weights, twin.weights))
        if len(self.links) != len(oneshot.weights):
            raise ValueError(f"the fused model mirrors {len(self.links)} of the one-shot model's "
                             f"{len(oneshot.weights)} weights.")
        self.built = True

    # --------------------------------------------------------------- weights
    def set_children(self, weights: Sequence[Sequence[np.ndarray]]) -> None:
        """Gives child k the one-shot weights `weights[k]` (a `get_weights()` list of the template's model)."""
        for i, _, twin in self.links:
            join(twin, [child[i] for child in weights])

    def child_weights(self, child: int) -> list[np.ndarray]:
        """Child `child`'s weights, as the template's `get_weights()` lists them."""
        return [split(twin.numpy(), shape)[child] for _, shape, twin in self.links]

    def set_bn_mode(self, mode: str) -> None:
        """Sets every ghost batch norm's mode ("moving", "recalibrate", ...), read when a function is traced."""
        for layer in nested_layers(self):
            if isinstance(layer, GhostBatchNormalization):
                layer.set_mode(mode)

    # ------------------------------------------------------------------ call
    def _per_channel(self, mask: tf.Tensor, width: int) -> tf.Tensor:
        """[K, ops] -> [K * width, ops]: each child's mask on each of its channels."""
        mask = tf.cast(mask, self.compute_dtype)
        return tf.reshape(tf.broadcast_to(mask[:, None], [self.count, width, mask.shape[-1]]), [-1, mask.shape[-1]])

    def _join_channels(self, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        """Each child's channels of `a` then of `b` (the cell output's concatenation, App. A.1)."""
        shape = tf.shape(a)
        split_ = [tf.reshape(t, tf.concat([shape[:-1], [self.count, -1]], 0)) for t in (a, b)]
        return tf.reshape(tf.concat(split_, -1), tf.concat([shape[:-1], [-1]], 0))

    def call(self, inputs, training=None):
        """Logits [K, N, classes] of each child on its own images [K, N, H, W, C] under its [K, 4] masks."""
        images = tf.cast(inputs["images"], self.compute_dtype)
        shape = tf.shape(images)
        x = tf.reshape(tf.transpose(images, [1, 2, 3, 0, 4]), tf.concat([shape[1:4], [-1]], 0))
        rows = [self._per_channel(inputs[key], self.space.filters) for key in EDGE_KEYS]
        x = apply_layers(self.stem, x, training)
        for inputs_, edges in zip(self.cell_inputs, self.edge_ops):
            x0 = apply_layers(inputs_, x, training)

            def edge(e: int, h, edges=edges):
                # An op with weights no child of the group uses is skipped (tf.cond), as in the one-shot model;
                # weightless ops run masked, max pooling skipped on CPUs without oneDNN (`tf_oneshot.layers.choice`).
                branches = [lambda layers=layers, o=o: apply_layers(layers, h, training) * rows[e][:, o]
                            for o, layers in enumerate(edges[e])]
                skips = skip_which(True, edges[e])
                active = [tf.reduce_max(rows[e][:, o]) > 0 if skip else None for o, skip in enumerate(skips)]
                return masked_sum(branches, active, skips, lambda: tf.zeros_like(h))

            x1 = edge(0, x0)
            x = self._join_channels(x1, edge(1, x0) + edge(2, x1))
        bn, dense = self.head
        return dense(tf.reduce_mean(tf.nn.relu(bn(x, training=training)), axis=[1, 2]))

    def masked_l2(self, masks) -> tf.Tensor:
        """[K]: each child's sum of squared kernels, those of its ops off excluded ("Deeper insights" §3.1).

        The stand-alone child's L2 (Bender et al. 2018, §4.1), as the one-shot
        model's `masked_l2` gives it for one child: the stem, the cells' 1x1
        convs and the classifier always, an op's kernels when the child uses it.
        """
        def squares(kernels) -> tf.Tensor:
            return tf.add_n([tf.reduce_sum(tf.reshape(tf.square(k), [self.count, -1]), 1) for k in kernels])

        total = squares(stacked_kernels([*self.stem, *[layer for unit in self.cell_inputs for layer in unit],
                                         *self.head]))
        for edges in self.edge_ops:
            for e, key in enumerate(EDGE_KEYS):
                mask = tf.cast(masks[key], tf.float32)
                for o, layers in enumerate(edges[e]):
                    kernels = stacked_kernels(layers)
                    if kernels:
                        total += squares(kernels) * mask[:, o]
        return total
