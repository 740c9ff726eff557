"""Every child's one-shot score at each of the last K checkpoints of a run ("Deeper insights", §3.2).

§3.2 ranks the children at each of the last 10 epochs of one instance
("Different epochs", Tables 1-2, Figure 3b) and §4.1 at each of the last 64
mini-batches (GT-Tau-Mean-64). A run keeps its last `--keep_checkpoints`
checkpoints (tf.train.CheckpointManager), so train with at least K kept and
`--checkpoint_every` at the spacing wanted; this module restores each of the
last K into one model and scores every child with one compiled scorer (the
architecture and the checkpoint are data: no retrace per child or snapshot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import tensorflow as tf

from tf_oneshot.errors import UserError
from tf_oneshot.search.scorer import OneShotScorer
from tf_oneshot.training.model_dir import ModelDir, restore, step_of


@dataclasses.dataclass(frozen=True)
class SnapshotScores:
    """One-shot accuracy and loss of each child at each snapshot, oldest first.

    Args:
        model_dir: the run.
        children: the children's string forms (the columns).
        steps: the step of each snapshot (the rows).
        accuracy, loss: [snapshots, children].
        bn_mode: how batch norm was evaluated (`tf_oneshot.search.bn_modes`).
    """

    model_dir: str
    children: tuple[str, ...]
    steps: tuple[int, ...]
    accuracy: np.ndarray
    loss: np.ndarray
    bn_mode: str = "batch"


def last_checkpoints(model_dir: ModelDir, count: int) -> list[str]:
    """The last `count` checkpoints of a run, oldest first.

    Raises:
        UserError: a bad count, or a run that kept fewer checkpoints.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"--snapshots={count} is invalid; expected a positive number of checkpoints.")
    paths = model_dir.checkpoint_paths()
    if len(paths) < count:
        raise UserError(f"{model_dir} keeps {len(paths)} checkpoint(s), fewer than --snapshots={count}; train it "
                        f"with --keep_checkpoints={count} or more (and --checkpoint_every at the spacing wanted).")
    return paths[-count:]


def score_snapshots(model_dir: str | ModelDir, children: Sequence[Hashable] | None = None, snapshots: int = 1,
                    validation_examples: int | None = None, archs_per_pass: int | None = None,
                    log: Callable[[str], None] = print, bn_mode: str = "batch") -> SnapshotScores:
    """Scores `children` (default: every child of the run's space) at the last `snapshots` checkpoints.

    Batch norm uses batch statistics on the fly by default (Bender et al.
    2018, §3.2); `bn_mode="running"` the moving statistics of each snapshot
    ("Deeper insights" App. A.2.2), "recalibrate" each child's own (SPOS
    §3.4). Under partial sharing each child is scored on its own copy of the weights.

    Raises:
        UserError: a missing or foreign model_dir, too few checkpoints, or
            children of another space.
    """
    model_dir = ModelDir.open(model_dir)
    space = model_dir.space
    paths = last_checkpoints(model_dir, snapshots)
    children = (list(space.enumerate()) if children is None
                else [space.parse(c) if isinstance(c, str) else space.validate(c) for c in children])
    scorer = OneShotScorer.from_model_dir(model_dir, bn_mode=bn_mode, validation_examples=validation_examples,
                                          archs_per_pass=archs_per_pass)
    checkpoint = tf.train.Checkpoint(model=scorer.model)
    accuracy, loss, steps = [], [], []
    for path in paths:
        restore(checkpoint, path, partial=True)
        records = scorer.score(children)
        accuracy.append([r["oneshot_accuracy"] for r in records])
        loss.append([r["loss"] for r in records])
        steps.append(step_of(path))
        log(f"{model_dir} step {steps[-1]}: scored {len(children)} children (bn_mode={bn_mode}), best one-shot accuracy "
            f"{max(accuracy[-1]):.4f}")
    return SnapshotScores(model_dir.path, tuple(str(c) for c in children), tuple(steps),
                          np.array(accuracy, np.float64), np.array(loss, np.float64), bn_mode)
