"""The `tf-oneshot` console script: a command word, then absl flags.

Every failure the user can fix ends with one line on stderr naming what is
wrong and what would be right, and exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMANDS = {
    "space": "describe a search space: size, all-on params and multiply-adds, an example",
    "train": "train the one-shot model into --model_dir (resumes from it)",
    "search": "score architectures with a trained one-shot model (random or evolution)",
    "retrain": "train chosen architectures from scratch (stand-alone) and export the best",
    "analyze": "rank correlations, plots and a report from search and retrain results",
    "groundtruth": "train every child of a small space stand-alone over seeds (ground truth)",
    "demo": "the whole pipeline on the embedded digits dataset, offline",
}
PROG = "tf-oneshot"


def _usage() -> str:
    lines = [f"usage: {PROG} COMMAND [--flags] [--flagfile=FILE]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {text}" for name, text in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the process exit code."""
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}.")
    from absl import flags, logging

    from tf_oneshot.errors import UserError

    module = importlib.import_module(f"tf_oneshot.commands.{command}")
    FLAGS = flags.FLAGS
    if any(a in ("-h", "--help", "--helpfull") for a in rest):
        print(f"usage: {PROG} {command} [--flags]\n")
        print(FLAGS.module_help(module.__name__))
        # Flags a command borrows from another command's module (e.g. the train flags).
        borrowed = [FLAGS[name] for name in getattr(module, "HELP_FLAGS", ())]
        if borrowed:
            print("\nshared with other commands:")
            print("\n".join(f"  --{f.name}: {f.help} (default: {f.default_as_str or 'none'})" for f in borrowed))
        print(FLAGS.module_help("tf_oneshot.commands.common_flags"))
        return 0
    FLAGS.unparse_flags()  # main() may run several times in one process (tests)
    try:
        positional = FLAGS([f"{PROG} {command}", *rest])[1:]
    except flags.Error as e:
        return _fail(f"{e}. See `{PROG} {command} --help`.")
    if positional:
        return _fail(f"unexpected argument {positional[0]!r}; flags look like --name=value.")
    logging.set_verbosity(logging.WARNING)
    try:
        return int(module.run(FLAGS) or 0)
    except UserError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted; finished work is saved and a rerun resumes it.")


def entry_point() -> None:
    sys.exit(main())
