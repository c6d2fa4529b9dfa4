"""What a thread does before it blocks waiting on an upstream.

A stream driven in its client's handler thread (Engine.drive with `deliver`) writes out
what the last read brought each time the thread is about to wait for the next one, and
before the run it drives is concluded (runs.Run._conclude): one read's chunks go to the
client in one write, and nothing waits in the hub while the model is silent or the reply
is being stored. The upstream side calls `waiting()` where it blocks; the engine says what
that does for the thread it drives in (`delivering`). Neither knows the other.
"""

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator

__all__ = ["waiting", "delivering"]

_before_wait: ContextVar[Callable[[], None] | None] = ContextVar("before_wait", default=None)


def waiting() -> None:
    """About to block on an upstream: run this thread's hook, if it has one."""
    hook = _before_wait.get()
    if hook is not None:
        hook()


@contextlib.contextmanager
def delivering(hook: Callable[[], None]) -> Iterator[None]:
    """Within the block, `waiting()` in this thread calls `hook` first."""
    token = _before_wait.set(hook)
    try:
        yield
    finally:
        _before_wait.reset(token)
