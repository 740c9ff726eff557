"""The training recipe's optimizer, written once for the supernet and for every child.

Bender et al. 2018, §4.1: SGD with Nesterov momentum 0.9, a learning rate
decayed to 0 by a cosine schedule; "Deeper insights" (App. A.1) trains with
plain momentum, a cosine from 0.025 to 0.001 and its own batch-norm momentum. SPOS (§4) trains with ShuffleNetV2's
linear decay. NAO-V2 (§4.3, Fig. 2a) trains each iteration of an iterated
search as an independent segment: its own cosine cycle, momentum cleared.

The rate is a function of a global step variable of our own (`global_step`),
not of the optimizer's iteration count, which LossScaleOptimizer does not
advance on a skipped step: the one-shot trainer checkpoints that step, and a
child trainer (`tf_oneshot.training.child`) sets it back to 0 for each child.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from tf_oneshot.layers.common import nested_layers
from tf_oneshot.layers.ghost_batch_norm import GhostBatchNormalization
from tf_oneshot.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Segment:
    """Global steps [start, end) trained as one iteration of an iterated search (NAO-V2 §4.3).

    `independent` (Fig. 2a): the cosine cycle spans exactly [start, end) and
    restarts at `start`, and the optimizer's slots (momentum) are zeroed when
    training enters the segment at `start`. Otherwise (Fig. 2b) one schedule
    runs over `config.train_steps` and the slots carry over.
    """

    start: int
    end: int
    independent: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a segment needs 0 <= start < end. Received: start={self.start}, end={self.end}")


def decay_schedule(rate: float, steps: int, schedule: str,
                   end_rate: float = 0.0) -> keras.optimizers.schedules.LearningRateSchedule | None:
    """`rate` decayed to `end_rate` over `steps`, or None for "constant".

    "cosine": Bender et al. 2018, §4.1 (to 0); "Deeper insights" App. A.1
    (0.025 to 0.001). "linear": ShuffleNetV2's schedule, which SPOS (§4,
    "the same settings as [ShuffleNetV2]") trains with.
    """
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, steps, alpha=end_rate / rate)
    if schedule == "linear":
        return keras.optimizers.schedules.PolynomialDecay(rate, steps, end_learning_rate=end_rate, power=1.0)
    return None


def learning_rate_schedule(config: TrainConfig, segment: Segment | None = None) -> Callable[[tf.Tensor], tf.Tensor]:
    """Learning rate as a function of the global step (§4.1: 0.1 to start).

    With an independent `segment`, the decay is the segment's own (NAO-V2
    §4.3, Fig. 2a): it starts at `segment.start` from the full rate.
    """
    independent = segment is not None and segment.independent
    steps = segment.end - segment.start if independent else config.train_steps
    decay = decay_schedule(config.optimizer.learning_rate, steps, config.optimizer.lr_schedule,
                           config.optimizer.end_learning_rate)
    if decay is None:
        return lambda step: tf.constant(config.optimizer.learning_rate, tf.float32)
    return (lambda step: decay(step - segment.start)) if independent else decay


def global_step() -> tf.Variable:
    """The step variable the learning rate is read from; create it inside `strategy.scope()`.

    The host loop (`strategy_loop.train_loop(counter=...)`) adds 1 per step,
    once for all replicas.
    """
    return tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class _Slots:
    """variable (or a replica's copy of it) -> its momentum; a plain holder, so nothing is tracked twice."""

    def __init__(self) -> None:
        self.of: dict[int, keras.Variable] = {}


class MomentumSGD(keras.optimizers.SGD):
    """Keras' SGD, its momentum step one kernel per variable (`ResourceApplyKerasMomentum`).

    Keras 3 writes SGD's step as about ten element-wise ops per variable. A
    one-shot model updates every one of its hundreds of small variables each
    step (Bender et al. 2018, §3.2: all paths are trained); over the 827
    weights of compare_revisions' supernet the update alone ran 2.6x faster
    on a CPU, though the whole step's gain stayed within its noise
    (`benchmarks/optimizer_step.py`). TensorFlow's training kernel computes
    Keras' own formula, which tf.keras's SGD ran until Keras 3:
    m = momentum * m - lr * g, then var += m, or with Nesterov
    var += momentum * m - lr * g. Without momentum, with sparse gradients
    and for a variable it was not built for, it is Keras' update.
    """

    def build(self, variables) -> None:
        if self.built:
            return
        super().build(variables)
        self._slots = _Slots()
        if self.momentum:
            local = tf.distribute.get_strategy().experimental_local_results
            for variable, momentum in zip(variables, self.momentums):
                value = variable.value if isinstance(variable, keras.Variable) else variable
                for key in {id(value), *(id(v) for v in local(value))}:
                    self._slots.of[key] = momentum

    def update_step(self, gradient, variable, learning_rate) -> None:
        momentum = self._slots.of.get(id(variable)) if self.momentum else None
        if momentum is None or isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        dtype = variable.dtype
        lr, coefficient = self._step_constants(learning_rate, dtype)
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle, lr=lr,
            grad=tf.cast(gradient, dtype), momentum=coefficient, use_nesterov=self.nesterov)

    def apply(self, grads, trainable_variables=None):
        """Keras' update; the rate and momentum tensors of its variables are made once (`_step_constants`)."""
        self.__dict__["_constants_of"] = {}  # not tracked: no Keras state, dropped when the update is built
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self.__dict__["_constants_of"] = None

    def _step_constants(self, learning_rate, dtype) -> tuple[tf.Tensor, tf.Tensor]:
        """(rate, momentum) as tensors of `dtype`, made once per update rather than once per variable.

        Keras passes every variable of one update the same `learning_rate`;
        casting it (reading it, where it is a variable) and writing the
        momentum constant per variable put ~2 ops per variable into the
        traced step: ~1,100 of the demo supernet's (`benchmarks/first_step.py`).
        The cache lives for one `apply` only, so no later trace reuses its tensors.
        """
        cache = self.__dict__.get("_constants_of")
        if cache is None:  # outside `apply`: nothing to share
            cache = {}
        if cache.get("rate") is not learning_rate:
            cache.clear()
            cache["rate"] = learning_rate
        if dtype not in cache:
            cache[dtype] = (tf.cast(learning_rate, dtype), tf.constant(self.momentum, dtype))
        return cache[dtype]


