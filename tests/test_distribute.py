"""The strategy factory: flags to strategies, and one clear line for impossible choices.

Nothing here splits the CPU (that must happen before TensorFlow initializes its
devices, so it lives in the subprocess of test_trainer_strategies.py).
"""

import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.training import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ start-up lines, printed before anything of ours can silence them.
_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} )")


def test_single_host_strategies_and_their_replicas():
    assert distribute.get_strategy("default") is tf.distribute.get_strategy()
    assert distribute.get_strategy("one_device").num_replicas_in_sync == 1
    mirrored = distribute.get_strategy("mirrored")
    cpus = len(tf.config.list_logical_devices("CPU"))
    assert mirrored.num_replicas_in_sync == (len(tf.config.list_logical_devices("GPU")) or cpus)
    # One MirroredStrategy per device set: two would mix up their collectives.
    assert distribute.get_strategy("mirrored") is mirrored
    assert distribute.is_chief(mirrored) and distribute.task_id(mirrored) == 0
    assert not distribute.is_tpu(mirrored)
    assert distribute.describe(tf.distribute.get_strategy()) == "default, 1 replica(s)"


def test_graph_optimizer_auto_is_off_only_for_the_demo_on_cpus_and_flags_override_it():
    options = tf.config.optimizer.get_experimental_options
    try:
        accelerator = bool(tf.config.list_physical_devices("GPU"))
        assert distribute.set_graph_optimizer("auto") and not options()["disable_meta_optimizer"]
        assert distribute.set_graph_optimizer("auto", few_functions=True) is accelerator
        assert options()["disable_meta_optimizer"] is not accelerator
        assert distribute.set_graph_optimizer("auto", tpu=True, few_functions=True)
        assert distribute.set_graph_optimizer("on", few_functions=True) and not options()["disable_meta_optimizer"]
        assert not distribute.set_graph_optimizer("off") and options()["disable_meta_optimizer"]
        distribute.get_strategy("default", graph_optimizer="auto")
        assert not options()["disable_meta_optimizer"]
        with pytest.raises(UserError, match=re.escape("--graph_optimizer=fast is unknown; choose one of auto, on, off")):
            distribute.get_strategy("default", graph_optimizer="fast")
    finally:
        distribute.set_graph_optimizer("auto")  # the session's setting (conftest.py)


def test_a_command_s_graph_optimizer_ends_with_it():
    options = tf.config.optimizer.get_experimental_options
    assert not options().get("disable_meta_optimizer", False)  # the session's: on (conftest.py)
    with distribute.graph_optimizer("off") as on:
        assert not on and options()["disable_meta_optimizer"]
    assert not options()["disable_meta_optimizer"]


@pytest.mark.parametrize(
    "name, tpu, message",
    [
        ("parameter_server", None, "--strategy=parameter_server is unknown; choose one of default, one_device"),
        ("mirrored", "my-tpu", "--tpu=my-tpu conflicts with --strategy=mirrored"),
        ("multi_worker_mirrored", "local", "conflicts with --strategy=multi_worker_mirrored"),
    ],
)
def test_bad_choices_are_one_line(name, tpu, message):
    with pytest.raises(UserError, match=re.escape(message)) as info:
        distribute.get_strategy(name, tpu)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs TF_CONFIG with the cluster and this task"),
        ("{not json", "TF_CONFIG is not valid"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG is not valid"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
         "TF_CONFIG is not valid"),
        ('{"cluster": {"ps": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}', "TF_CONFIG is not valid"),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(UserError, match=message) as info:
        distribute.get_strategy("multi_worker_mirrored")
    assert "\n" not in str(info.value)


def test_tpu_without_a_tpu_is_one_line():
    # Runs the real resolver path: TPUClusterResolver(tpu="local") is built and
    # initialize_tpu_system finds no TPU.
    with pytest.raises(UserError, match=r"no TPU 'local' could be reached .*--tpu=local") as info:
        distribute.get_strategy("default", tpu="local")
    assert "\n" not in str(info.value)


def test_precision_and_xla_must_fit_the_devices(monkeypatch):
    default = tf.distribute.get_strategy()
    for precision in distribute.MIXED_PRECISION:
        distribute.check_compatible(default, precision, jit_compile=True)
    with pytest.raises(UserError, match="--mixed_precision=int8 is invalid"):
        distribute.check_compatible(default, "int8", jit_compile=False)
    monkeypatch.setattr(distribute, "is_tpu", lambda strategy: True)
    with pytest.raises(UserError, match="TPUs compute in bfloat16"):
        distribute.check_compatible(default, "float16", jit_compile=False)
    distribute.check_compatible(default, "bfloat16", jit_compile=True)
    monkeypatch.undo()
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(UserError, match="--jit_compile cannot compile a Mirrored"):
            distribute.check_compatible(distribute.get_strategy("mirrored"), "none", jit_compile=True)


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `python -m tf_oneshot ...` the way a user would."""
    environ = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tf_oneshot", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def our_stderr(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not _TF_NOISE.match(line)]


def test_cli_tpu_without_tpu_exits_2_with_one_line(tmp_path):
    model_dir = tmp_path / "run"
    proc = run_cli("train", "--tpu=local", "--dataset=digits", f"--model_dir={model_dir}",
                   "--train_steps=2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = our_stderr(proc.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("tf-oneshot: error: no TPU 'local' could be reached")
    assert not (model_dir / "checkpoints").exists()

