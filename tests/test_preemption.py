"""Preemption: `tf-oneshot train` killed at random moments always resumes, and the run
ends exactly at --train_steps with the schedules where they belong.

Cloud TPU VMs are preempted with SIGTERM, then lost; a crash is a SIGKILL. The
trainer saves on SIGTERM and exits 0; a checkpoint write cut by SIGKILL must
leave the previous checkpoint loadable (Bender et al. 2018, §4.1 schedules are
functions of the global step, so they resume in place).
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 240
FLAGS = [
    "--dataset=digits", "--filters=4", "--num_cells=1", "--num_stacks=1", "--num_blocks=1",
    "--batch_size=32", "--ghost_batch_size=8", f"--train_steps={STEPS}", "--steps_per_loop=2",
    "--checkpoint_every=8", "--log_every=4", "--seed=5",
]
MAX_KILLS = 6


class Run:
    """One `python -m tf_oneshot train` process whose output is read as it comes."""

    def __init__(self, model_dir: str, *extra: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tf_oneshot", "train", f"--model_dir={model_dir}", *FLAGS, *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.training = threading.Event()  # the trainer has started
        self.reached = threading.Event()  # ... and logged a step >= self.target
        self.target = math.inf
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("training "):
                self.training.set()
            logged = re.match(r"step (\d+)/", line)
            if logged and int(logged[1]) >= self.target:
                self.reached.set()

    def finish(self, timeout: float = 240) -> str:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return "\n".join(self.lines)


def latest_step(model_dir: str) -> int | None:
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return None if path is None else int(path.rsplit("-", 1)[-1])


def schedule_scalars(model_dir: str) -> list[tuple[str, int, float]]:
    out = []
    for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for v in event.summary.value:
                    out.append((v.tag, event.step, float(tf.make_ndarray(v.tensor))))
        except tf.errors.DataLossError:  # a SIGKILL may tear the last record
            pass
    return out


@pytest.mark.slow
def test_sigterm_and_sigkill_at_random_moments_resume_to_the_exact_end(tmp_path):
    seed = int(os.environ.get("PREEMPTION_SEED", time.time_ns() % 2**31))
    rng = random.Random(seed)
    model_dir = str(tmp_path / "run")
    history = []  # (signal, moment, rc, start, saved) for the failure message
    kills = mid_training = 0
    for _attempt in range(MAX_KILLS + 3):
        before = latest_step(model_dir)
        run = Run(model_dir)
        # Kills are placed by logged step, not by time alone: a steps/s that
        # differs between machines must not let the run finish before the last kill.
        run.target = (before or 0) + rng.randint(4, 24)
        sig, moment = None, None
        if kills < MAX_KILLS:
            sig = signal.SIGTERM if kills % 2 == 0 else signal.SIGKILL
            if kills % 3 == 2:  # "any moment": start-up, tracing, training or saving
                moment = rng.uniform(0.5, 12.0)
                run.reached.wait(timeout=moment)
            else:  # surely mid-training: shortly after a logged step
                moment = rng.uniform(0.0, 0.1)
                assert run.reached.wait(timeout=120), run.finish()
                time.sleep(moment)
            was_training = run.training.is_set()
            if run.proc.poll() is None:
                run.proc.send_signal(sig)
                kills += 1
                mid_training += was_training
            else:
                sig = None
        out = run.finish()
        rc = run.proc.returncode
        after = latest_step(model_dir)
        starts = re.findall(r"from step (\d+) to", out)
        history.append((sig and sig.name, moment, rc, starts, after))
        context = f"seed={seed} history={history}\n{out[-3000:]}"
        # Every (re)start resumes from the last checkpoint that was complete.
        if starts:
            assert int(starts[0]) == (before or 0), context
        if sig == signal.SIGTERM and starts:
            # Clean exit with 128 + SIGTERM: checkpoint at the step reached, said in one line.
            assert rc == 143, context
            saved = re.findall(r"SIGTERM received: checkpoint saved at step (\d+)", out)
            assert saved and int(saved[0]) == after, context
        elif sig == signal.SIGTERM:
            assert rc in (0, -signal.SIGTERM), context  # killed before the trainer started
        elif sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL, context
        else:
            assert rc == 0, context
        if after is not None and before is not None:
            assert after >= before, context
        if sig is None and "all-on validation accuracy" in out:
            break
    print(f"seed={seed}", *history, sep="\n")
    assert kills == MAX_KILLS and mid_training >= 3, f"seed={seed} history={history}"
    # The run ended exactly at --train_steps, each step applied once in the
    # lineage that survived: the optimizer's own counter agrees.
    assert latest_step(model_dir) == STEPS
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE") == STEPS
    iterations = [name for name, _ in tf.train.list_variables(path) if name.startswith("optimizer/_iterations")]
    assert iterations and tf.train.load_variable(path, iterations[0]) == STEPS
    # (A kill after the last save but before the final evaluation leaves a
    # finished model_dir: the rerun only evaluates.)
    assert f"step {STEPS}/{STEPS}:" in out or f"already trained to step {STEPS} " in out
    assert f"step {STEPS}: all-on validation accuracy" in out
    # Schedule positions after every restart: the logged learning rate and drop
    # probability are the schedules' values at the logged global step.
    scalars = schedule_scalars(model_dir)
    logged = {(tag, step) for tag, step, _ in scalars}
    assert {step for tag, step in logged if tag == "train/learning_rate"} >= set(range(4, STEPS + 1, 4))
    for tag, step, value in scalars:
        if tag == "train/learning_rate":
            assert value == pytest.approx(0.05 * (1 + math.cos(math.pi * step / STEPS)), abs=1e-6), step
        elif tag == "train/drop_probability_ops":
            assert value == pytest.approx(0.1 ** (1 / 7) * step / STEPS, rel=1e-5), step


def test_ctrl_c_saves_a_checkpoint_at_the_current_step_and_exits_130(tmp_path):
    # Issue 19 item 6: Ctrl-C said "finished work is saved" and exited 2 with no
    # checkpoint; with --checkpoint_every past the end, only the stop itself can save.
    model_dir = str(tmp_path / "run")
    run = Run(model_dir, "--checkpoint_every=1000")
    run.target = 12
    assert run.reached.wait(timeout=180), run.finish()
    run.proc.send_signal(signal.SIGINT)
    out = run.finish()
    assert run.proc.returncode == 130, out[-3000:]
    saved = re.findall(r"SIGINT received: checkpoint saved at step (\d+); run again to resume", out)
    assert saved and 12 <= int(saved[0]) < STEPS and latest_step(model_dir) == int(saved[0]), out[-3000:]
    assert "finished work is saved" not in out


# --- SIGTERM in the other long commands: retrain and the demo stop and resume ------------

class Command:
    """A `python` child whose merged output is read line by line as it comes."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT}
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(
            line.rstrip("\n") for line in self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, predicate, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"not reached (rc={self.proc.poll()}):\n" + "\n".join(self.lines[-40:]))

    def terminate(self) -> tuple[int, float]:
        """Sends SIGTERM; returns (exit code, seconds it took to exit)."""
        tic = time.time()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return rc, time.time() - tic

    def finish(self, timeout: float = 300) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _lines(path: str) -> list[str]:
    return open(path).read().splitlines() if os.path.exists(path) else []


