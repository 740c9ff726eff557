"""The `tf-oneshot` command line: its entry point, its flags and one module per command.

- `cli.py`: the console script (`tf-oneshot`, `python -m tf_oneshot`): the
  command word, absl parsing, `COMMAND --help`, one-line errors, exit codes.
- `flags.py`: the registry: every flag defined once, the groups commands share
  (space, constraint, training flags ...) and the helpers that read their values.
- one module per command (`space`, `train`, `search`, `nas`, `retrain`,
  `analyze`, `groundtruth`, `demo`, `insights`, `latency`): `FLAG_NAMES` (the
  flags it reads and its help lists), optionally `NOT_APPLICABLE` (why a
  flag of another command is refused), and `run(FLAGS) -> int`.

A command imports the registry and the library, never another command
(tests/test_cli.py checks it).
"""
