"""Command-line commands: each module defines its flags and `run(FLAGS) -> int`."""
