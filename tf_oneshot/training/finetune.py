"""Few-step fine-tuning of children from the shared weights ("Deeper insights" §3.3, Insight 2, Figure 4).

A trained one-shot model ranks its children noisily (§3.2). §3.3 fine-tunes
each child alone for a few mini-batches, inheriting the weights of a supernet
snapshot, then evaluates it: GT-Tau climbs from about 0.5 to 0.6-0.8 within
5-10 mini-batches ("Weight sharing super-net could act as a good pretrained
model").

Both ways go through the one child trainer (`tf_oneshot.training.child`)
with the snapshot as every child's initial weights: `FineTuner` fine-tunes
inside the one-shot model under the child's fixed masks (`MaskedChild`):
every child starts from a fresh copy of the snapshot's weights and a reset
optimizer, and one traced train step serves every child.
`finetune_standalone` does the same on the child's own Keras model
(`StandaloneChild`), and `inherited_child` returns that Keras model for the
user to keep training or export (`retrain.export_model`).

The setting: the one-shot run's dataset, batch, ghost batch, Nesterov
momentum and masked weight decay; a constant learning rate (default: the
one-shot run's initial rate); the data order fixed by `seed`, so every child
sees the same mini-batches and the score after n steps is the same whether
n is asked alone or on the way to a longer curve; batch norm recalibrated
over `recalibration_images` training images before each evaluation, as the
ground truth's children are (`tf_oneshot.training.groundtruth`).

`rerank` fine-tunes the top candidates of a search and records each
fine-tuned score beside its one-shot score in its own JSON-lines file (a
`RecordFile`: resumable; the search's results are never rewritten).
`gt_tau_against_steps` and `plot_gt_tau_against_steps` give Figure 4c/d:
GT-Tau against n.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_oneshot.analysis import ground_truth as metrics
from tf_oneshot.errors import UserError
from tf_oneshot.record_file import RecordFile
from tf_oneshot.training.child import (
    RECALIBRATION_IMAGES,
    MaskedChild,
    StandaloneChild,
    build_model,
    recalibrate_batch_norm,
)
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.model_dir import LoadedOneShot, ModelDir
from tf_oneshot.training.preemption import Preempted

RECORD_KIND = "tf_oneshot.finetune"
# Fields that fix what a fine-tuned score means: lines that differ in one are refused.
IDENTITY_FIELDS = ("space", "checkpoint_step", "finetune_seed", "finetune_learning_rate", "batch_size",
                   "ghost_batch_size", "momentum", "weight_decay", "bn_recalibration_images")


# ------------------------------------------------------------------ checks
def check_steps(steps: int | Sequence[int]) -> list[int]:
    """Fine-tuning step counts as a sorted list of distinct ints >= 0 (UserError otherwise)."""
    values = [steps] if isinstance(steps, (int, np.integer)) else list(steps)
    if not values:
        raise UserError("no fine-tuning steps given; e.g. --finetune_steps=10, or 0,1,2,5,10,20 for a curve.")
    for n in values:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise UserError(f"--finetune_steps={n!r} is invalid; expected mini-batches >= 0 (\"Deeper insights\" "
                            "§3.3: 5-64).")
    return sorted({int(n) for n in values})


def check_top(top: int) -> int:
    """The number of search candidates to fine-tune (UserError below 1)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise UserError(f"--finetune_top={top!r} is invalid; expected the number of best candidates to "
                        "fine-tune, at least 1 (e.g. 10).")
    return int(top)


def finetune_config(config: TrainConfig, steps: int, learning_rate: float | None = None) -> TrainConfig:
    """The one-shot run's setting for `steps` fine-tuning steps at a constant learning rate."""
    rate = config.optimizer.learning_rate if learning_rate is None else float(learning_rate)
    if not rate > 0 or not math.isfinite(rate):
        raise UserError(f"the fine-tuning learning rate {rate!r} is invalid; expected a positive number.")
    return config.replace(train_steps=max(1, int(steps)), lr_schedule="constant", learning_rate=rate)


def _arch(space: Any, arch: Hashable | str) -> Hashable:
    return space.parse(arch) if isinstance(arch, str) else space.validate(arch)


