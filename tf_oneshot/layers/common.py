"""Building blocks every search space's networks share.

Bender et al. 2018, §3.2: every convolution is preceded by batch norm and
ReLU ("BN-ReLU-Conv"), convolutions have no bias (the next batch norm has
one). A unit is a list of plain Keras layers, defined once: a one-shot model
runs the list inside its own layers, and a stand-alone builder applies the
same list functionally, so both networks have the same layers and names, and
stand-alone weights are slices of one-shot weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization

KERNEL_INITIALIZER = "he_normal"  # suits ReLU nets; Keras' Glorot default does not


def normalization(ghost_batch_size: int | None, name: str, eval_mode: str = "batch") -> keras.layers.Layer:
    """Ghost batch norm, or plain Keras batch norm when `ghost_batch_size` is None."""
    if ghost_batch_size is None:
        return keras.layers.BatchNormalization(name=name)
    return GhostBatchNormalization(ghost_batch_size, eval_mode=eval_mode, name=name)


def conv(filters: int, kernel_size, name: str, strides: int = 1, separable: bool = False,
         depthwise: bool = False) -> keras.layers.Layer:
    """A bias-free convolution with "same" padding and the package's initializer."""
    if depthwise:
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer=KERNEL_INITIALIZER, name=name,
        )
    if separable:
        return keras.layers.SeparableConv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer=KERNEL_INITIALIZER, pointwise_initializer=KERNEL_INITIALIZER, name=name,
        )
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INITIALIZER, name=name,
    )


def bn_relu_conv(
    filters: int,
    kernel_size: int | tuple[int, int],
    ghost_batch_size: int | None,
    name: str,
    strides: int = 1,
    separable: bool = False,
    eval_mode: str = "batch",
) -> list[keras.layers.Layer]:
    """BN -> ReLU -> convolution without bias (Bender et al. 2018, §3.2)."""
    suffix = "sepconv" if separable else "conv"
    return [
        normalization(ghost_batch_size, f"{name}_bn", eval_mode),
        keras.layers.ReLU(name=f"{name}_relu"),
        conv(filters, kernel_size, f"{name}_{suffix}", strides=strides, separable=separable),
    ]


def track_layers(owner, prefix: str, layers: Sequence) -> list:
    """Also sets each layer as an attribute `{prefix}{j}` of `owner` and returns `layers`.

    Keras tracks layers held in lists, but TensorFlow checkpoints
    (`tf.train.Checkpoint`, used by the trainer) only follow attributes; Keras
    counts each layer once either way.
    """
    for j, layer in enumerate(layers):
        setattr(owner, f"{prefix}{j}", layer)
    return list(layers)


def apply_layers(layers: Sequence[keras.layers.Layer], x, training=None):
    """Applies `layers` in order, passing `training` to the normalizations."""
    for layer in layers:
        if isinstance(layer, (GhostBatchNormalization, keras.layers.BatchNormalization)):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


def build_layers(layers: Sequence[keras.layers.Layer], input_shape) -> tuple:
    """Builds `layers` in order for `input_shape`; returns the output shape."""
    shape = tuple(input_shape)
    for layer in layers:
        if not layer.built:
            layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def classifier_model(images, features, num_classes: int, name: str) -> keras.Model:
    """Global average pooling and the dense classifier on `features`, as the functional model images -> logits.

    Every space's stand-alone network ends this way; the layer names "pool"
    and "classifier" are those of the one-shot models, so the classifier's
    weights copy by name.
    """
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    logits = keras.layers.Dense(num_classes, name="classifier")(pooled)
    return keras.Model(images, logits, name=name)


def conv_kernels(layers) -> list:
    """The kernels (not biases, not batch norm) of convolution and Dense layers.

    Bender et al. 2018, §3.2 / §4.1: L2 applies to these, not to batch-norm
    scales and offsets.
    """
    kernels = []
    for layer in layers:
        if isinstance(layer, keras.layers.SeparableConv2D):
            kernels += [layer.depthwise_kernel, layer.pointwise_kernel]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kernels.append(layer.kernel)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernels.append(layer.kernel)
    return kernels


class LayerGroup(keras.layers.Layer):
    """A layer made of other layers, which it lists in `sublayers()` so that `nested_layers` finds them.

    Keras 3 lists the layers of a model (`keras.Model.layers`) but not those
    inside a plain layer; a container layer that is not a model says itself.
    """

    def sublayers(self) -> list[keras.layers.Layer]:
        """The layers this layer holds directly, in a fixed order."""
        raise NotImplementedError(f"{type(self).__name__} must list its layers in sublayers().")


def nested_layers(root) -> list[keras.layers.Layer]:
    """Every layer inside `root` (not `root` itself), each once, depth first.

    Walks the public `keras.Model.layers` of models and `LayerGroup.sublayers()`
    of container layers, so one-shot models find every ghost batch norm
    (`OneShotModel.set_bn_mode`), stand-alone models every kernel to decay
    (§3.4) and weights copy by layer name, without Keras internals.
    """
    found, seen = [], set()

    def visit(layer) -> None:
        if isinstance(layer, keras.Model):
            children = layer.layers
        elif isinstance(layer, LayerGroup):
            children = layer.sublayers()
        else:
            return
        for child in children:
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                visit(child)

    visit(root)
    return found


def copy_weights_by_name(oneshot, standalone, what: str = "the architecture", prefix: str = "",
                         sliced: bool = False) -> None:
    """Gives every stand-alone layer with weights those of its one-shot namesake.

    Spaces whose stand-alone layers carry the one-shot model's layer names
    inherit shared weights this way (`SearchSpace.inherit_weights`); with
    batch statistics in both, the two models then compute the same logits.

    Args:
        oneshot: the one-shot model (its layers are found by `nested_layers`).
        standalone: a Keras model of one architecture.
        what: the architecture, for messages.
        prefix: each layer is looked up first as `prefix + name`, then as
            `name` (the layers of a weight copy under partial sharing,
            "Deeper insights" §4.2-4.3; shared layers keep the plain name).
        sliced: take the leading sub-tensor of each larger one-shot weight
            (SPOS §3.3: Weights[:c_out, :c_in], for searched widths); False
            requires equal shapes.

    Raises:
        ValueError: if a stand-alone layer has no namesake in the one-shot
            model, or a weight of it is not (a leading slice of) its namesake's.
    """
    source = {layer.name: layer for layer in nested_layers(oneshot)}
    for layer in standalone.layers:
        if not layer.weights:
            continue
        namesake = source.get(prefix + layer.name) or source.get(layer.name)
        if namesake is None:
            tried = f"{prefix + layer.name!r} nor {layer.name!r}" if prefix else repr(layer.name)
            raise ValueError(f"the one-shot model has no layer {tried}; is the stand-alone model of {what} built "
                             "for the same space?")
        values = []
        for target, value in zip(layer.weights, namesake.get_weights(), strict=True):
            shape = tuple(target.shape)
            fits = len(shape) == value.ndim and all(t <= v for t, v in zip(shape, value.shape))
            if not fits or (not sliced and shape != value.shape):
                raise ValueError(f"{target.path} has shape {shape}, not {'a slice of ' if sliced else ''}the "
                                 f"one-shot {value.shape}.")
            values.append(value[tuple(slice(0, n) for n in shape)])
        layer.set_weights(values)
