"""Incremental text/event-stream parser (sans-IO), fed whatever byte splits the socket gives.

Lines end with LF or CRLF; a line is decoded only once complete, so a UTF-8 character split
across two reads survives. Comment lines (`: ping`) are skipped; `event:` names are kept
because LM Studio reports some failures as `event: error` inside an HTTP 200 stream.

One event, and one line still waiting for its newline, may hold at most `max_bytes`: past
that the stream is broken (or hostile), and `EventTooLarge` says so rather than buffering on.
"""

__all__ = ["SSEParser", "EventTooLarge"]


class EventTooLarge(ValueError):
    """An upstream event (or a line without a newline) passed the parser's bound."""


class SSEParser:
    def __init__(self, max_bytes: int = 8 << 20) -> None:
        self.max_bytes = max_bytes
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0          # data bytes of the event being assembled

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Return the (event name, data) pairs completed by `data`."""
        buffer = self._buffer + data if self._buffer else data
        events, start = [], 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        if len(self._buffer) > self.max_bytes:
            raise EventTooLarge(f"a stream line of over {self.max_bytes} bytes without a newline")
        return events

    def close(self) -> list[tuple[str, str]]:
        """Flush an event the stream ended without a blank line after."""
        events = self.feed(b"\n") if self._buffer else []
        event = self._line(b"")
        return events + ([event] if event else [])

    def _line(self, line: bytes) -> tuple[str, str] | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = (self._event or "message", "\n".join(self._data))
            self._event, self._data, self._size = None, [], 0
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._size += len(value)
            if self._size > self.max_bytes:
                raise EventTooLarge(f"a stream event of over {self.max_bytes} bytes")
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None
