"""Batch norm at evaluation is a mode: its names and their check, without TensorFlow.

- "batch" (Bender et al. 2018, §3.2): each ghost batch's own statistics, on the fly;
- "recalibrate" (SPOS §3.4): each candidate's statistics recomputed on training
  images before it is evaluated;
- "running": the moving statistics training left in the shared weights, as
  they are ("Deeper insights" App. A.2.2, Figure 8: their instability involves
  them).

The scorer compiles them (`tf_oneshot.search.scorer`); the search entry, NAO-V2's
iterated loop and the KerasTuner tuner check a mode here, before any model loads.
"""

from __future__ import annotations

from tf_oneshot.errors import UserError

BN_MODES = ("batch", "recalibrate", "running")


def check_bn_mode(mode: str) -> str:
    """`mode`, or a one-line UserError naming the modes (the flag is --bn_mode)."""
    if mode not in BN_MODES:
        raise UserError(f"unknown bn_mode {mode!r}; choose --bn_mode={' or --bn_mode='.join(BN_MODES)}.")
    return mode
