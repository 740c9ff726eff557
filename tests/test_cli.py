"""The command line as a new user meets it: `--help` lists exactly the flags a command
reads, a flag of another command is refused, and TensorFlow's start-up noise stays out.
Every flag is defined once, in the registry, and commands never import one another.
"""

import ast
import configparser
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from tf_oneshot.commands import cli
from tf_oneshot.commands import flags as registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS_DIR = pathlib.Path(cli.__file__).parent
MODULES = {name: importlib.import_module(f"tf_oneshot.commands.{name}") for name in cli.COMMANDS}
LOOPS = (ast.For, ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
# The registry's helpers that take FLAGS, and the flags each reads from a call.
REGISTRY_READS = {
    "given": lambda call, value: value(call.args[1]),
    "present": lambda call, value: value(call.args[1]),
    "config_from_flags": lambda call, value: registry.TRAIN_FLAGS,
    # cli.py caps a command's own FLAG_NAMES under TF_ONESHOT_TINY: no flag beyond those it declares.
    "shrink_to_tiny": lambda call, value: (),
}


def flags_read(module) -> tuple[set[str], list[str]]:
    """Flags `module` reads from FLAGS, found in its source; and uses the scan cannot follow.

    Reads are `FLAGS.name`, `getattr(FLAGS, "name")`, `getattr(FLAGS, n)` in a
    loop over a constant tuple, and the registry's helpers (`REGISTRY_READS`,
    e.g. `given(FLAGS, NAMES)`). FLAGS may also go to the module's own
    functions (scanned too); handing it anywhere else would hide reads from
    this test, so that is reported.
    """
    tree = ast.parse(inspect.getsource(module))
    namespace = vars(module)

    def value(expr):
        return eval(compile(ast.Expression(expr), module.__name__, "eval"), namespace)

    own_functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    names: set[str] = set()
    problems: list[str] = []
    understood: set[int] = set()  # ids of the FLAGS Name nodes accounted for
    loop_sources: dict[int, object] = {}  # id(getattr call) -> iterable of its loop variable
    for loop in (n for n in ast.walk(tree) if isinstance(n, LOOPS)):
        targets = [(loop.target, loop.iter)] if isinstance(loop, ast.For) else [
            (g.target, g.iter) for g in loop.generators]
        for target, iterable in targets:
            for call in ast.walk(loop):
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "getattr"
                        and isinstance(target, ast.Name) and isinstance(call.args[1], ast.Name)
                        and call.args[1].id == target.id):
                    loop_sources[id(call)] = value(iterable)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "FLAGS":
            names.add(node.attr)
            understood.add(id(node.value))
        elif isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == "FLAGS" for a in node.args):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            understood.update(id(a) for a in node.args if isinstance(a, ast.Name) and a.id == "FLAGS")
            if func in REGISTRY_READS:
                names.update(REGISTRY_READS[func](node, value))
            elif func == "getattr" and isinstance(node.args[1], ast.Constant):
                names.add(node.args[1].value)
            elif func == "getattr" and id(node) in loop_sources:
                names.update(loop_sources[id(node)])
            elif func not in own_functions:
                problems.append(f"line {node.lineno}: FLAGS goes to {func}()")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "FLAGS" and id(node) not in understood:
            problems.append(f"line {node.lineno}: FLAGS used in a way this scan cannot follow")
    return names, problems


def help_flags(text: str) -> set[str]:
    return set(re.findall(r"^  --(?:\[no\])?(\w+):", text, flags=re.M))


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_lists_exactly_the_flags_the_command_reads(command):
    module = MODULES[command]
    read, problems = flags_read(module)
    assert not problems, problems
    assert read == set(module.FLAG_NAMES), (
        f"reads but does not declare: {sorted(read - set(module.FLAG_NAMES))}; "
        f"declares but does not read: {sorted(set(module.FLAG_NAMES) - read)}")
    shown = help_flags(cli.command_help(command, module, flags.FLAGS))
    assert shown == set(module.FLAG_NAMES)


def test_the_scan_sees_every_kind_of_read():
    # retrain reads flags in each way the scan follows (given(), a getattr loop,
    # attributes); a read it missed would let a command's help omit a flag.
    read, problems = flags_read(MODULES["retrain"])
    assert {"train_steps", "learning_rate"} <= read  # given(FLAGS, STANDALONE_TRAIN_FLAGS)
    assert "num_stacks" in read  # for name in (...): getattr(FLAGS, name)
    assert {"search_results", "filters"} <= read and not problems  # FLAGS.name


