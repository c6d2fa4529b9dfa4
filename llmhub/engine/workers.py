"""Reusable daemon threads for run workers and background jobs (summaries)."""

import logging
import queue
import threading

__all__ = ["Workers"]

log = logging.getLogger("llmhub.pipes")


class Workers:
    """Reusable daemon threads for run workers: starting a thread costs ~100 µs a request.

    `_idle` counts waiting threads not yet promised a job. submit() promises one (or starts
    a thread); a thread that waits `idle_seconds` for nothing leaves, unless it was promised.
    """

    idle_seconds = 60.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job, *args) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((job, args))
        if spawn:
            threading.Thread(target=self._loop, name="run worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                job, args = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:     # nobody promised this thread a job: leave
                        self._idle -= 1
                        return
                continue
            try:
                job(*args)
            except Exception:    # a job's bug must not kill the thread or skew `_idle`
                log.exception("background job %s failed", getattr(job, "__name__", job))
            with self._lock:
                self._idle += 1
