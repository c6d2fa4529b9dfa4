"""The database's upkeep: a periodic sweep that keeps every growing table within its bounds,
and retries the writes a full or read-only disk refused.

Rules:
1. Every table that grows has bounds ([retention], [responses], [log] in config.ini):
   threads (with their messages and summaries) by days since their last activity and by MB
   of messages; both responses tables and the request log by count, age and MB. The
   defaults keep a year of a workstation's use in a few GB at most.
2. A thread with a live run (streaming, queued, or waiting for its turn) is never swept:
   its reply must have a thread to land in. The run list is read just before the sweep's
   transaction, and only threads untouched for `threads_keep_days` or past the size bound
   are candidates, so a run starting on one in that instant is the one case left; its
   reply then fails loudly rather than landing nowhere. Likewise a stored response still
   queued or in progress (a long background one) is never swept, by any bound: its end
   must have its row to land in; it still counts towards the bounds.
3. A sweep reads indexes, not tables: each row's weight is kept in a `bytes` column by the
   write that adds to it, and each table's `_swept` index holds the sweep's order, the
   weight and the status (Database.sweep_table, ThreadStore.sweep_threads), so a tick
   costs an index-only walk.
4. The sweep runs on its own thread every `sweep_interval_seconds` (0: never); the held
   writes (Database._hold) and their retries run every `retry_seconds`, so a disk that
   comes back sees the responses' ends written within seconds.
5. A sweep that fails (the disk is full) is logged and tried again at the next tick; it never
   stops the hub.
"""

import logging
import threading
import time

from llmhub.store.database import Database
from llmhub.store.threads import ThreadStore

__all__ = ["Upkeep"]

log = logging.getLogger("llmhub.retention")
MB = 1 << 20


class Upkeep:
    retry_seconds = 5.0     # how often held writes are retried while the store refuses them

    def __init__(self, db: Database, threads: ThreadStore, registry, config) -> None:
        self.db = db
        self.threads = threads
        self.registry = registry
        self.config = config
        self.last_sweep: dict | None = None     # when, and how many rows each bound took
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="upkeep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        interval = self.config.retention.sweep_interval_seconds
        due = time.monotonic() + interval
        while not self._stop.wait(self.retry_seconds):
            self.db.retry_held()
            if interval and time.monotonic() >= due:
                self.sweep()
                due = time.monotonic() + interval

    def busy_threads(self) -> set:
        """Threads a live run uses: never swept."""
        return {run.thread_id for run in self.registry.live() if run.thread_id}

    def sweep(self) -> dict:
        """Apply every bound once; what each took (or the error that stopped it)."""
        keep, responses, kept_log = (self.config.retention, self.config.responses,
                                     self.config.log)
        removed: dict[str, int | str] = {}
        try:
            removed["threads"] = self.threads.sweep_threads(
                keep.threads_keep_days * 86400, keep.threads_max_mb * MB,
                self.busy_threads())
            for table in ("responses", "api_responses"):
                removed[table] = self.db.sweep_table(
                    table, responses.keep_count, responses.keep_days * 86400,
                    getattr(keep, f"{table}_max_mb") * MB)
            removed["requests"] = self.db.sweep_table(
                "requests", kept_log.keep_count, kept_log.keep_days * 86400,
                keep.requests_max_mb * MB)
        except Exception as exc:   # a full disk: try again next time
            log.error("the retention sweep failed: %s", exc)
            removed["error"] = str(exc)
        self.last_sweep = {"at": time.time(), "removed": removed}
        return self.last_sweep
