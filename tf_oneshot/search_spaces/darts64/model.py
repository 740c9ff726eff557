"""The masked one-shot model of the darts64 space ("Deeper insights", §3.1, App. A.1).

Stem -> `num_cells` cells -> BN -> ReLU -> global average pooling -> dense
classifier. Each cell holds all four ops on each of its three edges; the
child enters only as masks, one row per ghost batch:

    model({"images": [N, H, W, C], "edge_01": [G, 4], "edge_02": [G, 4],
           "edge_12": [G, 4]}, training=...) -> logits [N, classes]

All cells read the same masks: §3.1 stacks cells "each of which has the same
chosen structure". An op with weights off in every ghost batch is skipped (`choose`), so
§3.1's "each mini-batch trains one child model" runs one op per edge.

The model is flat: every layer is an attribute with a globally unique name
(`layer_names`), which the stand-alone model reuses, so weights copy by name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_oneshot.layers.choice import choose, per_example, skip_which
from tf_oneshot.layers.common import (
    KERNEL_INITIALIZER,
    apply_layers,
    bn_relu_conv,
    build_layers,
    conv_kernels,
    normalization,
    track_layers,
)
from tf_oneshot.search_spaces.darts64.space import (
    EDGE_KEYS,
    EDGES,
    MAX_POOL,
    OP_NAMES,
    OPS,
    SEPARABLE_KERNELS,
    SKIP_CONNECT,
    Darts64Space,
)
from tf_oneshot.search_spaces.sharing import COPY_KEY
from tf_oneshot.search_spaces.supernet import OneShotModel, path_fraction, weighted_sum_of_squares


def op_prefix(cell: int, edge: tuple[int, int], op: int) -> str:
    """Name prefix of op digit `op` on `edge` of cell `cell` (shared by both models)."""
    return f"cell{cell}_edge{edge[0]}{edge[1]}_op{op}_{OP_NAMES[op - 1]}"


def op_layers(op: int, filters: int, ghost_batch_size: int | None, name: str,
              eval_mode: str = "batch") -> list[keras.layers.Layer]:
    """The layers of op digit `op` (1..4), applied in order; the skip connection has none.

    DARTS' ops (module docstring of `space`): a separable conv applied twice,
    each BN-ReLU-SepConv (Bender et al. 2018, §3.2), or a stride-1 3x3 max pool.
    """
    if op in SEPARABLE_KERNELS:
        k = SEPARABLE_KERNELS[op]
        return [layer for j in range(2)
                for layer in bn_relu_conv(filters, k, ghost_batch_size, f"{name}_{j}", separable=True,
                                          eval_mode=eval_mode)]
    if op == MAX_POOL:
        return [keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_maxpool")]
    if op == SKIP_CONNECT:
        return []
    raise ValueError(f"op must be one of {OPS}. Received: op={op!r}")


def stem_layers(space: Darts64Space, ghost_batch_size: int | None,
                eval_mode: str = "batch", prefix: str = "") -> list[keras.layers.Layer]:
    """The two stem convs of App. A.1: conv3x3 to `stem_filters`, then BN-ReLU-Conv3x3."""
    first = keras.layers.Conv2D(
        space.stem_filters, 3, strides=1 if space.stem_stride == 1 else 2, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER, name=f"{prefix}stem_conv",
    )
    return [first, *bn_relu_conv(space.stem_filters, 3, ghost_batch_size, f"{prefix}stem2",
                                 strides=2 if space.stem_stride == 4 else 1, eval_mode=eval_mode)]


def cell_input_layers(space: Darts64Space, cell: int, ghost_batch_size: int | None,
                      eval_mode: str = "batch", prefix: str = "") -> list[keras.layers.Layer]:
    """x0 of a cell: BN-ReLU-Conv1x1 of the previous cell's output to `filters` (§3.1)."""
    return bn_relu_conv(space.filters, 1, ghost_batch_size, f"{prefix}cell{cell}_input", eval_mode=eval_mode)


def copy_prefix(copy: int) -> str:
    """Name prefix of the layers of weight copy `copy` (partial sharing, "Deeper insights" §4.2-4.3).

    Copy 0 keeps the plain names, so a model with one copy is the fully shared
    model, weight for weight and name for name.
    """
    return "" if copy == 0 else f"copy{copy}_"


