"""A lean HTTP/1.1 client connection: the request goes out in one write, the reply is parsed
from a buffer.

Why not http.client: it parses every reply's headers with the `email` package and reads a
chunked body one chunk, and one readline, at a time. A streamed completion is a dozen small
chunks, so that machinery was a third of the hub's CPU for a short request. Here whatever one
recv brings is de-chunked at once and handed on whole.

The bytes are read by protocol.Reader, the sans-IO reader the server shares: this module
adds what is a client's own, the status line and the framing a reply's status and headers
imply. What an OpenAI-compatible server sends is what is read: a Content-Length, chunked or
read-until-close body, interim 1xx replies skipped. Anything else is a ProtocolError, which
the exchange reports as a garbled reply. Timeouts, pooling and abort live in exchange.py.
"""

import contextlib
import re
import socket
import ssl
import struct
import sys

from llmhub.http.protocol import (CLOSED, END, NEED_DATA, Head, Limits, ProtocolError, Reader,
                                  Truncated)
from llmhub.http.sockets import RecvSize
from llmhub.waiting import waiting

__all__ = ["Connection", "Response", "ProtocolError", "Incomplete", "Closed"]

READ_MOST = 65536       # read1's default: the most body bytes one call returns
# the status line and headers together as http.client allows per line; a chunk size line
# with room for extensions; trailers as many as a server may send
LIMITS = Limits(head=65536, headers=100, chunk_line=4096, trailers=65536)
SMALL_BODY = 65536      # a body up to this goes out in one write with the head; a larger
                        # one after it, as it is, rather than copied into one buffer

# SO_LINGER on with a zero timeout: close() resets (Windows' struct linger is two shorts)
LINGER_NOW = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")


# The server closed the connection before the body it announced was complete.
Incomplete = Truncated

class Closed(ConnectionError):
    """The server closed the connection before sending a byte of its reply: on a kept-alive
    connection, the sign that it was closed while idle."""


class Connection:
    """One socket to an upstream and the bytes read from it that no reply has consumed yet."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host_header = host_header
        self.reader = Reader(_status_line, LIMITS, noun="reply")
        tls = isinstance(sock, ssl.SSLSocket)
        self.recv_size = RecvSize(tls)
        # bytes read so far, to match against the kernel's count (sockets.arrivals); over
        # TLS the kernel counts the records, so None
        self.received: int | None = None if tls else 0

    @classmethod
    def open(cls, host: str, port: int | None, https: bool, timeout: float) -> "Connection":
        port = port or (443 if https else 80)
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if https:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(None)   # blocking from here: the caller enforces its deadlines
        except BaseException:
            sock.close()
            raise
        default = 443 if https else 80
        name = f"[{host}]" if ":" in host else host
        return cls(sock, name if port == default else f"{name}:{port}")

    def send_request(self, method: str, target: str, headers: dict,
                     body: bytes | list[bytes] | None) -> None:
        """Send a request; a body given as pieces (wire.json_pieces) goes out piece by piece,
        never joined: a 15 MiB body is not copied once more to be sent."""
        if _UNSAFE_TARGET.search(target):
            raise ValueError(f"unsafe request target {target!r}")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}",
                 "Accept-Encoding: identity"]
        for name, value in headers.items():
            value = str(value)
            if not _TOKEN.match(name) or _UNSAFE_VALUE.search(value):
                raise ValueError(f"header {name!r} has a name or value that is not allowed")
            lines.append(f"{name}: {value}")
        pieces = [body] if isinstance(body, bytes) else body or []
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {sum(map(len, pieces))}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if len(pieces) == 1 and len(pieces[0]) <= SMALL_BODY:
            self.sock.sendall(head + pieces[0])    # one write: with TCP_NODELAY, one packet
            return
        self.sock.sendall(head)
        for piece in pieces:
            self.sock.sendall(piece)

    def read_response(self, method: str) -> "Response":
        while True:
            head = self._read_head()
            status = head.start[0]
            if 100 <= status < 200 and status != 101:
                self.reader.start_body("none")
                continue          # 100 Continue and friends precede the real reply
            return Response(self, method, head)

    def fill(self) -> bool:
        """Read once more into the reader; False at EOF."""
        waiting()
        data = self.recv_size.recv(self.sock)
        if self.received is not None:
            self.received += len(data)
        self.reader.feed(data)
        return bool(data)

    def close(self, reset: bool = False) -> None:
        """`reset`: end with a RST rather than a FIN. A server blocked writing into a full
        window never sees a FIN (the window stays shut once the socket is shut down), so
        it would go on holding the model; a RST fails its write at once."""
        if reset:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NOW)
        self.sock.close()

    def _read_head(self) -> Head:
        try:
            while (event := self.reader.next_event()) is NEED_DATA:
                self.fill()
        except Truncated:
            raise ProtocolError("not an HTTP reply: closed in the middle of its head") from None
        if event is CLOSED:
            raise Closed("closed before replying")
        return event


def _status_line(line: bytes) -> tuple[int, str, str]:
    """(status, reason, version) from a status line given without its LF."""
    text = line.decode("iso-8859-1").removesuffix("\r")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit() \
            or not code.isascii():
        raise ProtocolError(f"not an HTTP reply: {text[:80]!r}")
    return int(code), reason, version


class Response:
    """A reply's status and headers, and its body read by framing: length, chunks or close."""

    def __init__(self, conn: Connection, method: str, head: Head) -> None:
        self.conn = conn
        self.status, self.reason, version = head.start
        self.headers = headers = _header_map(head.headers)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.will_close = "close" in tokens or (version == "HTTP/1.0" and
                                                "keep-alive" not in tokens)
        if method == "HEAD" or self.status in (204, 304):
            body, length = "none", 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body, length = "chunked", 0
        elif (declared := _content_length(headers)) is not None:
            body, length = "length", declared
        else:
            body, length = "close", 0
            self.will_close = True             # the body ends when the connection does
        self._done = body == "none" or (body == "length" and not length)
        conn.reader.start_body(body, length)

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def isclosed(self) -> bool:
        """True once the whole body has been read."""
        return self._done

    def read1(self, size: int = READ_MOST) -> bytes:
        """Body bytes already here, or one recv's worth; b'' at the end."""
        reader = self.conn.reader
        while not self._done:
            event = reader.next_event(size)
            if event is NEED_DATA:
                self.conn.fill()       # at EOF the reader ends a close-delimited body, or
                continue               # raises Incomplete
            if event is END:
                self._done = True
                break
            return event.data
        return b""


def _header_map(headers: list) -> dict[str, str]:
    """Lower-cased names; a repeated header's values joined with commas (RFC 9110 §5.3)."""
    found = {name.lower(): value for name, value in headers}
    if len(found) == len(headers):
        return found                  # no name twice: the usual reply, in one pass
    found = {}
    for name, value in headers:
        name = name.lower()
        found[name] = f"{found[name]}, {value}" if name in found else value
    return found


def _content_length(headers: dict) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not (value.strip().isdigit() and value.isascii()):
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(value)
