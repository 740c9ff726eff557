"""`tf-oneshot space`: size, all-on counts and an example architecture of a space."""

import json

from absl import flags

from tf_oneshot.commands import common_flags
from tf_oneshot.search_spaces import OP_NAMES, CellSpace

flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
flags.DEFINE_integer("image_size", 32, "Input height and width (32: CIFAR-10).")
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_integer("num_classes", 10, "Classifier outputs.")


def run(FLAGS) -> int:
    space = CellSpace(
        image_shape=(FLAGS.image_size, FLAGS.image_size, FLAGS.channels),
        num_classes=FLAGS.num_classes,
        **common_flags.given(FLAGS, common_flags.SPACE_FLAGS),
    )
    cost = space.count_oneshot()
    example = space.example()
    summary = {
        "space": space.name,
        "size": space.size(),
        "oneshot_params": cost.params,
        "oneshot_flops": cost.flops,
        "example": example,
        "example_params": space.count(space.parse(example)).params,
        "example_flops": space.count(space.parse(example)).flops,
        "ops": list(OP_NAMES),
        "config": space.to_config(),
    }
    if FLAGS.json:
        print(json.dumps(summary))
        return 0
    print(f"search space   {space.name}: {space.num_blocks} choice blocks per cell, "
          f"{space.num_cells} cells, F={space.filters}")
    print(f"size           {summary['size']:,} cells")
    print(f"all-on model   {cost.params:,} params, {cost.flops:,} multiply-adds")
    print(f"example        {example}  ({summary['example_params']:,} params)")
    print("ops            " + ", ".join(f"{i}={name}" for i, name in enumerate(OP_NAMES)))
    print("string form    per block: input digits ':' op digits; blocks separated by '/'")
    return 0
