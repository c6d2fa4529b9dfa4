"""Request heads and bodies, read as strictly as RFC 9112 and nginx read them.

A lenient reader is how one request smuggles another: a `Content-Length` beside a
`Transfer-Encoding`, two lengths that disagree, a chunk size of `-3` that `int(x, 16)`
accepts and `read(-1)` turns into "read until EOF". So:

- the whole head (request line and headers) has one budget, `MAX_HEAD` bytes: past it, 431;
- a header name is a token, a value holds no CR, LF or NUL, and there is no line folding;
- HTTP/1.1 needs exactly one `Host`;
- a body is framed by exactly one of one `Content-Length` of digits, or a
  `Transfer-Encoding` of exactly `chunked`; anything else is a 400 and the connection closes;
- a chunk size is 1 to 16 hex digits, nothing else; a chunk past the body limit is a 413.

The bytes are read by protocol.Reader, the sans-IO reader the upstream client shares; this
module adds what is a server's own: the request line, the framing a request's headers
imply, and the body limit. Everything raises `FramingError` (protocol's error, with its
status), after which the caller must close the connection: the rest of what the client sent
cannot be trusted to be a request. A `RequestReader` is one connection's, fed by `recv`.
"""

import io
import re
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from llmhub.http.protocol import (CLOSED, END, NEED_DATA, TOKEN, Limits, ProtocolError,
                                  Reader, Truncated)

__all__ = ["FramingError", "RequestHead", "RequestReader", "check_length", "MAX_HEAD"]

MAX_HEAD = 65536           # request line and headers together, as nginx's default buffers
LIMITS = Limits(head=MAX_HEAD, headers=100, chunk_line=1024, trailers=8192)
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
VERSIONS = ("HTTP/1.1", "HTTP/1.0")
FramingError = ProtocolError   # one error for bytes that are not a request, reader's or ours


@dataclass
class RequestHead:
    method: str
    target: str            # as sent
    path: str              # the path and query to route by (absolute-form reduced to it)
    version: str
    headers: list          # [(name, value)] as sent, in order
    authority: str | None  # the Host to check: the target's own in absolute-form (§3.2.2)
    body: str              # "none", "length" or "chunked"
    length: int = 0        # with body == "length"
    size: int = 0          # bytes the head took
    fields: dict = field(default_factory=dict)   # {lower-cased name: its first value}: made
                           # by the framing check, which reads every name anyway


class RequestReader:
    """One client connection's requests, in turn: `read_head`, then `read_body` or
    `discard_body` (a request without a body needs neither). `recv` returns the next bytes
    from the client, b"" once it has closed."""

    def __init__(self, recv: Callable[[], bytes], limits: Limits = LIMITS) -> None:
        self._recv = recv
        self.reader = Reader(_request_line, limits, noun="request")

    @property
    def pending(self) -> bool:
        """Bytes of a next request are here already (pipelined)."""
        return self.reader.buffered > 0

    def read_head(self) -> RequestHead | None:
        """Read one request head; None if the connection closed before a request began."""
        event = self._next()
        if event is CLOSED:
            return None
        method, target, version = event.start
        path, authority = _route_target(method, target)
        head = RequestHead(method, target, path, version, event.headers, authority, "none",
                           size=event.size)
        _check_framing(head)
        if head.body == "none":
            self.reader.start_body("none")
        return head

    def read_body(self, head: RequestHead, limit: int) -> bytes:
        """The whole body, refusing more than `limit` bytes (413) before reading past it."""
        if head.body == "none":
            return b""
        check_length(head, limit)
        self.reader.start_body(head.body, head.length, limit, "max_body_bytes")
        if head.body == "length":
            return self._read_length(head.length)
        parts = []
        while (event := self._next()) is not END:
            parts.append(event.data)
        return b"".join(parts)

    def discard_body(self, head: RequestHead, limit: int) -> bool:
        """Read and drop a small body, so the connection can serve the next request; False if
        it is too large to be worth it (the caller closes the connection instead)."""
        if head.body != "length" or head.length > limit:
            return head.body == "none"
        self.reader.start_body("length", head.length)
        try:
            while self._next() is not END:
                pass
        except Truncated:
            return False
        return True

    def _read_length(self, length: int) -> bytes:
        """A Content-Length body, gathered into one bytes object of its size: a 15 MiB
        upload is held once, not as pieces and their join. (io.BufferedReader with a
        one-byte buffer reads exactly `length` bytes straight into its result, as
        BufferedReader.read does for any large read, and never reads ahead.)"""
        if self.reader.buffered >= length:     # the usual small body, come with its head
            body = self.reader.next_event().data
        else:
            body = io.BufferedReader(_BodySource(self), buffer_size=1).read(length)
        if len(body) < length:
            raise Truncated("closed in the middle of a request body")
        self._next()                   # END: the reader moves on to the next head
        return body

    def _next(self):
        while (event := self.reader.next_event()) is NEED_DATA:
            self.reader.feed(self._recv())
        return event


