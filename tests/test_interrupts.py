"""StepInterrupts: a Ctrl-C or SIGTERM held to the end of a step, raised at once elsewhere."""
from __future__ import annotations

import signal

import pytest

from sgdlab.interrupts import TERMINATED, StepInterrupts, raise_terminated


@pytest.fixture(autouse=True)
def _sigint_interrupts(sigint_interrupts):
    """Every test here raises SIGINT: Python's handler, whatever the test process inherited."""


@pytest.fixture
def sigterm_as_interrupt():
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("signum, message", [(signal.SIGINT, ""),
                                             (signal.SIGTERM, TERMINATED)])
def test_a_signal_while_holding_waits_for_raise_held(sigterm_as_interrupt, capfd, signum,
                                                     message):
    with StepInterrupts() as interrupts:
        interrupts.holding = True
        signal.raise_signal(signum)           # held: nothing raised here
        assert interrupts.held is not None
        with pytest.raises(KeyboardInterrupt) as raised:
            interrupts.raise_held()
    assert str(raised.value) == message and interrupts.held is None
    assert "stopping at the end of this step" in capfd.readouterr().err


def test_outside_a_step_or_a_second_signal_raises_at_once():
    with StepInterrupts() as interrupts:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)      # not holding: a measurement, say
        interrupts.holding = True
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)      # again: at once


@pytest.mark.parametrize("ending", [None, ValueError("diverged")])
def test_leaving_with_a_held_signal_raises_it(ending):
    """A signal held, then the block ends without reaching a step boundary (an exception the
    caller takes for a normal end, or none): leaving raises it, where it was dropped."""
    with pytest.raises(KeyboardInterrupt) as raised:
        with StepInterrupts() as interrupts:
            interrupts.holding = True
            signal.raise_signal(signal.SIGINT)
            if ending is not None:
                raise ending
    assert raised.value.__context__ is ending and interrupts.held is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_other_handlers_are_left_alone_and_the_handlers_restored():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with StepInterrupts() as interrupts:
            interrupts.holding = True
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGTERM)     # not an interrupt's handler: its own way
        assert seen == [signal.SIGTERM] and interrupts.held is None
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
