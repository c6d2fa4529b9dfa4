"""Who ran what: the key and route of the request in hand, and a bounded log of every run.

The server sets `current` (the key's name and the route) in the handler's thread before a
view runs; the registry stamps it on each run it creates, so a run always says whose it
was ("local" when no keys are configured, "-" for a public route without one). When a
run retires, `record(run)` is its one record: the request log stores it, and the access
log line is made from it, so the two never disagree.

The log is written in batches by one thread, every `flush_seconds`, so recording a run
costs a dict and an append in the request's own thread. Retention is by count and age
(`[log] keep_count`, `keep_days`); nothing grows without bound.
"""

import contextvars
import logging
import threading
import time

__all__ = ["current", "Caller", "record", "RequestLog"]

log = logging.getLogger("llmhub.accounting")


class Caller(tuple):
    """(key name, route pattern) of the request being served."""
    __slots__ = ()

    @property
    def key(self) -> str:
        return self[0]

    @property
    def route(self) -> str:
        return self[1]


current: contextvars.ContextVar = contextvars.ContextVar("caller",
                                                         default=Caller(("local", "-")))


def record(run) -> dict:
    """A finished run as the request log keeps it: no text, no secret."""
    usage = run.usage
    first = run.first_token_at
    return {"run_id": run.id, "at": time.time(), "key": run.info.get("key", "local"),
            "route": run.info.get("route", "-"), "dialect": run.info.get("dialect", ""),
            "requested_model": run.requested, "model": run.model,
            "upstream": (run.provider or {}).get("base_url"),
            "status": run.status, "finish_reason": run.transcript.finish_reason,
            "ttft_ms": round((first - run.started) * 1000, 2) if first else None,
            "duration_ms": round((time.monotonic() - run.started) * 1000, 2),
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "estimated": bool(usage and usage.estimated),
            "error_code": run.error.code if run.error is not None and run.status == "failed"
            else None}


class RequestLog:
    flush_seconds = 0.2

    def __init__(self, store, keep_count: int, keep_days: float) -> None:
        self.store = store
        self.keep_count, self.keep_seconds = keep_count, keep_days * 86400
        self._pending: list[dict] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None

    def record(self, run) -> dict:
        row = record(run)
        with self._lock:
            self._pending.append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._loop, name="request log",
                                                daemon=True)
                self._writer.start()
        return row

    def flush(self) -> None:
        """Write what is pending now (the API reads after this, so it sees every run)."""
        with self._lock:
            rows, self._pending = self._pending, []
        if rows:
            try:
                self.store.insert_requests(rows, self.keep_count, self.keep_seconds)
            except Exception:   # a full disk must not take the runs down with it
                log.exception("the request log could not store %d records", len(rows))

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def _loop(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            self.flush()
