"""A thread's runs take turns: the line each thread keeps, so its stored history stays
question, answer, question, answer."""

import collections
import threading

from llmhub.engine.runs import Run


class Turns:
    """One run at a time per thread, in order of arrival.

    Two runs on one thread at once would store [A's question, B's question, B's answer,
    A's answer], and B's model input would hold A's unanswered question. A run joins its
    thread's line when it is prepared (so arrival decides the order), waits in its worker
    until it is first, and leaves when it finishes, after its reply is stored. A run
    cancelled while it waits leaves the line and stores nothing.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lines: dict[str, collections.deque] = {}

    def join(self, thread_id: str, run: Run) -> None:
        with self._cond:
            self._lines.setdefault(thread_id, collections.deque()).append(run)

    def wait(self, thread_id: str, run: Run, poll: float = 0.05) -> bool:
        """Block until `run` is first in its thread's line; False if it finished first."""
        with self._cond:
            while True:
                line = self._lines.get(thread_id)
                if run.ended or not line or run not in line:
                    return False
                if line[0] is run:
                    return True
                self._cond.wait(poll)

    def leave(self, thread_id: str, run: Run) -> None:
        with self._cond:
            line = self._lines.get(thread_id)
            if line is not None and run in line:
                line.remove(run)
                if not line:
                    del self._lines[thread_id]
                self._cond.notify_all()

    def waiting(self, thread_id: str) -> int:
        with self._cond:
            return len(self._lines.get(thread_id, ()))
