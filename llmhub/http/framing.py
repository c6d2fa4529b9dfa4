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

Everything raises `FramingError` (a HubError with its status), after which the caller must
close the connection: the rest of what the client sent cannot be trusted to be a request.
The reader is any binary file object with `readline(limit)` and `read(n)`.
"""

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from llmhub.errors import HubError

__all__ = ["FramingError", "RequestHead", "read_head", "read_body", "discard_body",
           "MAX_HEAD"]

MAX_HEAD = 65536           # request line and headers together, as nginx's default buffers
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024      # a size, and extensions nobody uses
MAX_TRAILERS = 8192
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
VERSIONS = ("HTTP/1.1", "HTTP/1.0")


class FramingError(HubError):
    """The bytes are not a request this server will read; the connection must close."""
    status, code = 400, "bad_request"


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


def read_head(rfile, limit: int = MAX_HEAD) -> RequestHead | None:
    """Read one request head; None if the connection closed before a request began."""
    budget = limit
    for _ in range(4):      # RFC 9112 §2.2: ignore empty lines before the request line
        line = rfile.readline(budget + 1)
        if not line:
            return None
        budget -= len(line)
        if line not in (b"\r\n", b"\n"):
            break
    else:
        raise FramingError("Expected a request line")
    if not line.endswith(b"\n"):
        if budget < 0:
            raise FramingError("The request line is too long", status=414,
                               code="uri_too_long")
        raise ConnectionResetError("the client closed mid-request-line")
    method, target, version = _request_line(line)
    headers = []
    while True:
        line = rfile.readline(budget + 1)
        budget -= len(line)
        if not line.endswith(b"\n"):
            if budget < 0:
                raise FramingError(f"The request head is over {limit} bytes", status=431,
                                   code="request_header_fields_too_large")
            raise ConnectionResetError("the client closed mid-head")
        if line in (b"\r\n", b"\n"):
            break
        if len(headers) == MAX_HEADERS:
            raise FramingError(f"More than {MAX_HEADERS} headers", status=431,
                               code="request_header_fields_too_large")
        headers.append(_header_line(line))
    path, authority = _route_target(method, target)
    head = RequestHead(method, target, path, version, headers, authority, "none",
                       size=limit - budget)
    _check_framing(head)
    return head


def _request_line(line: bytes) -> tuple[str, str, str]:
    text = line.rstrip(b"\r\n")
    if b"\r" in text:
        raise FramingError("A bare CR in the request line")
    words = text.split(b" ")
    if len(words) != 3 or not _TOKEN.match(words[0]) or not words[1]:
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


def _header_line(line: bytes) -> tuple[str, str]:
    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if line[:1] in (b" ", b"\t"):
        raise FramingError("Folded header lines are not accepted (RFC 9112 §5.2)")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.match(name):
        raise FramingError(f"Bad header line {line[:80].decode('latin-1')!r}")
    value = value.strip(b" \t")
    if _BAD_VALUE.search(value):
        raise FramingError(f"Header {name.decode()!r} has a CR, LF or NUL in its value")
    return name.decode("ascii"), value.decode("latin-1")


def _check_framing(head: RequestHead) -> None:
    found: dict[str, list[str]] = {}
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in ("host", "content-length", "transfer-encoding"):
            found.setdefault(lowered, []).append(value)
    hosts = found.get("host", [])
    if len(hosts) > 1:
        raise FramingError("More than one Host header")
    if head.version == "HTTP/1.1" and not hosts:
        raise FramingError("HTTP/1.1 needs a Host header (RFC 9112 §3.2)")
    if head.authority is None:
        head.authority = hosts[0] if hosts else None
    lengths, codings = found.get("content-length", []), found.get("transfer-encoding", [])
    if lengths and codings:
        raise FramingError("Content-Length and Transfer-Encoding together (RFC 9112 §6.1)")
    if len(lengths) > 1:
        raise FramingError("More than one Content-Length header")
    if codings:
        if len(codings) > 1 or codings[0].lower() != "chunked" or head.version != "HTTP/1.1":
            raise FramingError(f"Transfer-Encoding {', '.join(codings)!r} is not accepted; "
                               "send Content-Length, or exactly 'chunked' over HTTP/1.1")
        head.body = "chunked"
    elif lengths:
        value = lengths[0]
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise FramingError(f"Content-Length {value[:40]!r} is not a number",
                               param="Content-Length")
        head.length = int(value)
        head.body = "length" if head.length else "none"


# --- bodies ----------------------------------------------------------------------------------

def read_body(rfile, head: RequestHead, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (413) before reading past it."""
    if head.body == "length":
        check_length(head, limit)
        body = rfile.read(head.length)
        if len(body) < head.length:
            raise ConnectionResetError("the client closed mid-body")
        return body
    if head.body == "chunked":
        return b"".join(_chunks(rfile, limit))
    return b""


def check_length(head: RequestHead, limit: int) -> None:
    """A declared body over the limit is refused before a byte of it is read."""
    if head.body == "length" and head.length > limit:
        raise FramingError(f"Request body is {head.length} bytes; the limit is {limit} "
                           "(max_body_bytes)", status=413, code="payload_too_large")


def discard_body(rfile, head: RequestHead, limit: int) -> bool:
    """Read and drop a small body, so the connection can serve the next request; False if it
    is too large to be worth it (the caller closes the connection instead)."""
    if head.body == "length" and head.length <= limit:
        left = head.length
        while left:
            data = rfile.read(min(left, 65536))
            if not data:
                return False
            left -= len(data)
        return True
    return head.body == "none"


def _chunks(rfile, limit: int):
    total = 0
    while True:
        line = rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_CHUNK_LINE:
                raise FramingError("A chunk size line is too long")
            raise ConnectionResetError("the client closed mid-body")
        size_text = line.rstrip(b"\r\n").split(b";", 1)[0].rstrip(b" \t")
        if not _HEX.match(size_text):
            raise FramingError(f"Bad chunk size {size_text[:20].decode('latin-1')!r}: "
                               "expected hex digits")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise FramingError(f"Request body exceeds the limit of {limit} bytes "
                               "(max_body_bytes)", status=413, code="payload_too_large")
        data = rfile.read(size + 2)
        if len(data) < size + 2:
            raise ConnectionResetError("the client closed mid-body")
        if data[-2:] != b"\r\n":
            raise FramingError("Chunk data is not followed by CRLF")
        yield data[:-2]
    budget = MAX_TRAILERS      # trailers carry nothing the hub uses; bounded all the same
    while True:
        line = rfile.readline(budget + 1)
        budget -= len(line)
        if line in (b"\r\n", b"\n"):
            return
        if budget < 0 or not line.endswith(b"\n"):
            if budget < 0:
                raise FramingError("Chunked trailers are too long", status=431,
                                   code="request_header_fields_too_large")
            raise ConnectionResetError("the client closed mid-body")
