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
        if self._data or self._event is not None:     # inside an event: line by line
            return self._lines(data)
        buffer = self._buffer + data if self._buffer else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            return self._lines(data)
        self._buffer = b""
        events = self._blocks(buffer[:cut])
        if cut + 2 < len(buffer):
            events += self._lines(buffer[cut + 2:])
        return events

    def _blocks(self, whole: bytes) -> list[tuple[str, str]]:
        """The events of `whole`, the text between two event boundaries (a blank line after
        a line's end: the parser is between events at each `\\n\\n`). A read of a fast
        stream holds dozens of events, nearly all one `data: ` line: those are taken without
        the line machinery; from the first other one on (a comment, `event:`, CRLF,
        several lines), the rest of the read goes through it, as one piece.

        The read is decoded once and split as text, which costs half what splitting and
        testing the bytes block by block does. That is the same as decoding each event's
        data: the boundaries are ASCII, and valid UTF-8 encodes back to the bytes it came
        from. Bytes that are not UTF-8, or a read longer than one event may be, go line by
        line, which replaces the one and bounds the other as it always has."""
        try:
            text = whole.decode("utf-8") if len(whole) <= self.max_bytes else None
        except UnicodeDecodeError:
            text = None
        if text is None:
            return self._lines(whole + b"\n\n")
        events, blocks = [], text.split("\n\n")
        for at, block in enumerate(blocks):
            if block.startswith("data: ") and "\n" not in block and "\r" not in block:
                events.append(("message", block[6:]))
            elif block:    # (an Anthropic stream's events all name themselves)
                rest = "\n\n".join(blocks[at:]).encode("utf-8")
                return events + self._lines(rest + b"\n\n")
        return events

    def _lines(self, data: bytes) -> list[tuple[str, str]]:
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
