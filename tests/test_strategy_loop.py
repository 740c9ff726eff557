"""The host loop (`strategy_loop.train_loop`): what it sums, and that the replica step is traced inline."""

import numpy as np
import tensorflow as tf

from tf_oneshot.training import strategy_loop


def _loop(jit_compile: bool = False):
    strategy = tf.distribute.get_strategy()
    weight = tf.Variable(0.0)
    counter = tf.Variable(0, dtype=tf.int64)

    def replica_step(batch, per_step):
        # Reads what the update wrote: the sums must see this step's assign, not the last step's.
        weight.assign_add(tf.reduce_sum(batch) * per_step["scale"])
        return tf.stack([weight.read_value(), tf.cast(counter.read_value(), tf.float32)])

    loop = strategy_loop.train_loop(strategy, replica_step, 2, jit_compile=jit_compile, counter=counter)
    batches = iter(tf.data.Dataset.range(1, 10).map(lambda i: tf.fill([2], tf.cast(i, tf.float32))))
    return loop, batches, weight, counter


def test_the_loop_sums_each_step_after_its_own_update_and_counts_the_steps():
    loop, batches, weight, counter = _loop()
    scale = {"scale": tf.constant([1.0, 0.5, 2.0])}
    totals = loop(batches, tf.constant(3), scale).numpy()
    # Batches 1, 2, 3 (sums 2, 4, 6) scaled by 1, 0.5, 2: the weight goes 2, 4, 16.
    np.testing.assert_allclose(totals, [2 + 4 + 16, 0 + 1 + 2])
    assert float(weight.numpy()) == 16.0 and int(counter.numpy()) == 3


def _call_ops(concrete) -> list[str]:
    library = concrete.graph.as_graph_def().library.function
    return [node.op for function in library for node in function.node_def if node.op.endswith("PartitionedCall")]


def test_the_replica_step_is_traced_inline_unless_xla_compiles_it():
    """A function of its own would nest one more graph that every captured variable passes through (trace time)."""
    loop, batches, _, _ = _loop()
    concrete = loop.get_concrete_function(batches, tf.constant(1), {"scale": tf.constant([1.0])})
    assert _call_ops(concrete) == []

    loop, batches, _, _ = _loop(jit_compile=True)
    concrete = loop.get_concrete_function(batches, tf.constant(1), {"scale": tf.constant([1.0])})
    assert _call_ops(concrete), "an XLA replica step is a function call of its own (compiled alone)"
