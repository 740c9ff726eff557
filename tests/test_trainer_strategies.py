"""The trainer gives the same numbers under every strategy (DESIGN.md: distribution
is one choice at start-up; Bender et al. 2018, §4.1: synchronous SGD over workers).

MirroredStrategy runs on 2 logical CPUs, which must be set up before TensorFlow
initializes its devices, so all trainings run once in a child process (this
file, run as a script) and the tests compare the numbers it writes. The rest
of the suite keeps the normal single CPU device.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
TINY = dict(
    dataset="digits", filters=4, num_cells=1, num_stacks=1, num_blocks=1, batch_size=32,
    ghost_batch_size=8, train_steps=STEPS, checkpoint_every=STEPS, eval_batches=1, seed=3,
)
# name -> (strategy, config overrides). 32 examples = 4 ghost batches: 4 on one
# replica, or 2 on each of 2 mirrored replicas.
RUNS = {
    "default": ("default", dict(steps_per_loop=1, log_every=1)),
    "one_device": ("one_device", dict(steps_per_loop=1, log_every=1)),
    "mirrored": ("mirrored", dict(steps_per_loop=1, log_every=1)),
    "default_loop3": ("default", dict(steps_per_loop=3, log_every=3)),
    "mirrored_loop3": ("mirrored", dict(steps_per_loop=3, log_every=3)),
    "float16": ("default", dict(steps_per_loop=2, log_every=1, mixed_precision="float16")),
    "bfloat16": ("default", dict(steps_per_loop=1, log_every=1, mixed_precision="bfloat16")),
}


# ------------------------------------------------------------------ the child
def _scalars(model_dir: str) -> dict:
    import glob

    import tensorflow as tf

    values: dict = {}
    for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                values.setdefault(v.tag, {})[str(event.step)] = float(tf.make_ndarray(v.tensor))
    return values


def _loss_scale_guard() -> dict:
    """One overflowing replica out of two: the step must be skipped on both."""
    import keras
    import tensorflow as tf

    from tf_oneshot.training import distribute
    from tf_oneshot.training.tasks import agree_on_finite

    strategy = distribute.get_strategy("mirrored")
    with strategy.scope():
        w = keras.Variable(tf.ones([3]), name="w")
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5))
        optimizer.build([w])

    def step(bad_replica):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        x = tf.where(tf.equal(replica, bad_replica), float("inf"), 1.0) * tf.ones([3])
        with tf.GradientTape() as tape:
            scaled = optimizer.scale_loss(tf.reduce_sum(w * x))
        grads, finite = agree_on_finite(tape.gradient(scaled, [w]))
        optimizer.apply_gradients(zip(grads, [w]))
        return finite

    @tf.function
    def run(bad_replica):
        return strategy.reduce("mean", strategy.run(step, args=(bad_replica,)), axis=None)

    out = {"scale0": float(optimizer.dynamic_scale.numpy())}
    out["finite_bad"] = float(run(tf.constant(1)))
    out["w_bad"] = w.numpy().tolist()
    out["scale_bad"] = float(optimizer.dynamic_scale.numpy())
    out["finite_ok"] = float(run(tf.constant(-1)))
    out["w_ok"] = w.numpy().tolist()
    return out


def _scores(out_dir: str) -> dict:
    """The scorer on 1 and 2 replicas: architectures split over replicas (search/scorer.py)."""
    from tf_oneshot.search.scorer import OneShotScorer
    from tf_oneshot.training import distribute

    out: dict = {}
    for strategy_name in ("default", "mirrored"):
        for bn_mode in ("batch", "recalibrate"):
            scorer = OneShotScorer.from_model_dir(
                os.path.join(out_dir, "default"), bn_mode=bn_mode, kl=bn_mode == "batch",
                archs_per_pass=2 if bn_mode == "batch" else None, recalibration_images=64,
                validation_examples=96, strategy=distribute.get_strategy(strategy_name),
            )
            rng = np.random.default_rng(0)
            archs = [scorer.space.sample(rng) for _ in range(7)]  # not a multiple of a call: padded
            first = scorer.score(archs[:3])
            traces = scorer.tracing_count()
            out[f"{strategy_name}_{bn_mode}"] = {
                "scores": first + scorer.score(archs[3:]), "replicas": scorer.replicas,
                "per_call": scorer.archs_per_call, "retraced": scorer.tracing_count() - traces,
            }
    return out


def _child(out_dir: str) -> None:
    from tf_oneshot.training import distribute

    distribute.split_cpu_for_tests(2)  # before anything touches TensorFlow's devices
    import keras
    import tensorflow as tf

    from tf_oneshot.training import trainer
    from tf_oneshot.training.config import TrainConfig

    report: dict = {"cpus": len(tf.config.list_logical_devices("CPU"))}
    distribute.split_cpu_for_tests(2)  # again: harmless once devices match
    try:
        distribute.split_cpu_for_tests(3)
        report["resplit"] = "no error"
    except RuntimeError as e:
        report["resplit"] = str(e)
    for name, (strategy_name, overrides) in RUNS.items():
        strategy = distribute.get_strategy(strategy_name)
        model_dir = os.path.join(out_dir, name)
        lines: list[str] = []
        result = trainer.train(TrainConfig(**TINY, **overrides), model_dir, strategy=strategy, log=lines.append)
        loaded = trainer.load_oneshot(model_dir)
        weights = {w.path.split("/", 1)[1]: w.numpy() for w in loaded.model.weights}
        np.savez(os.path.join(out_dir, f"{name}.npz"), **weights)
        ckpt = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        variables = dict(tf.train.list_variables(ckpt))
        report[name] = {
            "result": result, "log": lines, "scalars": _scalars(model_dir),
            "replicas": strategy.num_replicas_in_sync,
            "global_step": int(tf.train.load_variable(ckpt, "step/.ATTRIBUTES/VARIABLE_VALUE")),
            "has_loss_scale": any("dynamic_scale" in k for k in variables),
            "policy_after": keras.config.dtype_policy().name,
        }
    report["guard"] = _loss_scale_guard()
    report["scoring"] = _scores(out_dir)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f)


# ------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Under pytest-xdist the tests of this module may land on two workers: the
    # first one runs the child, the other waits on the lock and reads its output.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out_dir = str(root / "strategy_runs")
    with open(root / "strategy_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(out_dir, "report.json")):
            os.makedirs(out_dir, exist_ok=True)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), out_dir], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-4000:]
    with open(os.path.join(out_dir, "report.json")) as f:
        report = json.load(f)
    report["weights"] = {name: dict(np.load(os.path.join(out_dir, f"{name}.npz"))) for name in RUNS}
    return report


def losses(run: dict) -> dict[int, float]:
    return {int(step): value for step, value in run["scalars"]["train/loss"].items()}


def trainable(weights: dict) -> dict:
    # Batch-norm statistics of the choice-block ops are skipped (tf.cond) when an
    # op is off in all ghost batches *of a replica*, which depends on the split.
    return {k: v for k, v in weights.items() if "moving_" not in k or "/op" not in k}


def test_child_has_two_logical_cpus(runs):
    assert runs["cpus"] == 2
    assert "before TensorFlow initializes its devices" in runs["resplit"]
    assert [runs[n]["replicas"] for n in ("default", "one_device", "mirrored")] == [1, 1, 2]


@pytest.mark.parametrize("name", ["default", "one_device", "mirrored"])
def test_same_losses_and_weights_under_every_strategy(runs, name):
    reference, run = runs["default"], runs[name]
    assert sorted(losses(run)) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses(run)[s] for s in range(1, STEPS + 1)],
                               [losses(reference)[s] for s in range(1, STEPS + 1)], rtol=2e-5)
    for tag in ("train/accuracy", "train/learning_rate", "train/drop_probability_ops"):
        assert run["scalars"][tag] == pytest.approx(reference["scalars"][tag], rel=2e-5), tag
    # Masked L2 summed over replicas equals the single-replica term (§3.2).
    assert run["scalars"]["train/l2"] == pytest.approx(reference["scalars"]["train/l2"], rel=2e-5)
    ref_w, w = trainable(runs["weights"]["default"]), trainable(runs["weights"][name])
    assert sorted(w) == sorted(ref_w) and len(w) > 20
    for key in ref_w:
        np.testing.assert_allclose(w[key], ref_w[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert run["result"]["val_accuracy"] == pytest.approx(reference["result"]["val_accuracy"])
    assert run["global_step"] == STEPS


@pytest.mark.parametrize("name", ["default_loop3", "mirrored_loop3"])
def test_host_loop_of_3_steps_equals_single_steps(runs, name):
    single, looped = losses(runs["default"]), losses(runs[name])
    assert sorted(looped) == [3, 6]
    for end in (3, 6):  # a logging window averages its steps
        assert looped[end] == pytest.approx(np.mean([single[s] for s in range(end - 2, end + 1)]), rel=2e-5)
    ref_w, w = trainable(runs["weights"]["default"]), trainable(runs["weights"][name])
    for key in ref_w:
        np.testing.assert_allclose(w[key], ref_w[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert "3 step(s) per host loop" in runs[name]["log"][0]


def test_global_step_drives_the_schedules(runs):
    run = runs["mirrored"]
    lr = {int(s): v for s, v in run["scalars"]["train/learning_rate"].items()}
    drop = {int(s): v for s, v in run["scalars"]["train/drop_probability_ops"].items()}
    for step in range(1, STEPS + 1):
        # §4.1: learning rate 0.1 with cosine decay; §3.2: r^(1/7) ramped linearly.
        assert lr[step] == pytest.approx(0.05 * (1 + math.cos(math.pi * step / STEPS)), abs=1e-6)
        assert drop[step] == pytest.approx(0.1 ** (1 / 7) * step / STEPS, rel=1e-5)


def test_float16_uses_loss_scaling_and_float32_logits(runs):
    run, reference = runs["float16"], runs["default"]
    assert run["has_loss_scale"] and not reference["has_loss_scale"]
    assert run["policy_after"] == "float32"  # the mixed policy does not leak
    ref = losses(reference)
    for step, value in losses(run).items():
        assert math.isfinite(value) and value == pytest.approx(ref[step], rel=2e-2)
    assert "train/loss_scale" in run["scalars"] and "train/skipped_steps" in run["scalars"]
    # Skipped steps (if any) still advance the global step, so the schedules stay in place.
    assert run["global_step"] == STEPS
    for key, value in runs["weights"]["float16"].items():
        assert value.dtype == np.float32, key


def test_bfloat16_computes_in_bfloat16(runs):
    run, ref = losses(runs["bfloat16"]), losses(runs["default"])
    gaps = [abs(run[s] - ref[s]) for s in ref]
    assert max(gaps) < 5e-2 * max(ref.values())
    assert max(gaps) > 0  # it did not silently run in float32
    assert runs["bfloat16"]["policy_after"] == "float32"


def test_loss_scale_skip_is_agreed_across_replicas(runs):
    guard = runs["guard"]
    # One replica overflowed: no replica applies the step, the scale halves.
    assert guard["finite_bad"] == 0.0 and guard["w_bad"] == [1.0, 1.0, 1.0]
    assert guard["scale_bad"] == guard["scale0"] / 2
    # Both finite: SGD(0.5) applies the summed gradient of sum(w * 1) over 2 replicas.
    assert guard["finite_ok"] == 1.0 and guard["w_ok"] == pytest.approx([0.0, 0.0, 0.0])


@pytest.mark.parametrize("bn_mode", ["batch", "recalibrate"])
def test_scorer_splits_architectures_over_replicas_with_the_same_scores(runs, bn_mode):
    one, two = runs["scoring"][f"default_{bn_mode}"], runs["scoring"][f"mirrored_{bn_mode}"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two["per_call"] == 2 * one["per_call"]
    assert one["retraced"] == two["retraced"] == 0
    assert len(one["scores"]) == len(two["scores"]) == 7
    accuracies = [r["oneshot_accuracy"] for r in one["scores"]]
    assert len(set(accuracies)) > 1  # the architectures really differ
    for a, b in zip(one["scores"], two["scores"]):
        assert sorted(a) == sorted(b)
        for key in a:  # recalibration averages on each replica alone: the same numbers
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


# ------------------------------------------------------------- multi-worker
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(model_dir: str, steps: int) -> list[subprocess.CompletedProcess]:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2"}
        args = [sys.executable, "-m", "tf_oneshot", "train", "--strategy=multi_worker_mirrored",
                f"--model_dir={model_dir}", f"--train_steps={steps}", "--steps_per_loop=2", "--log_every=2",
                "--checkpoint_every=2"]
        args += [f"--{k}={v}" for k, v in TINY.items() if k not in ("train_steps", "checkpoint_every", "eval_batches")]
        procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.slow
def test_multi_worker_on_loopback_trains_and_resumes(tmp_path):
    model_dir = str(tmp_path / "mw")
    chief, worker = _run_workers(model_dir, steps=4)
    assert chief.returncode == 0 and worker.returncode == 0, chief.stderr[-3000:] + worker.stderr[-3000:]
    head = chief.stdout.splitlines()[0]
    assert "from step 0 to 4 (MultiWorkerMirrored, 2 replica(s), 2 ghost batch(es) of 8 per replica" in head
    # Cross-replica reduction: both workers report the same global metrics.
    chief_steps = [line for line in chief.stdout.splitlines() if line.startswith("step ")]
    worker_steps = [line.removeprefix("[worker 1] ") for line in worker.stdout.splitlines()
                    if line.startswith("[worker 1] step ")]
    assert len(chief_steps) == 4  # steps 2, 4, the line at the end of the dropout ramp, the validation line
    strip = [line.split(" (")[0] for line in chief_steps]
    assert strip == [line.split(" (")[0] for line in worker_steps]
    # Only the chief writes: one config, checkpoints 2 and 4, no worker scratch left.
    ckpts = sorted(f for f in os.listdir(os.path.join(model_dir, "checkpoints")) if f.endswith(".index"))
    assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
    assert sorted(os.listdir(model_dir)) == ["checkpoints", "config.json", "train"]
    # A restart on both workers resumes from the shared checkpoint.
    chief, worker = _run_workers(model_dir, steps=6)
    assert chief.returncode == 0 and worker.returncode == 0, chief.stderr[-3000:]
    assert "from step 4 to 6" in chief.stdout.splitlines()[0]
    assert "[worker 1] training" in worker.stdout and "from step 4 to 6" in worker.stdout


if __name__ == "__main__":
    _child(sys.argv[1])
