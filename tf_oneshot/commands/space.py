"""`tf-oneshot space`: size, all-on counts, decisions and an example architecture of any space; `--check` runs its contract."""

import json

from tf_oneshot.commands import flags

FLAG_NAMES = (*flags.SPACE_FLAGS, "json", "check", *flags.INPUT_FLAGS, "dataset", "data_dir")


def run(FLAGS) -> int:
    from tf_oneshot.search_spaces.space_config import SpaceConfig, build_space

    config = SpaceConfig.from_flat(flags.given(FLAGS, flags.SPACE_FLAGS))
    if FLAGS.dataset:  # the space as `train --dataset` builds it: that dataset's images, classes and stem
        from tf_oneshot.training import data

        info = data.dataset_info(FLAGS.dataset, FLAGS.data_dir)
        space = build_space(config, info.image_shape, info.num_classes, info.stem_stride)
    else:
        space = build_space(config, (FLAGS.image_size, FLAGS.image_size, FLAGS.channels), FLAGS.num_classes)
    cost = space.count_oneshot()
    example = space.example()
    example_cost = space.count(space.parse(example))
    decisions = [{"name": d.name, "options": [d.format(v) for v in d.values()][:64], "size": d.size()}
                 for d in space.decisions()]
    summary = {
        "space": space.name,
        "size": space.size(),
        "oneshot_params": cost.params,
        "oneshot_flops": cost.flops,
        "example": example,
        "example_params": example_cost.params,
        "example_flops": example_cost.flops,
        "decisions": decisions,
        "default_sampler": space.default_sampler,
        "config": space.to_config(),
    }
    report = None
    if FLAGS.check:
        from tf_oneshot.search_spaces.check import check_space

        report = check_space(space)
        summary["check"] = {r.name: r.problem or "ok" for r in report.results}
    if FLAGS.json:
        print(json.dumps(summary))
    else:
        _print(space, summary, cost, example_cost)
    if report is not None:
        for r in report.results if not FLAGS.json else ():
            print(f"check  {r.name:<28} {'ok' if r.ok else 'FAILED'}  ({r.seconds:.1f} s)")
        report.raise_first()
    return 0


def _print(space, summary: dict, cost, example_cost) -> None:
    decisions = summary["decisions"]
    print(f"search space   {space.name}: {len(decisions)} decisions, default sampler {space.default_sampler}")
    print(f"size           {summary['size']:,} architectures")
    print(f"all-on model   {cost.params:,} params, {cost.flops:,} multiply-adds")
    print(f"example        {summary['example']}  ({example_cost.params:,} params, "
          f"{example_cost.flops:,} multiply-adds)")
    for d in decisions:
        shown = ", ".join(d["options"][:8]) + (", ..." if d["size"] > 8 else "")
        print(f"  {d['name']:<16} {d['size']:>4} choices: {shown}")