RETRAIN_ARCHS = ("01:15/2:3", "1:0/012:26", "0:4/01:5")


@pytest.mark.slow
def test_sigterm_stops_retrain_between_runs_and_the_rerun_finishes(tmp_path):
    results, export = str(tmp_path / "retrain.jsonl"), str(tmp_path / "export")
    args = ["-m", "tf_oneshot", "retrain", f"--architectures={','.join(RETRAIN_ARCHS)}", f"--results={results}",
            f"--output_dir={export}", "--num_blocks=2", "--num_cells=2", "--num_stacks=1", "--filters=4",
            "--batch_size=32", "--ghost_batch_size=16", "--train_steps=200", "--log_every=5", "--seeds=0"]
    run = Command(args)
    # Mid-way through the second run, after the first was recorded.
    run.wait_for(lambda r: any(line.startswith(f"  {RETRAIN_ARCHS[1]} seed 0: step ") for line in r.lines))
    rc, seconds = run.terminate()
    assert rc == 143 and seconds < 20, (rc, seconds, run.text[-3000:])
    assert run.lines[-1].startswith("tf-oneshot retrain: SIGTERM received")
    assert run.lines[-1].endswith("; rerun the same command to resume.")
    first = _lines(results)
    assert [json.loads(line)["architecture"] for line in first] == [RETRAIN_ARCHS[0]]
    assert not os.path.exists(os.path.join(export, "best.json"))  # no export of a partial run

    again = Command(args)
    assert again.finish() == 0, again.text[-3000:]
    assert "1 runs already in" in again.text and "2 to train" in again.text
    after = _lines(results)
    assert after[:1] == first and [json.loads(line)["architecture"] for line in after] == list(RETRAIN_ARCHS)
    best = json.load(open(os.path.join(export, "best.json")))
    assert best["architecture"] in RETRAIN_ARCHS and os.path.exists(os.path.join(export, "best.keras"))


