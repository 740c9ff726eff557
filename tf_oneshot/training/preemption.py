"""SIGTERM as a request to stop at the next safe point.

Cloud TPU VMs are preempted with SIGTERM (and maintenance and schedulers send
it too), then lost some seconds later. A long command therefore treats SIGTERM
as "finish the unit of work in hand, keep what is written, and exit 143"
(128 + SIGTERM, so wrappers can tell a preempted run from a finished one);
running the same command again resumes. The work loops (training steps,
scored batches, retrained pairs, demo stages) poll `Preemption.requested`
between units, so no write is ever cut by the signal itself.

Contexts nest: an inner one (the trainer inside the demo) starts requested if
the outer one already is, and passes a request on to the outer one, so the
caller learns of a signal that arrived while the callee was running.
"""

from __future__ import annotations

import signal
import sys
import threading

EXIT_CODE = 128 + signal.SIGTERM  # 143


class Preempted(Exception):
    """Raised inside a unit of work that stopped for SIGTERM (caught by its loop)."""


class Preemption:
    """Turns SIGTERM into `requested = True` while the context is active.

    Outside the main thread (where signal handlers cannot be installed) it
    only reflects an enclosing context.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._outer: Preemption | None = None
        self._installed = False

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            outer = getattr(current, "__self__", None)
            if isinstance(outer, Preemption):
                self._outer = outer
                self.requested = outer.requested
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._outer is not None:
            self._outer._handle(signum, frame)

    def __call__(self) -> bool:
        """Whether a stop was requested (so the context is a `stop` callable)."""
        return self.requested

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def stopped_message(command: str, detail: str = "") -> int:
    """Prints the one line a preempted command ends with; returns EXIT_CODE."""
    extra = f" ({detail})" if detail else ""
    print(f"tf-oneshot {command}: SIGTERM received{extra}; rerun the same command to resume.",
          file=sys.stderr, flush=True)
    return EXIT_CODE