@keras.saving.register_keras_serializable(package="tf_oneshot")
class Darts64OneShotModel(OneShotModel):
    """The masked one-shot network (super-net) of a `Darts64Space`.

    Partial weight sharing ("Deeper insights", §4.2-4.3, `tf_oneshot.search_spaces.sharing`)
    cuts the network into `num_cells + 2` segments: the stem, each cell, and
    the head (BN and classifier). The first `shared_segments` have one copy;
    the others have `copies` copies, and the `copy` mask ([G, copies] one-hot)
    picks the copy of each ghost batch. A copy no ghost batch reads is skipped
    (tf.cond), so one traced function serves every child and copy.

    Args:
        space: the search space (its fields fix every layer size).
        ghost_batch_size: examples per ghost batch; each carries one child.
        skip_inactive: skip with tf.cond the ops off in every ghost batch.
        copies: copies of each unshared segment (partial sharing).
        shared_segments: None for full sharing (no `copy` mask), else the
            number of leading segments with a single copy.
        **kwargs: base model arguments (`name`, ...).

    Raises:
        ValueError: for a space that is not a Darts64Space, a bad ghost batch
            size, or copies / shared segments out of range.
    """

    def __init__(self, space: Darts64Space, ghost_batch_size: int, skip_inactive: bool = True, copies: int = 1,
                 shared_segments: int | None = None, **kwargs) -> None:
        if not isinstance(space, Darts64Space):
            raise ValueError(f"space must be a Darts64Space. Received: space={space!r}")
        if not isinstance(copies, int) or copies < 1 or (shared_segments is None and copies != 1):
            raise ValueError(f"copies must be a positive integer (1 without shared_segments). Received: "
                             f"copies={copies!r}, shared_segments={shared_segments!r}")
        if shared_segments is not None and not 0 <= shared_segments <= space.num_cells + 2:
            raise ValueError(f"shared_segments must lie in 0..{space.num_cells + 2}. "
                             f"Received: shared_segments={shared_segments!r}")
        super().__init__(space, ghost_batch_size, skip_inactive, **kwargs)
        self.copies = copies
        self.shared_segments = shared_segments
        if shared_segments is not None:
            self.mask_shapes = {**self.mask_shapes, COPY_KEY: (copies,)}
        gbs = ghost_batch_size
        # Per segment s, the layers of each of its copies; copy 0 is also the
        # plain attributes (stem, cell_inputs, edge_ops, head_bn, classifier).
        self.stem_copies = [track_layers(self, f"{copy_prefix(c)}stem", stem_layers(space, gbs, prefix=copy_prefix(c)))
                            for c in range(self.segment_copies(0))]
        self.cell_copies = []  # [cell][copy] -> (input layers, edge_ops[e][o])
        for k in range(space.num_cells):
            self.cell_copies.append([self._cell_layers(k, copy_prefix(c)) for c in range(self.segment_copies(k + 1))])
        self.head_copies = []
        for c in range(self.segment_copies(space.num_cells + 1)):
            p = copy_prefix(c)
            bn, dense = normalization(gbs, f"{p}head_bn"), keras.layers.Dense(space.num_classes, name=f"{p}classifier")
            setattr(self, f"{p}head_bn", bn)
            setattr(self, f"{p}classifier", dense)
            self.head_copies.append((bn, dense))
        self.stem = self.stem_copies[0]
        self.cell_inputs = [copies_[0][0] for copies_ in self.cell_copies]
        # self.edge_ops[k][e][o]: the layers of op OPS[o] on edge EDGES[e] of cell k (copy 0).
        self.edge_ops = [copies_[0][1] for copies_ in self.cell_copies]
        self.build()

    def dummy_inputs(self, batch: int) -> dict[str, tf.Tensor]:
        """All-on inputs; with copies, every copy on at weight 1 / copies (`SharedSpace.all_on_masks`)."""
        inputs = super().dummy_inputs(batch)
        if self.shared_segments is not None:
            ghosts = inputs["images"].shape[0] // self.ghost_batch_size
            inputs[COPY_KEY] = tf.fill([ghosts, self.copies], 1.0 / self.copies)
        return inputs

    def segment_copies(self, segment: int) -> int:
        """Copies of segment `segment` (0 stem, 1..num_cells the cells, num_cells + 1 the head)."""
        if self.shared_segments is None or segment < self.shared_segments:
            return 1
        return self.copies

    def _cell_layers(self, k: int, prefix: str) -> tuple[list, list]:
        gbs = self.ghost_batch_size
        inputs = track_layers(self, f"{prefix}cell{k}_input", cell_input_layers(self.space, k, gbs, prefix=prefix))
        edges = []
        for edge in EDGES:
            ops = []
            for op in OPS:
                name = prefix + op_prefix(k, edge, op)
                ops.append(track_layers(self, name + "_", op_layers(op, self.space.filters, gbs, name)))
            edges.append(ops)
        return inputs, edges

    # ---------------------------------------------------------------- build
    def build(self, input_shape=None) -> None:
        """Creates every weight of every copy; sizes come from the space, not from the input."""
        space = self.space
        for stem in self.stem_copies:
            shape = build_layers(stem, (None, *space.image_shape))
        for k in range(space.num_cells):
            for inputs, edges in self.cell_copies[k]:
                x0 = build_layers(inputs, shape)
                for ops in edges:
                    for layers in ops:
                        build_layers(layers, x0)
            shape = (*x0[:-1], 2 * space.filters)
        for bn, dense in self.head_copies:
            bn.build(shape)
            dense.build((None, shape[-1]))
        self.built = True

    def forward(self, images, masks, training=None, skip_inactive=True):
        """Logits from images, the [G, 4] masks of the three edges and (partial sharing) the copy mask."""
        gbs = self.ghost_batch_size
        rows = [per_example(masks[key], gbs) for key in EDGE_KEYS]  # [N, 4] each
        copy_rows = per_example(masks[COPY_KEY], gbs) if self.shared_segments is not None else None

        def segment(s: int, fn, shape):
            """fn(copy) over the copies of segment s, each example taking its own copy; `shape`: its output's."""
            if copy_rows is None or s < self.shared_segments:
                return fn(0)
            # Always skip the copies no ghost batch reads: at most G of them run.
            return choose([lambda c=c: fn(c) for c in range(self.copies)], copy_rows, True,
                          lambda: tf.zeros(shape, self.compute_dtype))

        def cell(k: int, c: int, x):
            inputs, edges = self.cell_copies[k][c]
            x0 = apply_layers(inputs, x, training)

            def edge(e: int, h):
                branches = [lambda layers=layers: apply_layers(layers, h, training) for layers in edges[e]]
                # Weightless ops run masked, max pooling skipped on CPUs without oneDNN (`tf_oneshot.layers.choice`).
                return choose(branches, rows[e], skip_which(skip_inactive, edges[e]), lambda: tf.zeros_like(h))

            x1 = edge(0, x0)
            x2 = edge(1, x0) + edge(2, x1)
            return tf.concat([x1, x2], -1)  # App. A.1: the cell output concatenates its nodes

        def head(c: int, x):
            bn, dense = self.head_copies[c]
            return dense(tf.reduce_mean(tf.nn.relu(bn(x, training=training)), axis=[1, 2]))

        n = tf.shape(images)[:1]
        (h, w) = self.space.resolutions()[1]
        x = segment(0, lambda c: apply_layers(self.stem_copies[c], images, training),
                    tf.concat([n, [h, w, self.space.stem_filters]], 0))
        for k in range(self.space.num_cells):
            x = segment(k + 1, lambda c, k=k, x=x: cell(k, c, x), tf.concat([n, [h, w, 2 * self.space.filters]], 0))
        return segment(self.space.num_cells + 1, lambda c, x=x: head(c, x), tf.concat([n, [self.space.num_classes]], 0))

    # -------------------------------------------------------------------- L2
    def masked_l2(self, masks) -> tf.Tensor:
        """Sum of squared kernels, each op's weighted by the share of ghost batches using it.

        "Deeper insights", §3.1: each mini-batch updates only the weights of its
        child, so weight decay must not shrink the others; as in Bender et al.
        2018, §3.2, the decay gradient of an op off in every ghost batch is
        exactly 0. The stem, the cells' 1x1 convs and the classifier are in
        every child and count fully; biases and batch norm are not decayed.
        With copies (§4.2-4.3), a copy's kernels count by the share of ghost
        batches that read that copy (and use the op).

        Args:
            masks: "edge_01", "edge_02", "edge_12", each [G, 4] (or [4]), the
                masks of the step, and "copy" [G, copies] with partial sharing.

        Returns:
            A scalar; multiply by the weight-decay coefficient.
        """
        def rows(key):
            mask = tf.cast(masks[key], tf.float32)
            return mask[None] if mask.shape.rank == 1 else mask

        edge_rows = [rows(key) for key in EDGE_KEYS]  # [G, 4] each
        copy_rows = rows(COPY_KEY) if self.shared_segments is not None else None

        def use(s: int, c: int):
            """[G, 1] whether each ghost batch reads copy c of segment s."""
            if copy_rows is None or s < self.shared_segments:
                return tf.ones_like(edge_rows[0][:, :1])
            return copy_rows[:, c:c + 1]

        terms = []
        for c, stem in enumerate(self.stem_copies):
            terms += [(kernel, tf.reduce_mean(use(0, c))) for kernel in conv_kernels(stem)]
        for k in range(self.space.num_cells):
            for c, (inputs, edges) in enumerate(self.cell_copies[k]):
                reads = use(k + 1, c)
                terms += [(kernel, tf.reduce_mean(reads)) for kernel in conv_kernels(inputs)]
                for e in range(len(EDGE_KEYS)):
                    fraction = path_fraction(reads * edge_rows[e])  # [4]
                    for o, layers in enumerate(edges[e]):
                        share = fraction[o]  # one tensor for the op's kernels (weighted_sum_of_squares)
                        terms += [(kernel, share) for kernel in conv_kernels(layers)]
        for c, (_, dense) in enumerate(self.head_copies):
            terms += [(kernel, tf.reduce_mean(use(self.space.num_cells + 1, c))) for kernel in conv_kernels([dense])]
        return weighted_sum_of_squares(terms)

    def get_config(self) -> dict:
        return {**super().get_config(), "copies": self.copies, "shared_segments": self.shared_segments}
