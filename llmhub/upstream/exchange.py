"""One HTTP exchange with an upstream whose socket any thread can shut down at once.

Why not urllib: closing a urllib response from another thread blocks until the upstream next
sends data, and urllib hides the socket (STYLE.md, "Closing from another thread does not
abort"). Here the socket is captured right after connect, and `abort()` shuts it down: a read
blocked in another thread returns at once. The HTTP itself is connection.py's, and no
environment proxy ever diverts a local upstream.

Timeouts are per phase: connect, first byte (until the first body data, which covers a long
prompt prefill), idle between reads after that, and a total deadline over the whole exchange.
Past connect they are enforced by the `DEADLINES` thread, which shuts an overdue socket down
the way abort() does: a socket with a timeout of its own would cost a poll() syscall before
every read and write.

Connections are kept alive in a per-upstream `Pool`, but only after an exchange that was read
to its end and never aborted; an idle connection the server has closed is noticed before each
reuse (on Linux by the kernel's count of what came in, elsewhere by a poll: see below).

A request is sent at most once, as nginx does (proxy_next_upstream's `non_idempotent`). A
reused connection that fails while the request is being written is retried once on a fresh
one: the server closed before the request was whole, so it cannot have acted on it. Once the
request is written, a connection that closes or resets without a reply is retried only for
GET and HEAD: the server may have read a POST and started generating, and sending it again
would run the model twice. That case is a 502 `upstream_disconnected`, saying the
request was sent and not answered. The check before reuse keeps the race where a server closes
an idle connection just as it is reused to a few microseconds.

A whole body is read with `read_all(limit)`, which returns all of it or raises a 502 naming
`[upstream] max_reply_bytes`: never a prefix, which would parse as nothing. `read_some` reads
a prefix on purpose (an error page's message).
"""

import functools
import math
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from llmhub.errors import UpstreamError
from llmhub.http.sockets import Deadlines, arrivals, readable
from llmhub.upstream.connection import Closed, Connection, Incomplete, ProtocolError, Response

__all__ = ["Exchange", "Pool", "Timeouts", "Aborted"]

# What a kept-alive connection the server has since closed raises on reuse.
STALE = (Closed, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
# Sent again after the connection failed once the request was written: RFC 9110 §9.2.2's
# idempotent methods that carry no body here (a POST may already be generating).
IDEMPOTENT = ("GET", "HEAD")
DEADLINES = Deadlines()


def retry_after(value) -> float | None:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date is not worth it)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 <= seconds < 86400 and math.isfinite(seconds) else None


class Aborted(UpstreamError):
    """The exchange was aborted by a cancel; never shown to a client."""
    code = "aborted"


class Timeouts:
    def __init__(self, connect: float, first_byte: float, idle: float, total: float) -> None:
        self.connect, self.first_byte, self.idle, self.total = connect, first_byte, idle, total

    @classmethod
    def of(cls, config) -> "Timeouts":
        """An upstream's configured timeouts ([upstream] *_timeout_seconds)."""
        return cls(config.connect_timeout_seconds, config.first_byte_timeout_seconds,
                   config.idle_timeout_seconds, config.total_timeout_seconds)


class Pool:
    """Idle keep-alive connections to one upstream."""

    max_idle = 32            # connections kept; more are closed
    max_idle_seconds = 2.0   # under the usual server keep-alive (Node's default is 5 s)

    def __init__(self) -> None:
        self._idle: list[tuple[float, Connection]] = []
        self._lock = threading.Lock()

    def get(self) -> Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                since, conn = self._idle.pop()
            # Checked every time: a POST on a connection found closed only after it was
            # written is not sent again, so finding it here is what saves it.
            if time.monotonic() - since < self.max_idle_seconds and _still_open(conn):
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append((time.monotonic(), conn))
                return
        conn.close()


def _still_open(conn: Connection) -> bool:
    """Nothing came in while the connection was idle: no EOF, no reset, no stray bytes.
    Where the kernel counts what came in (`arrivals`), that count against what was read
    says so without a poll; over TLS the two counts differ, so a poll."""
    if conn.received is not None and (count := arrivals(conn.sock)) is not None:
        return count == conn.received
    try:
        return not readable(conn.sock)
    except (OSError, ValueError):
        return False


