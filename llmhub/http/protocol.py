"""One HTTP/1.1 message reader for both directions, sans-IO in h11's way: fed bytes, it
yields a message's head, then its body's data, then its end. It never touches a socket.

Rule 1: no I/O. The caller feeds what it read (`feed`, b"" at EOF) and asks for the next
event; NEED_DATA means feed more.
Rule 2: every limit is a parameter (`Limits`, and a body's limit in `start_body`). Past
one, or on bytes that are not HTTP/1.1, `ProtocolError` carries the status a server would
answer with (h11's error_status_hint): 414, 431, 413, else 400.
Rule 3: the caller frames the body. Which framing a head implies differs by direction (a
request's rules are strict, a reply's depend on the method and status), so after a `Head`
the caller says how its body is framed with `start_body`, and the reader reads exactly that.
A message without a body is over at its head.
Rule 4: the hot path has no per-byte Python loop: lines are found with bytes.find, chunk
data is sliced out whole, and a buffer consumed to its end is replaced, not copied.

Strictness is RFC 9112's, as nginx reads it: a line may end in LF or CRLF; up to three
empty lines before a start line are skipped (§2.2); a header name is a token, a value holds
no CR, LF or NUL, there is no line folding (§5.2); a chunk size is 1 to 16 hex digits,
optionally followed by `;extensions`, and chunk data is followed by exactly CRLF (§7.1).
A peer that closes inside a message raises `Truncated` (a ConnectionResetError); one that
closes between messages yields CLOSED.

    reader = Reader(parse_start_line)
    reader.feed(data)
    while (event := reader.next_event()) is NEED_DATA:
        reader.feed(sock.recv(65536))
    # a Head: decide the framing, then Data events until END
    reader.start_body("length", length=12)
"""

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

from llmhub.errors import HubError

__all__ = ["Reader", "Limits", "Head", "Data", "ProtocolError", "Truncated", "NEED_DATA",
           "END", "CLOSED", "BODIES"]

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")   # a header name or method
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
# a chunk size line: 1 to 16 hex digits, then OWS and extensions or CRs, then its LF; and
# the usual one of them, digits and CRLF (Reader._whole_chunks)
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\n]*|\r*)\n")
_BARE_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
# The usual head, whole in the buffer and valid, is checked in one C call (every header
# line good, then the empty line), then split: not a dozen Python steps a line. Anything
# else goes line by line, which finds the first fault in order.
_GOOD_HEADERS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00\r\n]*\r?\n)*\r?\n")
BODIES = ("none", "length", "chunked", "close")   # the framings start_body takes
MAX_BLANK_LINES = 3


class ProtocolError(HubError):
    """The bytes are not an HTTP/1.1 message this reader reads; `status` is what a server
    answers (the connection must close: what follows cannot be trusted to be a message)."""
    status, code = 400, "bad_request"


class Truncated(ConnectionResetError):
    """The peer closed the connection in the middle of a message."""


