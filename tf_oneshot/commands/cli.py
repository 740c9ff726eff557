"""The `tf-oneshot` console script: a command word, then absl flags.

Every failure the user can fix ends with one line on stderr naming what is
wrong and what would be right, and exit code 2.

Every flag is defined once, in the registry `tf_oneshot.commands.flags`,
loaded before the command. Each command module declares the flags it reads
(`FLAG_NAMES`): `--help` prints exactly those, a flag of another command is
refused, and the command reads its flags through a view that holds only
those (tests/test_cli.py checks the declaration against the module's source).

TF_ONESHOT_TINY=1 caps the steps, image and architecture counts a command
declares (`flags.TINY`), for tests/test_readme_commands.py; read here only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import re
import signal
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMANDS = {
    "space": "describe a search space: size, all-on params and multiply-adds, an example",
    "train": "train the one-shot model into --model_dir (resumes from it)",
    "search": "score architectures with a trained one-shot model (random, evolution or given ones)",
    "nas": "iterated one-shot NAS: train on a candidate pool, score it, grow it (NAO-V2)",
    "retrain": "train chosen architectures from scratch (stand-alone) and export the best",
    "analyze": "rank correlations, plots and a report from search and retrain results",
    "groundtruth": "train every child of a small space stand-alone over seeds (ground truth)",
    "demo": "the whole pipeline on the embedded digits dataset, offline",
    "insights": "ranking fidelity of one-shot runs against a ground truth (Deeper insights: Tables 1-3, Fig. 2/3)",
    "latency": "measure a latency lookup table of a space's blocks on this device (SPOS §3.4)",
}
# Commands that run for minutes to days: SIGTERM asks them to stop at the next
# safe point and exit 143 (tf_oneshot.training.preemption), from start-up on.
LONG_COMMANDS = ("train", "search", "nas", "retrain", "demo", "groundtruth")
PROG = "tf-oneshot"
REGISTRY = "tf_oneshot.commands.flags"

# What TensorFlow's C++ libraries print while they load, before absl's C++
# logging is initialised: TF_CPP_MIN_LOG_LEVEL does not reach these two.
STARTUP_NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"
    r"|\] oneDNN custom operations are on\. "
)


def _usage() -> str:
    lines = [f"usage: {PROG} COMMAND [--flags] [--flagfile=FILE]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {text}" for name, text in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------ start-up
@contextlib.contextmanager
def _startup_noise_filtered() -> Iterator[None]:
    """Runs the body with fd 2 captured, then writes back all but `STARTUP_NOISE`."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = "".join(line for line in text.splitlines(True) if not STARTUP_NOISE.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters `STARTUP_NOISE` out of stderr while `tensorflow` is first imported.

    Whatever imports it (a command, keras, a user's search space file), the
    real loader runs under `_startup_noise_filtered`; every other line the
    import writes reaches stderr unchanged.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        self.remove()
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            with _startup_noise_filtered():
                real_exec(module)

        spec.loader.exec_module = exec_module  # this package's loader instance only
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


# --------------------------------------------------------------------- flags
class CommandFlags:
    """The parsed flags a command declared in `FLAG_NAMES`, read as attributes.

    `FLAGS[name]` is the absl flag itself (e.g. `.present`), as on absl's
    FlagValues. Reading any other flag is a programming error (the help would
    not list it): AttributeError names it.
    """

    def __init__(self, flag_values: Any, names: Iterable[str], command: str) -> None:
        self._flags = flag_values
        self._names = frozenset(names)
        self._command = command

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._flags, self._declared(name))

    def __getitem__(self, name: str) -> Any:
        return self._flags[self._declared(name)]

    def _declared(self, name: str) -> str:
        if name not in self._names:
            raise AttributeError(
                f"`{PROG} {self._command}` reads --{name}, which its FLAG_NAMES does not declare."
            )
        return name


def _our_flags(flag_values: Any) -> dict[str, Any]:
    """The registry's flags (not absl's own, such as --verbosity)."""
    return {f.name: f for f in flag_values.flags_by_module_dict().get(REGISTRY, [])}


def command_help(command: str, module: Any, flag_values: Any) -> str:
    """`COMMAND --help`: the command's summary and exactly the flags it reads.

    Flags that only some search spaces read (`flags.space_only_flags`: the
    cell space's --num_blocks, ...) come last, under their own heading and
    each naming its spaces, so no one takes them for settings of every space.
    """
    doc = (module.__doc__ or "").strip().splitlines()
    lines = [f"usage: {PROG} {command} [--flags] [--flagfile=FILE]", ""]
    if doc:
        lines += [doc[0], ""]
    space_only = {name: spaces for name, spaces in importlib.import_module(REGISTRY).space_only_flags().items()
                  if name in module.FLAG_NAMES}
    lines.append("flags:")
    lines += _flag_lines(module, flag_values, sorted(set(module.FLAG_NAMES) - set(space_only)), {})
    if space_only:
        lines += ["", "space options (only the search spaces named read them; a user's space takes its own fields "
                  "in --space_args):"]
        lines += _flag_lines(module, flag_values, sorted(space_only), space_only)
    return "\n".join(lines)


