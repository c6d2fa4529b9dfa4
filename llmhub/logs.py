"""Logging: one JSON line per request (DESIGN §11), or plain text for people.

Request lines carry their fields in `extra={"fields": {...}}`; the JSON formatter puts them at
the top level of the line, the text formatter appends them as key=value.

A line is formatted in the thread that logs it and written by one writer thread. A
StreamHandler writes and flushes under its lock in the logging thread: at the default
level every request logs a line, so under load every request thread queued on that lock
while its holder was in a write (the GIL released), and a slow sink (a Windows console,
a full pipe) slowed every request with it. Lines that come while the writer is busy go
out together in one write. If the sink cannot keep up, lines past `LineWriter.most`
waiting are dropped and a line says how many, rather than memory growing without bound.
"""

import atexit
import logging
import queue
import sys
import threading

from llmhub.ids import utc_text
from llmhub.wire import json_encoder

__all__ = ["setup", "flush", "JSONFormatter", "TextFormatter", "LineWriter"]


class JSONFormatter(logging.Formatter):
    # json.dumps(line, ensure_ascii=False, default=str), its encoder built once: at the
    # default level every request logs a line
    _dumps = staticmethod(json_encoder((", ", ": "), default=str))

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": utc_text(record.created), "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return self._dumps(line)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items()
                          if v is not None)
        text = f"{utc_text(record.created)} {record.levelname:<7} {record.getMessage()}"
        text = f"{text} {fields}" if fields else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class LineWriter(logging.Handler):
    """Formats a record in the logging thread and queues the line; one thread writes."""

    most = 10_000          # lines waiting for the sink; past it they are dropped, counted

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream
        self.dropped = 0
        self._lines: queue.SimpleQueue = queue.SimpleQueue()   # C: taking no Python lock
        self._thread = threading.Thread(target=self._write, name="log writer", daemon=True)
        self._thread.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock: formatting reads only the record, and the queue is thread-safe.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if self._lines.qsize() >= self.most:
            self.dropped += 1        # (not exact under races: a count for people)
        else:
            self._lines.put(line)

    def flush(self) -> None:
        """Return once what was logged before is written: a line printed to the same
        stream next comes after it."""
        if self._thread.is_alive():
            written = threading.Event()
            self._lines.put(written)
            written.wait(5)

    def close(self) -> None:
        """Write what is queued, then stop the writer (at exit: nothing logged is lost)."""
        if self._thread.is_alive():
            self._lines.put(None)
            self._thread.join(5)
        super().close()

    def _write(self) -> None:
        reported, last = 0, False
        while not last:
            lines = [self._lines.get()]
            while isinstance(lines[-1], str) and len(lines) < 1000:
                try:
                    lines.append(self._lines.get_nowait())
                except queue.Empty:
                    break
            end = lines.pop() if not isinstance(lines[-1], str) else ""
            last = end is None                 # close(): these are the last
            if self.dropped > reported:
                lines.append(self._dropped_line(self.dropped - reported))
                reported = self.dropped
            if lines:
                self._out(lines)
            if isinstance(end, threading.Event):   # flush(): written up to here
                end.set()

    def _dropped_line(self, count: int) -> str:
        """The line that says lines were dropped, in the log's own format (a JSON log
        stays one JSON object a line)."""
        record = logging.LogRecord("llmhub.logs", logging.WARNING, __file__, 0,
                                   "%d log lines dropped: the log's output could not keep "
                                   "up", (count,), None)
        return self.format(record)

    def _out(self, lines: list) -> None:
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):   # the sink is gone (a closed pipe): nothing to do
            pass


def setup(level: str = "info", fmt: str = "json", stream=None) -> None:
    # Neither format prints a record's thread, process or multiprocessing name: not looking
    # them up makes every record ~2 µs cheaper (the logging HOWTO's "Optimization").
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger("llmhub")
    for old in root.handlers:
        old.close()
    handler = LineWriter(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    atexit.register(handler.close)


def flush() -> None:
    """What the hub logged so far is written (before a line printed to stderr)."""
    for handler in logging.getLogger("llmhub").handlers:
        handler.flush()
