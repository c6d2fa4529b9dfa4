"""Session ids seen by the sessions dialect, with first- and last-seen times, for metrics.

Nothing else about a session is kept: that dialect is stateless by contract (the client
holds the history). The table is bounded; the least recently seen ids go first.
"""

import collections
import threading
import time

__all__ = ["SessionLog"]


class SessionLog:
    limit = 10_000

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[str, tuple[float, float]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def seen(self, session_id: str) -> None:
        now = time.time()
        with self._lock:
            first, _ = self._seen.pop(session_id, (now, now))
            self._seen[session_id] = (first, now)
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)

    def get(self, session_id: str) -> dict | None:
        with self._lock:
            times = self._seen.get(session_id)
        return {"first_seen": times[0], "last_seen": times[1]} if times else None

    def __len__(self) -> int:
        return len(self._seen)