# ---------------------------------------------------------- Keras children
def inherited_child(model_dir: str | ModelDir, arch: Hashable | str,
                    recalibration_images: int = RECALIBRATION_IMAGES) -> keras.Model:
    """The stand-alone Keras model of `arch` holding the shared weights of `model_dir`'s latest checkpoint.

    A plain Keras model: keep training it (`model.fit`, or
    `child.train_standalone(snapshot=...)` from the snapshot itself), or
    export it (`retrain.export_model`). Its batch-norm statistics are
    recomputed over `recalibration_images` training images (0: the one-shot
    model's moving statistics, shared by all children), so inference is
    meaningful at once.
    Before any training its outputs equal the one-shot model's under `arch`'s
    masks (tests/test_finetune.py).
    """
    loaded = ModelDir.open(model_dir).load_oneshot()
    arch = _arch(loaded.space, arch)
    model = build_model(loaded.space, arch, loaded.config)
    loaded.space.inherit_weights(loaded.model, model, arch)
    if recalibration_images:
        recalibrate_batch_norm(model, loaded.config, num_images=recalibration_images)
    return model


def finetune_standalone(model_dir: str | ModelDir | LoadedOneShot, arch: Hashable | str, steps: int, seed: int = 0,
                        learning_rate: float | None = None, recalibration_images: int = RECALIBRATION_IMAGES,
                        strategy: tf.distribute.Strategy | None = None) -> tuple[keras.Model, dict[str, Any]]:
    """Fine-tunes `arch`'s own Keras model from the shared weights for `steps` steps; (model, metrics).

    One model and one trace per child: `FineTuner` is the faster way to
    score many children; this one returns the fine-tuned model itself.
    `model_dir` may also be a `ModelDir.load_oneshot` result, loaded once
    for many children. With 0 steps the child is the snapshot's, recalibrated.
    """
    steps = check_steps(steps)[-1]
    loaded = model_dir if isinstance(model_dir, LoadedOneShot) else ModelDir.open(model_dir).load_oneshot()
    trainer = StandaloneChild(loaded.space, finetune_config(loaded.config, steps, learning_rate), strategy,
                              snapshot=loaded.model, recalibration_images=recalibration_images)
    metrics = trainer.run(_arch(loaded.space, arch), seed, steps)
    return trainer.model, metrics


# ------------------------------------------------------------ masked, traced once
class FineTuner:
    """Fine-tunes children of one snapshot one at a time inside the one-shot model, traced once.

    Args:
        model_dir: a trained one-shot model_dir (its latest checkpoint is the snapshot).
        steps: fine-tuning step counts at which each child is evaluated
            (one run per child to the largest; 0: the snapshot itself).
        seed: the data order (the same mini-batches for every child).
        learning_rate: constant rate (default: the one-shot run's initial rate).
        recalibration_images: batch-norm recalibration before each evaluation.
        strategy: a tf.distribute strategy.
        stop: polled between chunks of training (`Preempted` then).
        data_dir: TFDS data directory (default: the one-shot run's).
        jit_compile: compile the train step with XLA (default: as the
            one-shot run did). On 2 CPU cores XLA's first trace costs ~15 s
            and then halves each child's steps (benchmarks/finetune_speed.py).
    """

    def __init__(self, model_dir: str | ModelDir, steps: int | Sequence[int], seed: int = 0,
                 learning_rate: float | None = None, recalibration_images: int = RECALIBRATION_IMAGES,
                 strategy: tf.distribute.Strategy | None = None, stop: Callable[[], bool] | None = None,
                 data_dir: str | None = None, jit_compile: bool | None = None) -> None:
        self.steps = check_steps(steps)
        loaded = ModelDir.open(model_dir).load_oneshot()
        self.space, self.checkpoint_step = loaded.space, loaded.step
        self.seed = int(seed)
        self.config = finetune_config(loaded.config, self.steps[-1], learning_rate)
        if data_dir is not None:
            self.config = self.config.replace(data_dir=data_dir)
        if jit_compile is not None:
            self.config = self.config.replace(jit_compile=bool(jit_compile))
        self.recalibration_images = int(recalibration_images)
        self.trainer = MaskedChild(self.space, self.config, strategy, snapshot=loaded.model,
                                   recalibration_images=recalibration_images, stop=stop)

    def identity(self) -> dict[str, Any]:
        """What fixes a fine-tuned score (`IDENTITY_FIELDS`)."""
        c = self.config.to_flat()
        return json.loads(json.dumps({"space": self.space.to_config(), "checkpoint_step": self.checkpoint_step,
                "finetune_seed": self.seed, "finetune_learning_rate": c["learning_rate"],
                **{k: c[k] for k in ("batch_size", "ghost_batch_size", "momentum", "weight_decay")},
                "bn_recalibration_images": self.recalibration_images}))  # as read back from a file

    def __call__(self, arch: Hashable | str) -> list[dict[str, Any]]:
        """One dict per step count: finetune_steps, validation_accuracy/_loss/_examples, train_loss, seconds."""
        arch = _arch(self.space, arch)
        tic = time.perf_counter()
        self.trainer.start(arch, self.seed)
        out, done, loss = [], 0, None
        for n in self.steps:
            if n > done:
                loss = self.trainer.train(n - done)
                done = n
            out.append({"finetune_steps": n, "train_loss": loss, **self.trainer.measure(("validation",)),
                        "seconds": round(time.perf_counter() - tic, 3)})
        return out