@functools.lru_cache(maxsize=256)
def address(base_url: str) -> tuple[bool, str, int | None]:
    """(https?, host, port) of an upstream's base URL. An exchange is made per request and
    the URLs are the configured few: splitting one afresh (its hostname and port are parsed
    again on each access) cost ~2 µs a request."""
    parts = urlsplit(base_url)
    return parts.scheme == "https", parts.hostname or "", parts.port   # config: never empty


class Exchange:
    def __init__(self, base_url: str, timeouts: Timeouts, label: str,
                 pool: Pool | None = None) -> None:
        self.base_url, self.label, self.timeouts = base_url, label, timeouts
        self._https, self._host, self._port = address(base_url)
        self._conn: Connection | None = None
        self._aborted = self._expired = self._closed = False
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + timeouts.total
        self.expires_at: float | None = None    # the current phase's end, for DEADLINES
        self._got_data = False
        self._pool = pool
        self._reusable = False
        self.response: Response | None = None

    # -- the exchange ------------------------------------------------------------------------
    def send(self, method: str, path: str, body: bytes | list[bytes] | None,
             headers: dict) -> Response:
        """Connect (or reuse a kept-alive connection), send, read the status and headers."""
        DEADLINES.add(self)
        pooled = self._pool.get() if self._pool else None
        if pooled is not None:
            try:
                return self._send_on(pooled, method, path, body, headers, reused=True)
            except STALE:
                pooled.close()   # the server closed it while idle: once more, fresh
        return self._send_on(self._connect(), method, path, body, headers, reused=False)

    def _connect(self) -> Connection:
        try:
            return Connection.open(self._host, self._port, self._https, self.timeouts.connect)
        except OSError as exc:
            raise self._connect_error(exc) from None

    def _send_on(self, conn: Connection, method, path, body, headers, reused: bool) -> Response:
        with self._lock:
            self._conn = conn
            aborted = self._aborted
        if aborted:
            self.close()
            raise Aborted("aborted")
        try:
            self._arm()
            conn.send_request(method, path, headers, body)
        except STALE as exc:                 # closed before the request was whole
            raise self._stale(exc, reused) from None
        except OSError as exc:
            raise self._read_error(exc) from None
        except ValueError as exc:            # a header value with CR/LF, say: never sent
            raise UpstreamError(f"Request to {self.label} refused: {exc}", status=400,
                                code="invalid_request_header") from None
        try:
            self.response = conn.read_response(method)
        except STALE as exc:                 # written, then closed without a reply
            raise self._stale(exc, reused and method in IDEMPOTENT, sent=True) from None
        except (OSError, ProtocolError) as exc:
            raise self._read_error(exc) from None
        return self.response

    def _stale(self, exc: BaseException, retry: bool, sent: bool = False) -> BaseException:
        """What a failed kept-alive connection raises: `exc` itself, which send() retries
        once on a fresh connection, or the error the client sees."""
        if retry and not (self._aborted or self._expired):
            return exc
        if sent and not (self._aborted or self._expired):
            return UpstreamError(f"{self.label} at {self.base_url} closed the connection "
                                 "after the request was sent, without answering; not sent "
                                 "again, as the model may have started on it",
                                 code="upstream_disconnected", reason="unanswered",
                                 where=self.label)
        return self._read_error(exc)

    def finish(self) -> None:
        """The caller has what it needs: drain the rest so the connection can be reused."""
        response, conn = self.response, self._conn
        if response is None or conn is None:
            return                                 # nothing was answered: nothing to reuse
        try:
            if not response.isclosed():
                self.read_some(65536)
        except UpstreamError:
            return
        self._reusable = (response.isclosed() and not response.will_close
                          and not conn.reader.buffered and not (self._aborted or self._expired))

    def read(self, size: int = 65536) -> bytes:
        """Whatever body bytes are available (at most `size`); b'' at the end."""
        response = self.response
        try:
            self._arm()
            if response is None:
                raise AttributeError("read() before a response")
            data = response.read1(size)
        except (OSError, ProtocolError, ValueError, AttributeError) as exc:
            raise self._read_error(exc) from None
        if data:
            self._got_data = True
        elif self._aborted or self._expired:      # the EOF was our own shutdown
            raise self._read_error(EOFError())
        return data

    def read_all(self, limit: int) -> bytes:
        """The whole body; a 502 naming `[upstream] max_reply_bytes` if it is longer than
        `limit`. Never a prefix: a cut JSON reply used to parse as nothing at all
        (embeddings over 1 MiB came back as an empty list)."""
        body = self.read_some(limit + 1)
        if len(body) > limit:
            raise UpstreamError(f"{self.label} at {self.base_url} sent a reply larger than "
                                f"{limit} bytes ([upstream] max_reply_bytes)",
                                code="upstream_reply_too_large", reason="too_large",
                                where=self.label)
        return body

    def read_some(self, limit: int = 1 << 20) -> bytes:
        """At most `limit` body bytes, the rest left unread: enough of an error page."""
        parts, total = [], 0
        while total < limit and (data := self.read(min(65536, limit - total))):
            parts.append(data)
            total += len(data)
        return b"".join(parts)

    def abort(self) -> None:
        """Safe from any thread, any number of times."""
        self._shut_down("_aborted")

    def expire(self) -> None:
        """DEADLINES: the current phase is over; reads now fail with the timeout's error."""
        self._shut_down("_expired")

    def _shut_down(self, flag: str) -> None:
        with self._lock:
            if self._closed:
                return      # the connection may be back in the pool, someone else's now
            setattr(self, flag, True)
            conn = self._conn
        if conn is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)   # a read blocked in another thread
            except OSError:                             # returns at once
                pass   # already closed

    def close(self) -> None:
        """Close from the thread that reads (closing from another thread can block)."""
        DEADLINES.discard(self)
        with self._lock:
            self._closed = True
        if self._reusable and self._pool is not None and self._conn is not None \
                and not (self._aborted or self._expired):
            self._pool.put(self._conn)
            self._reusable = False
            return
        if self._conn is not None:
            try:
                self._conn.close(reset=self._aborted or self._expired)
            except OSError:
                pass

    # -- timeouts and error mapping ----------------------------------------------------------
    def _arm(self) -> None:
        """Start the clock of the phase the next read or write belongs to."""
        now = time.monotonic()
        if now >= self._deadline:
            raise TimeoutError("total")
        phase = self.timeouts.idle if self._got_data else self.timeouts.first_byte
        self.expires_at = min(now + phase, self._deadline)

    def _connect_error(self, exc: OSError) -> UpstreamError:
        where = f"{self.label} at {self.base_url}"
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {self.timeouts.connect:g} s (connect timeout)"
            return UpstreamError(f"Could not connect to {where}: {detail}", status=504,
                                 code="upstream_timeout", model_unavailable=True,
                                 reason="timeout", detail=detail, where=self.label)
        if isinstance(exc, ConnectionRefusedError):
            reason = "Connection refused"
        elif isinstance(exc, socket.gaierror):
            reason = f"host {self._host!r} not found"
        elif isinstance(exc, ssl.SSLError):
            reason = f"TLS error ({exc.reason or exc})"
        else:
            reason = exc.strerror or str(exc) or type(exc).__name__
        return UpstreamError(f"Could not connect to {where}: {reason}", status=503,
                             code="upstream_unavailable", model_unavailable=True,
                             reason="unreachable", detail=reason, where=self.label)

    def _read_error(self, exc: BaseException) -> UpstreamError:
        if self._aborted:
            return Aborted("aborted")
        where = f"{self.label} at {self.base_url}"
        if isinstance(exc, TimeoutError) or self._expired:
            if time.monotonic() >= self._deadline or str(exc) == "total":
                detail = f"did not finish within {self.timeouts.total:g} s (total timeout)"
            elif self._got_data:
                detail = f"went silent for {self.timeouts.idle:g} s mid-stream (idle timeout)"
            else:
                detail = (f"sent nothing for {self.timeouts.first_byte:g} s "
                          "(first-byte timeout)")
            return UpstreamError(f"{where} {detail}", status=504, code="upstream_timeout",
                                 model_unavailable=not self._got_data, reason="timeout",
                                 detail=detail, where=self.label)
        if isinstance(exc, Incomplete):
            return UpstreamError(f"{where} closed the connection in the middle of a chunk",
                                 code="upstream_disconnected", reason="disconnected",
                                 where=self.label)
        if isinstance(exc, ProtocolError):      # the reader's sentence, inside ours
            said = exc.message[:1].lower() + exc.message[1:]
            return UpstreamError(f"{where} sent a reply that is not HTTP/1.1 ({said})",
                                 code="upstream_garbage", model_unavailable=not self._got_data,
                                 reason="garbage", where=self.label)
        return UpstreamError(f"{where} closed the connection unexpectedly "
                             f"({type(exc).__name__})", code="upstream_disconnected",
                             model_unavailable=not self._got_data, reason="disconnected",
                             where=self.label)
