"""SIGTERM and Ctrl-C (SIGINT) as a request to stop at the next safe point.

Cloud TPU VMs are preempted with SIGTERM (and maintenance and schedulers send
it too), then lost some seconds later. A long command therefore treats SIGTERM
as "finish the unit of work in hand, keep what is written, and exit 143"
(128 + SIGTERM, so wrappers can tell a preempted run from a finished one);
running the same command again resumes. The work loops (training steps,
scored batches, retrained pairs, demo stages) poll `Preemption.requested`
between units, so no write is ever cut by the signal itself.

Ctrl-C is the same request from a person at the terminal: the same
checkpoint at the current step, exit 130 (128 + SIGINT, the shell's
convention), and a message naming the signal that was received. A second
Ctrl-C before the safe point raises KeyboardInterrupt at once (the impatient
user's way out; work since the last save is then lost, and the CLI says so).

Contexts nest: an inner one (the trainer inside the demo) starts requested if
the outer one already is, and passes a request on to the outer one, so the
caller learns of a signal that arrived while the callee was running.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received = [signal.SIGTERM]  # the last stop signal this process received (one slot, module-wide)


def signal_name() -> str:
    """The stop signal this process received last, as the messages name it ("SIGTERM" or "SIGINT")."""
    return signal.Signals(_received[0]).name


def exit_code() -> int:
    """128 + the stop signal received: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + int(_received[0])


class Preempted(Exception):
    """Raised inside a unit of work that stopped for SIGTERM or SIGINT (caught by its loop)."""


class Preemption:
    """Turns SIGTERM and SIGINT into `requested = True` while the context is active.

    Outside the main thread (where signal handlers cannot be installed) it
    only reflects an enclosing context.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}
        self._outer: Preemption | None = None
        self._installed = False

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGTERM)
            outer = getattr(current, "__self__", None)
            if isinstance(outer, Preemption):
                self._outer = outer
                self.requested = outer.requested
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested and _received[0] == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without waiting for the safe point
        _received[0] = signum
        self._request()

    def _request(self) -> None:
        self.requested = True
        if self._outer is not None:
            self._outer._request()

    def __call__(self) -> bool:
        """Whether a stop was requested (so the context is a `stop` callable)."""
        return self.requested

    def __exit__(self, *exc) -> None:
        if self._installed:
            for s, previous in self._previous.items():
                signal.signal(s, previous)
            self._installed = False


def stopped_message(command: str, detail: str = "") -> int:
    """Prints the one line a stopped command ends with; returns `exit_code()` (143 or 130)."""
    extra = f" ({detail})" if detail else ""
    print(f"tf-oneshot {command}: {signal_name()} received{extra}; rerun the same command to resume.",
          file=sys.stderr, flush=True)
    return exit_code()
