"""A lean HTTP/1.1 client connection: the request goes out in one write, the reply is parsed
from a buffer.

Why not http.client: it parses every reply's headers with the `email` package and reads a
chunked body one chunk, and one readline, at a time. A streamed completion is a dozen small
chunks, so that machinery was a third of the hub's CPU for a short request. Here whatever one
recv brings is de-chunked at once and handed on whole.

What an OpenAI-compatible server sends is what is read: a Content-Length, chunked or
read-until-close body, interim 1xx replies skipped. Anything else is a ProtocolError, which
the exchange reports as a garbled reply. Timeouts, pooling and abort live in exchange.py.
"""

import re
import socket
import ssl

__all__ = ["Connection", "Response", "ProtocolError", "Incomplete", "Closed"]

RECV_SIZE = 65536
MAX_HEAD = 65536        # status line and headers together, as http.client allows per line
MAX_HEADERS = 100
MAX_CHUNK_LINE = 4096
SMALL_BODY = 65536      # a body up to this goes out in one write with the head; a larger
                        # one after it, as it is, rather than copied into one buffer

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")


class ProtocolError(Exception):
    """The reply is not HTTP/1.x as this client reads it (garbage, or a broken body)."""


class Incomplete(ConnectionError):
    """The server closed the connection before the body it announced was complete."""


class Closed(ConnectionError):
    """The server closed the connection before sending a byte of its reply: on a kept-alive
    connection, the sign that it was closed while idle."""


class Connection:
    """One socket to an upstream and the bytes read from it that no reply has consumed yet."""

    def __init__(self, sock: socket.socket, host_header: str) -> None:
        self.sock = sock
        self.host_header = host_header
        self.buffer = b""

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
            status, reason, version, headers = self._read_head()
            if 100 <= status < 200 and status != 101:
                continue          # 100 Continue and friends precede the real reply
            return Response(self, method, status, reason, version, headers)

    def fill(self) -> bool:
        """Read once more into the buffer; False at EOF."""
        data = self.sock.recv(RECV_SIZE)
        if not data:
            return False
        self.buffer = self.buffer + data if self.buffer else data
        return True

    def close(self) -> None:
        self.sock.close()

    def _read_head(self) -> tuple[int, str, str, dict]:
        start = 0
        while (end := self.buffer.find(b"\r\n\r\n", start)) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("reply headers longer than 64 KiB")
            start = max(0, len(self.buffer) - 3)
            if not self.fill():
                if self.buffer:
                    raise ProtocolError(f"not an HTTP reply: {self.buffer[:80]!r}")
                raise Closed("closed before replying")
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        return parse_head(head)


def parse_head(head: bytes) -> tuple[int, str, str, dict]:
    status_line, *lines = head.decode("iso-8859-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP reply: {status_line[:80]!r}")
    if len(lines) > MAX_HEADERS:
        raise ProtocolError(f"more than {MAX_HEADERS} reply headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"bad reply header line {line[:80]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(code), reason, version, headers


class Response:
    """A reply's status and headers, and its body read by framing: length, chunks or close."""

    def __init__(self, conn: Connection, method: str, status: int, reason: str,
                 version: str, headers: dict) -> None:
        self.conn, self.status, self.reason, self.headers = conn, status, reason, headers
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        self.will_close = "close" in tokens or (version == "HTTP/1.0" and
                                                "keep-alive" not in tokens)
        self._done = method == "HEAD" or status in (204, 304)
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._left: int | None = None          # bytes of a Content-Length body still due
        self._chunk_left = 0                   # bytes of the current chunk still due
        self._crlf_due = self._trailers = False
        if not self._done and not self._chunked:
            self._left = _content_length(headers)
            if self._left is None:
                self.will_close = True         # the body ends when the connection does
            elif self._left == 0:
                self._done = True

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def isclosed(self) -> bool:
        """True once the whole body has been read."""
        return self._done

    def read1(self, size: int = RECV_SIZE) -> bytes:
        """Body bytes already here, or one recv's worth; b'' at the end."""
        while not self._done:
            data = self._take(size)
            if data or self._done:
                return data
            if not self.conn.fill():
                if self._chunked or self._left is not None:
                    raise Incomplete("closed in the middle of the body")
                self._done = True
        return b""

    def _take(self, size: int) -> bytes:
        if self._chunked:
            return self._dechunk(size)
        buffer = self.conn.buffer
        count = len(buffer) if self._left is None else min(len(buffer), self._left)
        count = min(count, size)
        data, self.conn.buffer = buffer[:count], buffer[count:]
        if self._left is not None:
            self._left -= count
            self._done = self._left == 0
        return data

    def _dechunk(self, size: int) -> bytes:
        """Every complete piece of chunk data in the buffer, up to `size` bytes."""
        buffer, pos, parts, total = self.conn.buffer, 0, [], 0
        while total < size and not self._done:
            if self._chunk_left:
                piece = buffer[pos:pos + min(self._chunk_left, size - total)]
                if not piece:
                    break
                parts.append(piece)
                pos, total = pos + len(piece), total + len(piece)
                self._chunk_left -= len(piece)
                self._crlf_due = self._chunk_left == 0
                continue
            if self._crlf_due:
                if len(buffer) - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                pos, self._crlf_due = pos + 2, False
                continue
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                break
            line, pos = buffer[pos:end], end + 2
            if self._trailers:
                self._done = not line         # trailers end at an empty line
            else:
                self._chunk_left = _chunk_size(line)
                self._trailers = self._chunk_left == 0
        self.conn.buffer = buffer[pos:]
        return b"".join(parts)


def _content_length(headers: dict) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    return int(value)


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip()
    if not digits or any(c not in b"0123456789abcdefABCDEF" for c in digits):
        raise ProtocolError(f"bad chunk size line {line[:40]!r}")
    return int(digits, 16)