class _BodySource(io.RawIOBase):
    """A Content-Length body as a raw stream: what the reader holds of it, fed from the
    connection as it comes."""

    def __init__(self, requests: RequestReader) -> None:
        self.requests = requests

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        reader = self.requests.reader
        while not (count := reader.body_into(view)) and not reader.eof:
            reader.feed(self.requests._recv())
        return count


def check_length(head: RequestHead, limit: int) -> None:
    """A declared body over the limit is refused before a byte of it is read."""
    if head.body == "length" and head.length > limit:
        raise FramingError(f"Request body is {head.length} bytes; the limit is {limit} "
                           "(max_body_bytes)", status=413, code="payload_too_large")


def _request_line(line: bytes) -> tuple[str, str, str]:
    """(method, target, version) from the request line, given without its LF."""
    text = line.rstrip(b"\r")
    if b"\r" in text:
        raise FramingError("A bare CR in the request line")
    words = text.split(b" ")
    if len(words) != 3 or not TOKEN.match(words[0]) or not words[1]:
        raise FramingError(f"Bad request line {text[:80].decode('latin-1')!r}")
    version = words[2].decode("latin-1")
    if version not in VERSIONS:
        if re.fullmatch(r"HTTP/\d(\.\d)?", version):
            raise FramingError(f"{version} is not served; use HTTP/1.1", status=505,
                               code="http_version_not_supported")
        raise FramingError(f"Bad request line {text[:80].decode('latin-1')!r}")
    return words[0].decode("ascii"), words[1].decode("latin-1"), version


def _route_target(method: str, target: str) -> tuple[str, str | None]:
    """(path and query to route by, the authority an absolute-form target names)."""
    if _BAD_TARGET.search(target):
        raise FramingError("The request target has a control character")
    if target.startswith("/"):
        # gh-87389: '//path' is an absolute URI to some clients (open redirects)
        return ("/" + target.lstrip("/") if target.startswith("//") else target), None
    if target == "*" and method == "OPTIONS":
        return "*", None
    parts = urlsplit(target)
    if parts.scheme.lower() in ("http", "https") and parts.netloc:
        path = parts.path or "/"
        return (path + "?" + parts.query if parts.query else path), parts.netloc
    raise FramingError(f"Bad request target {target[:80]!r}")


FRAMING = ("host", "content-length", "transfer-encoding")   # headers that may come once


def _check_framing(head: RequestHead) -> None:
    fields, repeated = head.fields, set()
    for name, value in head.headers:
        lowered = name.lower()
        if lowered not in fields:
            fields[lowered] = value
        elif lowered in FRAMING:
            repeated.add(lowered)
    host = fields.get("host")
    if "host" in repeated:
        raise FramingError("More than one Host header")
    if head.version == "HTTP/1.1" and host is None:
        raise FramingError("HTTP/1.1 needs a Host header (RFC 9112 §3.2)")
    if head.authority is None:
        head.authority = host
    length, coding = fields.get("content-length"), fields.get("transfer-encoding")
    if length is not None and coding is not None:
        raise FramingError("Content-Length and Transfer-Encoding together (RFC 9112 §6.1)")
    if "content-length" in repeated:
        raise FramingError("More than one Content-Length header")
    if coding is not None:
        if "transfer-encoding" in repeated or coding.lower() != "chunked" or \
                head.version != "HTTP/1.1":
            codings = [v for n, v in head.headers if n.lower() == "transfer-encoding"]
            raise FramingError(f"Transfer-Encoding {', '.join(codings)!r} is not accepted; "
                               "send Content-Length, or exactly 'chunked' over HTTP/1.1")
        head.body = "chunked"
    elif length is not None:
        if not (length.isascii() and length.isdigit()) or len(length) > 18:
            raise FramingError(f"Content-Length {length[:40]!r} is not a number",
                               param="Content-Length")
        head.length = int(length)
        head.body = "length" if head.length else "none"
