"""`tf-oneshot latency`: measures a latency lookup table on this device (SPOS §3.4).

Times every candidate of every choice block in its position (its input shape
there), and the fixed stem and head, each as the median of --repeats calls
after --warmup; writes the table atomically as JSON with the space, input
size, batch and device it was measured for. `search --max_latency_ms=...
--latency_table=FILE` then meets the bound by construction: an architecture's
latency is the table's sum. --compare=N also times N sampled architectures
end to end and prints how close the sum comes.
"""

from __future__ import annotations

from tf_oneshot.commands import flags
from tf_oneshot.errors import UserError

FLAG_NAMES = (*flags.SPACE_FLAGS, "model_dir", *flags.INPUT_FLAGS, "batch_size", "output", "warmup", "repeats",
              "compare", "seed", "overwrite")


def _space(FLAGS):
    """The recorded space of --model_dir, or the one --space and the size flags describe."""
    if FLAGS.model_dir:
        from tf_oneshot.training.model_dir import ModelDir

        set_here = [n for n in flags.SPACE_FLAGS if getattr(FLAGS, n) is not None]
        if set_here:
            raise UserError(f"--{set_here[0]} and --model_dir exclude one another: the model_dir records its space.")
        return ModelDir.open(FLAGS.model_dir).space
    from tf_oneshot.search_spaces.space_config import SpaceConfig, build_space

    config = SpaceConfig.from_flat(flags.given(FLAGS, flags.SPACE_FLAGS))
    return build_space(config, (FLAGS.image_size, FLAGS.image_size, FLAGS.channels), FLAGS.num_classes)


def run(FLAGS) -> int:
    import numpy as np

    from tf_oneshot.search_spaces import latency

    if not FLAGS.output:
        raise UserError("--output is required: the JSON file to write the latency table to.")
    if FLAGS.compare < 0:
        raise UserError(f"--compare={FLAGS.compare} is invalid; expected a non-negative integer.")
    space = _space(FLAGS)
    import tensorflow as tf

    if tf.io.gfile.exists(FLAGS.output) and not FLAGS.overwrite:
        raise UserError(f"--output={FLAGS.output} exists; pass another path, or --overwrite to replace it.")
    batch = FLAGS.batch_size or 1
    units = space.latency_units() or []
    print(f"timing {len(units)} pieces of {space.name} at {space.image_shape}, batch {batch}, on "
          f"{latency.device_name()} (median of {FLAGS.repeats} after {FLAGS.warmup} warm-up calls)", flush=True)
    table = latency.measure_table(space, batch, FLAGS.warmup, FLAGS.repeats)
    latency.write_table(FLAGS.output, table)
    loaded = latency.LatencyTable.load(FLAGS.output, space)
    low, high = loaded.bounds()
    print(f"wrote {FLAGS.output}: fixed parts {loaded.fixed_ms:.3f} ms, architectures {low:.3f}..{high:.3f} ms")
    if FLAGS.compare:
        rng = np.random.default_rng(0 if FLAGS.seed is None else FLAGS.seed)
        archs = [space.sample(rng) for _ in range(FLAGS.compare)]
        print(f"{'architecture':<48}{'table ms':>10}{'measured':>10}{'ratio':>8}")
        for row in latency.compare(space, loaded, archs, batch, FLAGS.warmup, FLAGS.repeats):
            print(f"{row['architecture']:<48}{row['table_ms']:>10.3f}{row['measured_ms']:>10.3f}{row['ratio']:>8.2f}")
    return 0