def make_optimizer(config: TrainConfig, step: tf.Variable, segment: Segment | None = None,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    """SGD with momentum `config.optimizer.momentum`, Nesterov's if `nesterov` (§4.1), its rate read from `step`.

    Build it eagerly inside `strategy.scope()` (`optimizer.build(variables)`):
    a first build inside a tf.function fails under MirroredStrategy (DESIGN.md).

    Args:
        config: learning_rate, end_learning_rate, lr_schedule, train_steps, momentum and nesterov.
        step: the `global_step` variable.
        segment: an iteration of NAO-V2's iterated search (`learning_rate_schedule`).
        loss_scaling: wrap it in a LossScaleOptimizer (float16 training).
    """
    schedule = learning_rate_schedule(config, segment)
    optimizer = MomentumSGD(learning_rate=lambda: schedule(step), momentum=config.optimizer.momentum,
                            nesterov=config.optimizer.nesterov)
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def set_bn_momentum(model: keras.Model, config: TrainConfig) -> keras.Model:
    """Gives every batch norm of `model` the recipe's `bn_momentum` ("Deeper insights" App. A.1); returns it.

    The spaces build their normalizations with Keras' 0.99; the training
    setting, not the architecture, owns the momentum, so it is set once here
    for the supernet and every child (both layers read it at each call).
    """
    for layer in nested_layers(model):
        if isinstance(layer, (GhostBatchNormalization, keras.layers.BatchNormalization)):
            layer.momentum = config.optimizer.bn_momentum
    return model


def reset_slots(optimizer: keras.optimizers.Optimizer) -> None:
    """Zeroes the optimizer's slots (momentum), keeping a float16 loss scale (NAO-V2 §4.3)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    for variable in inner.variables:
        if variable is not inner.iterations:
            variable.assign(tf.zeros_like(variable))
