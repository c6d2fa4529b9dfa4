"""A bound on every test phase: a test that would block forever fails instead.

Standard library only (no pytest-timeout). Where the platform has SIGALRM (Linux, macOS),
an interval timer interrupts the main thread's blocking call and its handler raises
`Overrun`, which pytest reports as that test's failure, with every thread's stack dumped
to stderr first so the hang can be read. Windows has no SIGALRM: a watchdog thread dumps
the stacks and interrupts the main thread through a SIGINT handler of ours (Python runs it
once the blocking call returns, which the tests' socket timeouts bound). Either way
faulthandler's own timer, armed a grace period later, ends the whole process with the
stacks printed if nothing else could: the suite fails, it never hangs.
"""

import contextlib
import faulthandler
import signal
import sys
import threading
import time
import _thread

__all__ = ["Overrun", "deadline"]

GRACE = 30.0     # seconds past the deadline before faulthandler ends the process


class Overrun(BaseException):
    """Raised in the main thread when a test phase passed its deadline. A BaseException,
    so code under test that catches Exception cannot swallow it."""


@contextlib.contextmanager
def deadline(seconds: float, what: str, use_alarm: bool | None = None):
    """Fail `what` with Overrun if the block takes longer than `seconds`."""
    if use_alarm is None:
        use_alarm = hasattr(signal, "SIGALRM") and \
            threading.current_thread() is threading.main_thread()
    faulthandler.dump_traceback_later(seconds + GRACE, exit=True)
    try:
        with (_alarm if use_alarm else _watchdog)(seconds, what):
            yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _overrun(seconds: float, what: str):
    def handler(signum, frame):
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
        raise Overrun(f"{what} ran past its {seconds:g} s deadline (stacks above)")
    return handler


@contextlib.contextmanager
def _alarm(seconds: float, what: str):
    previous = signal.signal(signal.SIGALRM, _overrun(seconds, what))
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:                # a deadline inside another's: the outer one goes on
            left = outer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


@contextlib.contextmanager
def _watchdog(seconds: float, what: str):
    previous = signal.signal(signal.SIGINT, _overrun(seconds, what))
    timer = threading.Timer(seconds, _thread.interrupt_main)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
