"""Interrupts as exceptions, and holding them to the end of a training step.

Python raises ``KeyboardInterrupt`` on SIGINT (Ctrl-C); the command line raises it on SIGTERM
too (:func:`raise_terminated`), so ``kill PID`` takes Ctrl-C's path. Raised mid-step, it leaves
weights, optimizer state and counters out of step with each other, where no checkpoint can be
taken: a run lost every step since its last checkpoint (up to an epoch by default). The
training loop holds such an interrupt to the end of the step it lands in
(:class:`StepInterrupts`), saves a checkpoint there, then raises it.
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Callable

#: "interrupted" is Ctrl-C's own word; the message of a SIGTERM raised as an interrupt
TERMINATED = "terminated (SIGTERM)"


def interrupt_word(signum: int) -> str:
    """How a stop by ``signum`` is said: Ctrl-C's word for SIGINT, :data:`TERMINATED` else."""
    return "interrupted" if signum == signal.SIGINT else TERMINATED


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that stops as Ctrl-C does."""
    raise KeyboardInterrupt(TERMINATED)


# the handlers known to do nothing but raise KeyboardInterrupt: only these may be held back
_INTERRUPTING: tuple[Callable[..., Any], ...] = (signal.default_int_handler, raise_terminated)


class StepInterrupts:
    """While entered (main thread only), a SIGINT or SIGTERM whose handler raises
    ``KeyboardInterrupt`` is held when it lands while ``holding`` is true (the loop sets it for
    the step's own work), with a line on stderr; :meth:`raise_held` raises it later, at a step
    boundary, or leaving raises it (unless an interrupt is already on its way out). A signal
    outside those windows, or a second one, raises at once (a long measurement stays
    interruptible). Other handlers are left alone."""

    def __init__(self) -> None:
        self.holding = False
        self.held: tuple[int, Callable[..., Any]] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StepInterrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                if previous in _INTERRUPTING:
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        self.holding = False
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        # a held interrupt outlives what else ends the block (a divergence the caller takes
        # for a normal end, a failed checkpoint, a signal after the last boundary): not dropped
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            self.raise_held()
        self.held = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous[signum]
        if not self.holding or self.held is not None:
            self.held = None        # the interrupt raised now is the held one's too
            previous(signum, frame)
            return
        self.held = (signum, previous)
        what = interrupt_word(signum)
        # os.write: print() is not safe in a handler that may run inside another print
        os.write(2, f"{what}: stopping at the end of this step, with a checkpoint (again to "
                    "stop at once)\n".encode())

    def raise_held(self) -> None:
        """Raise the held interrupt (as its handler would have), if there is one."""
        if self.held is not None:
            (signum, previous), self.held = self.held, None
            previous(signum, None)