# ---------------------------------------------------------------- re-ranking
def finetune_results_path(results_path: str) -> str:
    """Where the fine-tuned scores of a search's results file go: beside it, `<name>.finetune.jsonl`."""
    root, _ = os.path.splitext(results_path)
    return f"{root}.finetune.jsonl"


def _scores_file(path: str, identity: dict[str, Any]) -> RecordFile:
    """One line per fine-tuned (architecture, finetune_steps), all of one setting (`IDENTITY_FIELDS`)."""
    return RecordFile(path, RECORD_KIND, identity, key=lambda r: (r["architecture"], int(r["finetune_steps"])),
                      what="a fine-tuning result", fix="use the same settings, or move the file aside to fine-tune anew",
                      flush_seconds=0.0)  # seconds per line: each is written at once, remote files too


def read_finetuned(path: str, identity: dict[str, Any]) -> dict[tuple[str, int], dict]:
    """{(architecture, finetune_steps): record} of a fine-tune file; UserError for lines of another setting."""
    return _scores_file(path, identity).load()


def rerank(candidates: Sequence[dict[str, Any]], finetuner: FineTuner, path: str, top: int,
           log: Callable[[str], None] = print, stop: Callable[[], bool] | None = None,
           ) -> tuple[list[dict[str, Any]], bool]:
    """Fine-tunes the `top` candidates by one-shot accuracy; returns (their records best first, stopped).

    Args:
        candidates: search result lines (architecture, oneshot_accuracy, ...).
        finetuner: fine-tunes at its largest step count.
        path: the JSON-lines file of fine-tuned scores; a candidate found
            there with the same setting and steps is not fine-tuned again.
        top: how many of the best candidates to fine-tune.
        log: progress lines.
        stop: polled before each candidate (SIGTERM); True ends the loop, every
            finished line kept.

    Each line holds the candidate's one-shot accuracy and loss beside its
    fine-tuned validation accuracy and loss. Records are ordered by
    fine-tuned accuracy, ties broken by the lower fine-tuned loss.
    """
    top = check_top(top)
    steps = finetuner.steps[-1]
    identity = finetuner.identity()
    done, scores = read_finetuned(path, identity), _scores_file(path, identity)
    best = sorted(candidates, key=lambda r: (-float(r["oneshot_accuracy"]), float(r.get("loss", 0.0))))[:top]
    records, todo = [], [c for c in best if (c["architecture"], steps) not in done]
    log(f"fine-tuning the best {len(best)} candidates for {steps} steps each: {len(best) - len(todo)} found in "
        f"{path}, {len(todo)} to fine-tune")
    for candidate in best:
        key = (candidate["architecture"], steps)
        if key not in done:
            try:
                if stop is not None and stop():
                    raise Preempted("before " + key[0])
                result = finetuner(key[0])[-1]
            except Preempted:
                return [], True
            done[key] = scores.append({
                "architecture": key[0],
                "oneshot_accuracy": float(candidate["oneshot_accuracy"]), "oneshot_loss": candidate.get("loss"),
                "finetuned_accuracy": result["validation_accuracy"], "finetuned_loss": result["validation_loss"],
                **result,
            })
            log(f"  {key[0]}: one-shot {candidate['oneshot_accuracy']:.4f} -> fine-tuned "
                f"{result['validation_accuracy']:.4f} (loss {result['validation_loss']:.4f})")
        records.append(done[key])
    records.sort(key=lambda r: (-r["finetuned_accuracy"], r["finetuned_loss"]))
    return records, False