_DEMO = r"""
import sys
from tf_oneshot.commands import cli
from tf_oneshot import demo
from tf_oneshot.training.config import TrainConfig
# `tf-oneshot demo` at test size: the command runs demo.DEFAULT_CONFIG.
demo.DEFAULT_CONFIG = demo.DemoConfig(
    train=TrainConfig(dataset="digits", filters=4, num_cells=2, num_stacks=1, num_blocks=2, batch_size=32,
                      ghost_batch_size=16, train_steps=30, checkpoint_every=10, log_every=2, eval_batches=1,
                      skip_threshold=0.0),
    num_random=80, num_evolution=8, population_size=4, num_parents=2, num_retrain=2, retrain_steps=3,
    archs_per_pass=2, kl=False,
)
sys.exit(cli.main(["tf-oneshot", "demo", "--output_dir=" + sys.argv[1]]))
"""


@pytest.mark.slow
def test_sigterm_stops_the_demo_in_training_and_in_search_and_it_resumes(tmp_path):
    out = str(tmp_path / "demo")
    args = ["-c", _DEMO, out]
    # 1. Mid-training: the demo must not go on to search a half-trained model.
    run = Command(args)
    run.wait_for(lambda r: any(re.match(r"step (\d+)/30", line) for line in r.lines))
    rc, seconds = run.terminate()
    assert rc == 143 and seconds < 20, (rc, seconds, run.text[-3000:])
    saved = re.findall(r"SIGTERM received: checkpoint saved at step (\d+)", run.text)
    assert saved and int(saved[0]) < 30 and latest_step(os.path.join(out, "oneshot")) == int(saved[0])
    assert "[2/5]" not in run.text and not os.path.exists(os.path.join(out, "search"))
    assert run.lines[-1] == ("tf-oneshot demo: SIGTERM received (stopped in its training stage); "
                             "rerun the same command to resume.")

    # 2. The same command resumes training, then is stopped while it scores architectures.
    random_path = os.path.join(out, "search", "random.jsonl")
    run = Command(args)
    run.wait_for(lambda r: len(_lines(random_path)) >= 4)
    rc, seconds = run.terminate()
    assert rc == 143 and seconds < 20, (rc, seconds, run.text[-3000:])
    assert f"from step {saved[0]} to 30" in run.text and "resuming the unfinished demo" in run.text
    assert "tf-oneshot demo: SIGTERM received (stopped in its" in run.lines[-1]
    scored = _lines(random_path)
    assert not os.path.exists(os.path.join(out, "summary.json"))

    # 3. And once more, to the end: nothing finished is lost or redone.
    run = Command(args)
    assert run.finish() == 0, run.text[-3000:]
    assert "already trained to step 30" in run.text and "[5/5]" in run.text
    assert _lines(random_path)[: len(scored)] == scored and len(_lines(random_path)) == 80
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["num_random"] == 80 and summary["num_evolution"] == 8
    assert os.path.exists(os.path.join(out, summary["export"]["keras"]))
    # (A finished demo is still refused: tests/test_demo.py.)