def test_the_scan_knows_every_registry_helper_that_reads_flags():
    # A helper handed FLAGS reads flags the scan would otherwise not see.
    takes_flags = {name for name, f in inspect.getmembers(registry, inspect.isfunction)
                   if f.__module__ == registry.__name__ and "FLAGS" in inspect.signature(f).parameters}
    assert takes_flags == set(REGISTRY_READS)


def defines(path: pathlib.Path) -> list[str]:
    """Names of the absl flags `path` defines (`flags.DEFINE_*("name", ...)`)."""
    return [node.args[0].value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr.startswith("DEFINE")]


def test_every_flag_is_defined_once_in_the_registry_and_read_by_a_command():
    in_registry = defines(COMMANDS_DIR / "flags.py")
    assert len(in_registry) == len(set(in_registry))
    assert {p.name: defines(p) for p in COMMANDS_DIR.glob("*.py") if p.name != "flags.py" and defines(p)} == {}
    ours = {m for m in flags.FLAGS.flags_by_module_dict() if m.startswith("tf_oneshot")}
    assert ours == {registry.__name__}
    declared = set().union(*(m.FLAG_NAMES for m in MODULES.values()))
    assert set(in_registry) == declared  # no flag that no command takes
    groups = (registry.SPACE_FLAGS, registry.INPUT_FLAGS, registry.CONSTRAINT_FLAGS, registry.TRAIN_FLAGS,
              registry.STANDALONE_TRAIN_FLAGS, registry.STANDALONE_NOT_APPLICABLE)
    assert set().union(*groups) <= set(in_registry)


def command_imports(path: pathlib.Path) -> set[str]:
    """The modules of tf_oneshot/commands/ that `path` imports, at its top or inside functions."""
    modules = {f"tf_oneshot.commands.{p.stem}" for p in COMMANDS_DIR.glob("*.py")}
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "tf_oneshot.commands" + (f".{node.module}" if node.module else "") if node.level else node.module
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported & modules


def test_no_command_imports_another():
    # Commands take their flags from the registry and their work from the
    # library; only cli.py loads commands (by name, for the command word).
    imports = {p.stem: command_imports(p) for p in COMMANDS_DIR.glob("*.py") if p.name != "cli.py"}
    assert imports["search"] == {registry.__name__}  # the scan sees an aliased import
    assert imports["flags"] == set()
    assert {name: sorted(found - {registry.__name__}) for name, found in imports.items()
            if found - {registry.__name__}} == {}


def test_the_registry_spells_the_library_s_rank_by_choices():
    from tf_oneshot.analysis.ground_truth import RANK_BY

    assert flags.FLAGS["rank_by"].parser.enum_values == list(RANK_BY)


def test_retrain_help_shows_the_training_flags(capsys):
    assert cli.main(["tf-oneshot", "retrain", "--help"]) == 0
    shown = help_flags(capsys.readouterr().out)
    assert {"train_steps", "learning_rate", "lr_schedule", "search_results", "full_train", "pool"} <= shown
    assert "dropout_rate" not in shown
    assert cli.main(["tf-oneshot", "analyze", "--help"]) == 0
    assert "overwrite" in help_flags(capsys.readouterr().out)
    assert cli.main(["tf-oneshot", "demo", "--help"]) == 0
    shown = help_flags(capsys.readouterr().out)  # the demo takes train flags, constraints and stage sizes
    assert {"output_dir", "overwrite", "space", "sampler", "max_flops", "num_evolution", "bn_mode"} <= shown
    assert "model_dir" not in shown and "strategy" not in shown