# ------------------------------------------------------------- Figure 4
def gt_tau_against_steps(ground_truth: str | dict, model_dir: str | ModelDir, steps: Sequence[int], seed: int = 0,
                         learning_rate: float | None = None, recalibration_images: int = RECALIBRATION_IMAGES,
                         log: Callable[[str], None] = print, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """GT-Tau of the fine-tuned ranking against the fine-tuning steps n, Figure 4c/d.

    Every child of the ground truth (`groundtruth` summary, a path or the
    dict) is fine-tuned once from `model_dir`'s snapshot, to the largest n,
    and evaluated at each n (`stop`: `Preempted` between chunks). Both
    rankings order by validation accuracy, ties broken by the lower loss
    (`analysis.ground_truth.accuracy_then_loss`).

    Returns:
        {"steps": [n ...], "gt_tau": [...], "gt_tau_accuracy": [...] (accuracy
        alone, ties left tied), "children": [architecture ...],
        "validation_accuracy"/"validation_loss": [[per child] per n],
        "checkpoint_step": int}.

    Raises:
        UserError: a ground truth of another space, or bad steps.
    """
    from tf_oneshot.training.groundtruth import load_summary

    model_dir = ModelDir.open(model_dir)
    summary = load_summary(ground_truth) if isinstance(ground_truth, str) else ground_truth
    _check_same_space(summary, model_dir.space, model_dir)
    check_steps(steps)
    tuner = FineTuner(model_dir, steps, seed, learning_rate, recalibration_images, stop=stop)
    return gt_tau_curve(summary, tuner, log)


def _check_same_space(summary: dict[str, Any], space: Any, model_dir: str) -> None:
    if summary.get("space") != json.loads(json.dumps(space.to_config())):
        raise UserError(f"the ground truth is of another search space than {model_dir}'s "
                        f"({(summary.get('space') or {}).get('space')} vs {space.name}, or other fields); pass the "
                        "ground truth of the space the one-shot model was trained on.")


def gt_tau_curve(summary: dict[str, Any], tuner: FineTuner, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`gt_tau_against_steps` with a built `FineTuner` (its steps, snapshot and setting)."""
    _check_same_space(summary, tuner.space, "the fine-tuner")
    children = [c["architecture"] for c in summary["children"]]
    truth = metrics.accuracy_then_loss([c["validation_accuracy_mean"] for c in summary["children"]],
                                       [c["validation_loss_mean"] for c in summary["children"]])
    truth_accuracy = [c["validation_accuracy_mean"] for c in summary["children"]]
    accuracy = np.zeros((len(tuner.steps), len(children)))
    loss = np.zeros_like(accuracy)
    for j, child in enumerate(children):
        for i, result in enumerate(tuner(child)):
            accuracy[i, j], loss[i, j] = result["validation_accuracy"], result["validation_loss"]
        log(f"[{j + 1}/{len(children)}] {child}: " + ", ".join(
            f"n={n} {a:.3f}" for n, a in zip(tuner.steps, accuracy[:, j])))
    taus = [metrics.gt_tau(metrics.accuracy_then_loss(a, lo), truth) for a, lo in zip(accuracy, loss)]
    taus_accuracy = [metrics.gt_tau(a, truth_accuracy) for a in accuracy]
    return {"steps": tuner.steps, "gt_tau": taus, "gt_tau_accuracy": taus_accuracy, "children": children,
            "validation_accuracy": accuracy.tolist(), "validation_loss": loss.tolist(),
            "checkpoint_step": tuner.checkpoint_step}


def plot_gt_tau_against_steps(curve: dict[str, Any], path: str, title: str = "",
                              size: tuple[int, int] = (800, 600)) -> str:
    """GT-Tau (y) against fine-tuning mini-batches n (x), Figure 4c/d; writes the PNG atomically."""
    from tf_oneshot.analysis.plots import figure, save_figure  # matplotlib: imported on use

    fig, ax = figure(size)
    ax.plot(curve["steps"], curve["gt_tau"], "o-", color="tab:blue", label="accuracy, ties by loss")
    ax.plot(curve["steps"], curve["gt_tau_accuracy"], "s--", color="tab:orange", alpha=0.7, label="accuracy alone")
    ax.set_xlabel("fine-tuning mini-batches n (each child alone, from the shared weights)")
    ax.set_ylabel("GT-Tau (Kendall tau with the ground truth)")
    ax.set_title(title or f"Fine-tuning from the snapshot at step {curve.get('checkpoint_step')}")
    ax.legend()
    return save_figure(fig, path)