class _Event:
    """NEED_DATA, END and CLOSED: events that carry nothing."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Event("NEED_DATA")   # feed more bytes, then ask again
END = _Event("END")               # the message is over; the next event is the next head
CLOSED = _Event("CLOSED")         # the peer closed between messages


@dataclass(frozen=True)
class Limits:
    head: int = 65536          # start line and headers together, blank lines before included
    headers: int = 100         # header lines
    chunk_line: int = 1024     # a chunk size line without its LF: a size, and extensions
    trailers: int = 8192       # the trailer section, its closing empty line included


@dataclass
class Head:
    start: Any             # what the start-line parser returned
    headers: list          # [(name, value)] as sent, in order, value without its OWS
    size: int              # bytes the head took


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Reader:
    """The incoming side of one connection: messages one after another, each a head (start
    line parsed by `start_line`, a function of the line without its LF that raises
    ProtocolError) and a body framed as the caller says. `noun` names the message in errors
    ("request", "reply")."""

    def __init__(self, start_line: Callable[[bytes], Any], limits: Limits = Limits(),
                 noun: str = "message") -> None:
        self.limits, self.noun, self._start_line = limits, noun, start_line
        self._buf: bytes | bytearray = b""
        self._pos = 0              # what of _buf is consumed
        self._eof = False
        self._state: Callable[[int | None], Any] = self._read_head
        self._new_head()

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes as received; b"" means the peer closed (EOF)."""
        if not data:
            self._eof = True
        elif self._pos >= len(self._buf):
            self._buf, self._pos = data, 0        # all consumed: take it as it is, no copy
        else:
            if isinstance(self._buf, bytes):      # a partial line or chunk waits: grow a
                self._buf = bytearray(self._buf[self._pos:])   # bytearray from here, so a
                self._pos = 0                     # trickled head costs linear time
            self._buf += data

    @property
    def eof(self) -> bool:
        """The peer has closed: nothing more will be fed."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (a pipelined message's start, say)."""
        return len(self._buf) - self._pos

    # -- events ------------------------------------------------------------------------------
    def next_event(self, size: int | None = None) -> Any:
        """The next Head, Data (at most `size` bytes of body), END, CLOSED or NEED_DATA."""
        event = self._state(size)
        if self._pos and isinstance(self._buf, bytearray):
            del self._buf[:self._pos]             # cheap: bytearray drops its front in place
            self._pos = 0
        return event

    def start_body(self, kind: str, length: int = 0, limit: int | None = None,
                   setting: str = "") -> None:
        """Frame the body of the head just read: "none", "length" (`length` bytes),
        "chunked" (at most `limit` bytes in all: 413 naming `setting` past it) or "close"
        (until EOF)."""
        if self._state != self._await_framing:
            raise RuntimeError("start_body() belongs right after a Head")
        if kind == "none" or (kind == "length" and not length):
            self._new_head()
        elif kind == "length":
            self._left, self._state = length, self._read_length
        elif kind == "chunked":
            self._limit, self._setting, self._total = limit, setting, 0
            self._chunk_left, self._crlf_due, self._trailer_bytes = 0, False, -1
            self._state = self._read_chunked
        elif kind == "close":
            self._state = self._read_close
        else:
            raise ValueError(f"unknown body framing {kind!r}")

    # -- the head ----------------------------------------------------------------------------
    def _new_head(self) -> None:
        self._state, self._start = self._read_head, None
        self._headers: list[tuple[str, str]] = []
        self._head_size = self._blank = 0
        self._seen = 0             # bytes of a partial line searched already

    def _read_head(self, size: int | None) -> Any:
        while (line := self._line(self.limits.head - self._head_size)) is not None:
            self._head_size += len(line) + 1
            if self._start is None:
                if line in (b"", b"\r"):
                    self._blank += 1
                    if self._blank > MAX_BLANK_LINES:
                        raise ProtocolError(f"Expected a {self.noun} line")
                    continue
                self._start = self._start_line(line)
                if (head := self._whole_headers()) is not None:
                    return head
            elif line in (b"", b"\r"):
                head = Head(self._start, self._headers, self._head_size)
                self._state = self._await_framing
                return head
            elif len(self._headers) == self.limits.headers:
                raise ProtocolError(f"More than {self.limits.headers} headers", status=431,
                                    code="request_header_fields_too_large")
            else:
                self._headers.append(self._header(line))
        if self.buffered > self.limits.head - self._head_size:
            raise self._head_too_large()
        if self._eof:
            if self._start is None and not self.buffered:
                return CLOSED
            raise Truncated(f"closed in the middle of a {self.noun} head")
        return NEED_DATA

    def _whole_headers(self) -> Head | None:
        """The rest of the head at once, right after its start line, if its header lines
        are all here, all good and within the limits; else None, and they are read line
        by line."""
        pos = self._pos
        good = _GOOD_HEADERS.match(self._buf, pos, pos + self.limits.head - self._head_size)
        if good is None:
            return None
        # Names are tokens, so ASCII: one decode decodes every name and value. The last
        # two pieces are the empty line's and what follows its LF.
        lines = self._buf[pos:good.end()].decode("latin-1").split("\n")[:-2]
        if len(lines) > self.limits.headers:
            return None
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t\r")))
        self._pos, self._head_size = good.end(), self._head_size + good.end() - pos
        self._state = self._await_framing
        return Head(self._start, headers, self._head_size)

    def _line(self, budget: int) -> bytes | None:
        """The next whole line without its LF (consumed), if it is here within `budget`.
        A line that trickles in is searched once, not again from its start each time."""
        end = self._buf.find(b"\n", self._pos + self._seen)
        if end < 0:
            self._seen = self.buffered
            return None
        self._seen = 0
        if end + 1 - self._pos > budget:
            raise self._head_too_large()
        line, self._pos = self._buf[self._pos:end], end + 1
        return bytes(line)

    def _head_too_large(self) -> ProtocolError:
        if self._start is None:
            return ProtocolError(f"The {self.noun} line is too long", status=414,
                                 code="uri_too_long")
        return ProtocolError(f"The {self.noun} head is over {self.limits.head} bytes",
                             status=431, code="request_header_fields_too_large")

    def _header(self, line: bytes) -> tuple[str, str]:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("Folded header lines are not accepted (RFC 9112 §5.2)")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.match(name):
            raise ProtocolError(f"Bad {self.noun} header line "
                                f"{line[:80].decode('latin-1')!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise ProtocolError(f"Header {name.decode()!r} has a CR, LF or NUL in its value")
        return name.decode("ascii"), value.decode("latin-1")

    def _await_framing(self, size: int | None) -> Any:
        raise RuntimeError("a Head was read: call start_body() before reading on")

    # -- bodies ------------------------------------------------------------------------------
    def _read_length(self, size: int | None) -> Any:
        count = min(self.buffered, self._left, size or self._left)
        if not count:
            return self._starved()
        self._left -= count
        if not self._left:
            self._state = self._end
        return Data(self._take(count))

    def body_into(self, view: memoryview) -> int:
        """Copy what is buffered of a Content-Length body into `view`, consumed; 0 if none
        is. The caller can gather a large body straight into the one object that will hold
        it, rather than as Data pieces and their join (twice its size at the peak)."""
        if self._state != self._read_length:
            raise RuntimeError("body_into() reads a Content-Length body")
        count = min(self.buffered, self._left, len(view))
        view[:count] = self._buf[self._pos:self._pos + count]
        self._pos += count
        self._left -= count
        if not self._left:
            self._state = self._end
        return count

    def _read_close(self, size: int | None) -> Any:
        count = min(self.buffered, size or self.buffered)
        if count:
            return Data(self._take(count))
        if self._eof:
            return self._end(size)
        return NEED_DATA

    def _end(self, size: int | None) -> Any:
        self._new_head()
        return END

    def _starved(self) -> Any:
        if self._eof:
            raise Truncated(f"closed in the middle of a {self.noun} body")
        return NEED_DATA

    def _take(self, count: int) -> bytes:
        """The next `count` bytes, consumed; the whole buffer as it is, if that is all."""
        buf, pos = self._buf, self._pos
        self._pos = pos + count
        if not pos and count == len(buf) and isinstance(buf, bytes):
            return buf
        return bytes(buf[pos:pos + count])

    def _read_chunked(self, size: int | None) -> Any:
        """Every piece of chunk data here, up to `size` bytes, as one Data; the sizes,
        CRLFs and trailers between are consumed on the way. (Hot: a relayed stream passes
        here once a recv, so the buffer and position are locals.)"""
        buf, pos, parts = self._buf, self._pos, []
        if pos == len(buf) and not self._eof:
            return NEED_DATA
        room, ended = size or sys.maxsize, False
        while room:
            left = self._chunk_left
            if left:
                piece = buf[pos:pos + (left if left < room else room)]
                if not piece:
                    break
                parts.append(piece)
                count = len(piece)
                pos, room, self._chunk_left = pos + count, room - count, left - count
                self._crlf_due = left == count
            elif self._crlf_due:
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("Chunk data is not followed by CRLF")
                pos, self._crlf_due = pos + 2, False
            elif self._trailer_bytes >= 0:
                pos, ended = self._read_trailers(buf, pos)
                break
            elif (taken := self._whole_chunks(buf, pos, room, parts))[0] != pos:
                pos, room = taken
            elif (after := self._read_size(buf, pos)) == pos:
                break
            else:
                pos = after
        self._pos = pos
        if parts:
            if ended:
                self._state = self._end
            return Data(b"".join(parts))
        return self._end(size) if ended else self._starved()

    def _whole_chunks(self, buf: bytes | bytearray, pos: int, room: int,
                      parts: list) -> tuple[int, int]:
        """Take the whole chunks from `pos` on, into `parts`: each a bare size line, its
        data (within `room`) and the CRLF after, all here. A relayed stream's read holds
        dozens, and the steps above would take three passes and a size line's checks for
        each. Returns where it stopped and the room left; what it stops at (a chunk the
        read cut, extensions, the last chunk, the body's limit, anything wrong) the steps
        above read, as they would have."""
        match, limit = _BARE_SIZE_LINE.match, self._limit
        while line := match(buf, pos):
            size = int(line[1], 16)
            start = line.end()
            end = start + size
            if not size or size > room or buf[end:end + 2] != b"\r\n" or \
                    (limit is not None and self._total + size > limit):
                break
            self._total += size
            parts.append(buf[start:end])
            pos, room = end + 2, room - size
        return pos, room

    def _read_size(self, buf: bytes | bytearray, pos: int) -> int:
        """Where a chunk size line ends, consumed; `pos` if it is not all here. A size of 0
        starts the trailers."""
        end = buf.find(b"\n", pos)
        if (end if end >= 0 else len(buf)) - pos > self.limits.chunk_line:
            raise ProtocolError("A chunk size line is too long")
        if end < 0:
            return pos
        line = _SIZE_LINE.match(buf, pos, end + 1)
        if line is None:
            digits = bytes(buf[pos:end]).rstrip(b"\r").split(b";", 1)[0].rstrip(b" \t")
            raise ProtocolError(f"Bad chunk size {digits[:20].decode('latin-1')!r}: "
                                "expected hex digits")
        size = int(line[1], 16)
        if not size:
            self._trailer_bytes = 0
            return end + 1
        self._total += size
        if self._limit is not None and self._total > self._limit:
            raise ProtocolError(f"{self.noun.capitalize()} body exceeds the limit of "
                                f"{self._limit} bytes ({self._setting})", status=413,
                                code="payload_too_large")
        self._chunk_left = size
        return end + 1

    def _read_trailers(self, buf: bytes | bytearray, pos: int) -> tuple[int, bool]:
        """Consume trailer lines (nothing here uses them; bounded all the same): (where
        they were read to, whether the empty line that ends them is in)."""
        while (end := buf.find(b"\n", pos)) >= 0:
            line = buf[pos:end]
            self._trailer_bytes += end + 1 - pos
            pos = end + 1
            if line in (b"", b"\r"):
                return pos, True
            if self._trailer_bytes > self.limits.trailers:
                break
        if self._trailer_bytes + len(buf) - pos > self.limits.trailers:
            raise ProtocolError("Chunked trailers are too long", status=431,
                                code="request_header_fields_too_large")
        return pos, False