def test_a_flag_the_command_does_not_take_is_one_clear_error(capsys):
    try:
        assert cli.main(["tf-oneshot", "demo", "--strategy=mirrored"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["tf-oneshot: error: --strategy does not apply to `tf-oneshot demo`; drop it "
                       "(`tf-oneshot demo --help` lists the flags it takes)."]
        assert cli.main(["tf-oneshot", "analyze", "--seeds=1", "--output_dir=x"]) == 2
        assert "--seeds does not apply to `tf-oneshot analyze`" in capsys.readouterr().err
        # A flag of a command whose module is not loaded: the registry defines it all the same.
        assert cli.main(["tf-oneshot", "analyze", "--warmup=3", "--output_dir=x"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "tf-oneshot: error: --warmup does not apply to `tf-oneshot analyze`; drop it "
            "(`tf-oneshot analyze --help` lists the flags it takes)."]
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("command,flag", [(c, f) for c in cli.COMMANDS
                                          for f in getattr(MODULES[c], "NOT_APPLICABLE", {})])
def test_a_flag_that_does_not_apply_is_refused_with_its_reason(command, flag, capsys):
    try:
        assert cli.main(["tf-oneshot", command, f"--{flag}=1"]) == 2
        reason = MODULES[command].NOT_APPLICABLE[flag]
        assert capsys.readouterr().err.strip().splitlines() == [
            f"tf-oneshot: error: --{flag} {reason}; drop it (`tf-oneshot {command} --help` lists the flags it takes)."]
    finally:
        flags.FLAGS.unparse_flags()


def test_the_console_script_and_python_m_run_this_cli():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    scripts = config["options.entry_points"]["console_scripts"].split("\n")
    assert "tf-oneshot = tf_oneshot.commands.cli:entry_point" in [line.strip() for line in scripts]
    from tf_oneshot import __main__

    assert __main__.main is cli.main


def test_a_command_cannot_read_a_flag_it_did_not_declare():
    class Parsed:
        output_dir, strategy = "out", "default"

    view = cli.CommandFlags(Parsed(), ("output_dir",), "demo")
    assert view.output_dir == "out"
    with pytest.raises(AttributeError, match="reads --strategy, which its FLAG_NAMES does not declare"):
        _ = view.strategy


def _stderr(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, "-m", "tf_oneshot", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.stderr


def test_no_tensorflow_startup_noise():
    """`./dev demo` used to open with absl's pre-init warning and oneDNN's notice, twice."""
    # A command that imports TensorFlow and fails at once: its one error line is all of stderr.
    assert _stderr("analyze").splitlines() == [
        "tf-oneshot: error: --output_dir is required: the directory for report.md and the plots."]
    # `space` loads TensorFlow only for a space that needs it (this one imports Keras).
    assert _stderr("space") == ""
    assert _stderr("space", "--space=examples/mobile_chain.py:MobileChainSpace") == ""


def test_other_startup_output_still_reaches_stderr(capfd):
    with cli._startup_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"something else\n")
    assert capfd.readouterr().err == "something else\n"


def test_train_help_shows_the_real_defaults(capsys):
    # Issue 19 item 10: "(default: none)" was shown for settings that have defaults.
    assert cli.main(["tf-oneshot", "train", "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    def default_of(flag):
        i = next(i for i, line in enumerate(lines) if line.strip().startswith(f"--{flag}:"))
        return next(line.strip() for line in lines[i + 1:] if line.strip().startswith("(default"))

    assert default_of("train_steps") == "(default: 10,000)"
    assert default_of("checkpoint_every") == "(default: 100)"
    assert default_of("learning_rate") == "(default: 0.1)"
    assert default_of("data_dir") == "(default: none)"  # no default: TFDS's own directory
    assert "(default: the dataset's).\n    (default: none)" not in out  # a help text naming its default is not contradicted
    # groundtruth takes an unset setting from --model_dir's run when given one; retrain its dataset.
    assert cli.main(["tf-oneshot", "groundtruth", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert default_of("train_steps") == "(default: 10,000, or what --model_dir recorded)"
    assert cli.main(["tf-oneshot", "retrain", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert default_of("train_steps") == "(default: 10,000)"
    assert default_of("dataset") == "(default: digits, or what --model_dir recorded)"


@pytest.mark.parametrize("command", ["train", "retrain", "groundtruth"])
def test_flags_of_some_spaces_only_are_listed_apart_naming_them(command, capsys):
    """Issue 19 item 10: the cell space's --filters, --num_cells, ... were listed by retrain and groundtruth as
    if every space read them."""
    assert cli.main(["tf-oneshot", command, "--help"]) == 0
    general, _, space_part = capsys.readouterr().out.partition("\nspace options (only the search spaces named")
    assert set(registry.space_only_flags()) == {"filters", "num_cells", "num_blocks", "num_stacks"}
    assert help_flags(space_part) == {"filters", "num_cells", "num_blocks", "num_stacks"}
    assert not help_flags(general) & help_flags(space_part) and "stem_stride" in help_flags(general)
    assert "--num_blocks: Choice blocks per cell (N_choice). [bender_cell only]\n    (default: the space's own" in space_part
    assert "[bender_cell, darts64 only]" in space_part.split("--num_cells:")[1].split("\n")[0]