def _flag_lines(module: Any, flag_values: Any, names: list[str], spaces: dict[str, tuple[str, ...]]) -> list[str]:
    """Each flag's help, wrapped, with the default it really has."""
    # A flag's registry default is None where the command supplies its own
    # (train: TrainConfig's); the command names those in FLAG_DEFAULTS.
    defaults = getattr(module, "FLAG_DEFAULTS", {})
    notes = getattr(module, "FLAG_DEFAULT_NOTES", {})  # e.g. "or what --model_dir recorded"
    lines = []
    for name in names:
        flag = flag_values[name]
        shown = f"--[no]{name}" if flag.boolean else f"--{name}"
        only = f" [{', '.join(spaces[name])} only]" if name in spaces else ""
        lines += textwrap.wrap(f"{shown}: {flag.help}{only}", width=100, initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False)
        if "(default" not in flag.help:  # the help text already says it
            note = f", {notes[name]}" if name in notes else ""
            default = _default_text(flag, defaults.get(name))
            if name in spaces and default == "none":
                default = "the space's own"
            lines.append(f"    (default: {default}{note})")
    return lines


def _default_text(flag: Any, command_default: Any) -> str:
    """The default `--help` shows: the flag's own, else the command's, else none."""
    if flag.default is not None:
        return flag.default_as_str
    if command_default is None:
        return "none"
    if isinstance(command_default, bool):
        return "true" if command_default else "false"
    return f"{command_default:,}" if isinstance(command_default, int) else str(command_default)


def _foreign_flag(command: str, module: Any, flag_values: Any) -> str | None:
    """The message for a flag set on the command line that `command` does not read, if any."""
    declared = set(module.FLAG_NAMES)
    reasons = getattr(module, "NOT_APPLICABLE", {})
    for name, flag in sorted(_our_flags(flag_values).items()):
        if flag.present and name not in declared:
            reason = reasons.get(name, f"does not apply to `{PROG} {command}`")
            return f"--{name} {reason}; drop it (`{PROG} {command} --help` lists the flags it takes)."
    return None


# ---------------------------------------------------------------------- main
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
    quiet = _QuietTensorFlowImport()
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, quiet)
    try:
        if command in LONG_COMMANDS:
            from tf_oneshot.training.preemption import Preemption

            with Preemption():  # a SIGTERM during start-up stops the command at its first check
                return _run(command, rest)
        return _run(command, rest)
    finally:
        quiet.remove()


def _run(command: str, rest: list[str]) -> int:
    from absl import flags, logging

    from tf_oneshot.errors import UserError

    importlib.import_module(REGISTRY)  # defines every flag, whichever command runs
    module = importlib.import_module(f"tf_oneshot.commands.{command}")
    FLAGS = flags.FLAGS
    if any(a in ("-h", "--help", "--helpfull") for a in rest):
        print(command_help(command, module, FLAGS))
        return 0
    FLAGS.unparse_flags()  # main() may run several times in one process (tests)
    try:
        positional = FLAGS([f"{PROG} {command}", *rest])[1:]
    except flags.Error as e:
        return _fail(f"{e}. See `{PROG} {command} --help`.")
    if positional:
        return _fail(f"unexpected argument {positional[0]!r}; flags look like --name=value.")
    foreign = _foreign_flag(command, module, FLAGS)
    if foreign:
        return _fail(foreign)
    if os.environ.get("TF_ONESHOT_TINY") == "1":  # the README's commands as a test, at tiny scale
        importlib.import_module(REGISTRY).shrink_to_tiny(FLAGS, module.FLAG_NAMES)
    logging.set_verbosity(logging.WARNING)
    try:
        return int(module.run(CommandFlags(FLAGS, module.FLAG_NAMES, command)) or 0)
    except UserError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        # A second Ctrl-C (or one outside a stoppable loop): only what was already written is kept.
        _fail("interrupted at once; work since the last checkpoint or record is lost, a rerun resumes "
              "from there (one Ctrl-C stops at the next safe point and saves).")
        return 128 + signal.SIGINT  # 130, the shell's code for Ctrl-C


def entry_point() -> None:
    sys.exit(main())
