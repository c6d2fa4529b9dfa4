"""The HTTP server: one ThreadingHTTPServer subclass and one Handler.

`Handler.handle_one_request` reads a request head strictly (framing.py) and hands it to
`Handler.dispatch`, the funnel every request goes through: check Origin and Host, match the
route, check the key and the declared size, only then read the body, call the view, send
what it returned. An early answer leaves the connection open after dropping a small body,
or closes it with a lingering close. Errors become JSON in one place
(`send_error_json`), in the matched route's dialect shape. Client disconnects go through one
funnel too (CLIENT_GONE): they cancel the run and never print a traceback.

A run is driven in the handler's own thread, and the server's hangup watch notices its
client leaving meanwhile: an awaited run (`serve_awaited`), and a stream that ends with
its client (`serve_stream`), whose events `streaming.Pump` writes through `StreamOut`
each time the run is about to wait on the upstream, the server's pinger keeping its pings
while the upstream is silent. A stream that outlives its client (background, stored,
resumable) is read from the upstream by a worker and followed by the Pump instead.

Sockets stay blocking: the server's Deadlines shut down a connection that outstays its
phase (`Phase`, `PHASES`): idle keep-alive, a trickled request, a body fallen silent for
`body_timeout_seconds`, a client that stopped reading. The phase changes only in
`Handler.enter`, which stamps it and its deadlines together in one tuple (a `Clock`'s
fields), swapped whole, so that other threads read a consistent set without a lock.

Connection slots are counted per client address as well as in all: one address may hold
`max_connections_per_client`, so a client trickling bodies into every slot it can get
locks out only itself. Loopback is one address like any other.
"""

import contextlib
import email.utils
import enum
import hmac
import io
import logging
import random
import socket
import socketserver
import sys
import threading
import time
from email.policy import compat32
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import NamedTuple
from urllib.parse import parse_qs, unquote

from llmhub import __version__
from llmhub.dialects import service
from llmhub.engine import accounting
from llmhub.engine.runs import CANCELLED, COMPLETED, Run
from llmhub.errors import (BadRequest, Forbidden, HubError, Unauthorized, UnsupportedMediaType,
                           UpgradeRequired)
from llmhub.http import routes
from llmhub.http.framing import FramingError, RequestReader, check_length
from llmhub.http.origins import OriginPolicy
from llmhub.http.sockets import Deadlines, HangupWatch, RecvSize, peer_closed, writable
from llmhub.http.streaming import Pinger, Pump
from llmhub.ids import SAFE_ID
from llmhub.redaction import redact_error
from llmhub.wire import (LAST_CHUNK, BytesResponse, FileResponse, JSONResponse, LinesResponse,
                         RelayResponse, RunResponse, StreamResponse, check_content_type,
                         check_message_count, chunk, json_bytes, json_text, parse_json)

__all__ = ["HubServer", "Handler", "Request", "CLIENT_GONE", "make_server"]

log = logging.getLogger("llmhub.server")
access_log = logging.getLogger("llmhub.access")

# A client that went away shows up as one of these on write or read (STYLE.md habit 5).
CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
EXPOSED_HEADERS = "X-Run-Id, X-Request-Id, lb-thread-id, X-Llmhub-Resumable"
DISCARD_LIMIT = 65536      # an unwanted body up to this size is read and dropped, so the
                           # connection survives an early 401/404; a larger one closes it
LINGER_SECONDS = 5.0       # lingering close (as nginx's): after an early answer, read and
LINGER_IDLE = 1.0          # drop what the client still sends, so that a client writing its
LINGER_BYTES = 64 << 20    # whole body before reading gets the answer, not a reset
CANCELLED_WRITE_GRACE = 1.0   # seconds a write of a cancelled run may block on a client
                              # that reads nothing, before the client is dropped
# Request ids only correlate log lines: a seeded PRNG is enough, and far cheaper than uuid4.
# (Run ids, which authorise a cancel, stay uuid4.)
_request_ids = random.Random()
_date = (0, "")            # (second, its Date header): Handler.date_time_string's cache
# Each status line as send_response writes it (its protocol_version, not the request's)
_STATUS_LINES = {int(status): f"HTTP/1.1 {int(status)} {phrase}"
                 for status, (phrase, _) in BaseHTTPRequestHandler.responses.items()}


class Headers(HTTPMessage):
    """A request's headers: an HTTPMessage (views and the stdlib use its methods) whose
    lookups, a dozen a request, come from a dict made once, by the framing check, which
    reads every name anyway (RequestHead.fields). HTTPMessage.get scans every header and
    lower-cases each name per call: ~10 µs a request in all. The server's own lookups, of
    names it spells itself, go to that dict (`fields`) directly: no Python call at all."""

    # Message.__init__'s attributes as class defaults, so that it need not run for every
    # request: a request's headers never get a payload, a charset or a preamble of their own.
    policy = compat32
    _unixfrom = _payload = _charset = preamble = epilogue = None
    _default_type = "text/plain"

    def __init__(self, pairs: list, fields: dict | None = None) -> None:
        self._headers = list(pairs)      # compat32 keeps (name, value) as given, so do we
        self.defects: list = []
        if fields is None:
            self._reindex()
        else:
            self.fields = fields         # {lower-cased name: its first value}

    def _reindex(self) -> None:
        fields: dict[str, str] = {}
        for name, value in reversed(self._headers):   # the first of a repeated name wins,
            fields[name.lower()] = value               # as Message.get has it
        self.fields = fields

    def get(self, name, failobj=None):
        return self.fields.get(name.lower(), failobj)

    def __getitem__(self, name):
        return self.fields.get(name.lower())

    def __contains__(self, name) -> bool:
        return name.lower() in self.fields

    def __setitem__(self, name, value) -> None:
        super().__setitem__(name, value)
        self._reindex()

    def __delitem__(self, name) -> None:
        super().__delitem__(name)
        self._reindex()


class Request:
    """What a view sees: the parsed request, the hub, and the connection's handler."""

    def __init__(self, handler: "Handler", path: str, query: str, body: bytes) -> None:
        self.handler = handler
        self.hub = handler.server.hub
        self.method = handler.command
        self.path = path
        self.query = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()} \
            if query else {}
        self.headers = handler.headers
        self.body = body
        self._json = None

    def json(self, messages: bool = True):
        """The body parsed; `messages=False` where `input` is not a message list (embeddings'
        texts have their own limit). The raw bytes are let go first (`body` is empty after):
        a large body is held as text and value, never as bytes, text and value at once."""
        if self._json is None:
            check_content_type(self.headers.fields.get("content-type"))
            text = json_text(self._utf8_body())
            self.body = b""
            self._json = parse_json(text)
            del text
            if messages:
                check_message_count(self._json, self.hub.config.server.max_messages)
        return self._json

    def _utf8_body(self) -> bytes:
        """The body as UTF-8; a declared other charset (older PowerShell) is honoured."""
        declared = self.headers.fields.get("content-type", "")
        # No parameters (the usual "application/json"): no charset, so no email-package
        # parameter parsing, which costs ~10 µs a request
        charset = "utf-8" if ";" not in declared else \
            (self.headers.get_content_charset() or "utf-8").lower().replace("_", "-")
        if charset in ("utf-8", "utf8"):
            return self.body
        try:
            return self.body.decode(charset).encode("utf-8")
        except LookupError:
            raise UnsupportedMediaType(f"Unknown charset {charset!r}; send UTF-8") from None
        except UnicodeDecodeError:
            raise BadRequest(f"Request body is not valid {charset}",
                             code="invalid_encoding") from None

    def json_object(self, messages: bool = True) -> dict:
        body = self.json(messages)
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object")
        return body

    def run_id(self) -> str | None:
        """A client-chosen run id (X-Run-Id), so a non-streaming call can be cancelled too."""
        value = self.headers.get("X-Run-Id")
        if value is None:
            return None
        if not SAFE_ID.match(value):
            raise BadRequest("X-Run-Id must be 1-128 letters, digits or _ . : -",
                             param="X-Run-Id")
        return value


class Phase(enum.Enum):
    """Where a connection is. Each phase has its own timeout (PHASES)."""
    NEW = "new"            # accepted; its first request not begun
    IDLE = "idle"          # kept alive, waiting for the next request
    HEAD = "head"          # a request line and headers arriving
    BODY = "body"          # the body arriving (without one: the checks before the view)
    SERVING = "serving"    # the view runs: a run may take as long as it takes
    WRITING = "writing"    # one write to the client, inside any of the others

    # Members are singletons compared by identity, so they may hash by it too: Enum's own
    # __hash__ is Python code, and each phase change looks its phase up in a dict.
    __hash__ = object.__hash__


# Each phase's timeout, as a [server] setting, and what it does to the request's own
# deadline: a request's phases (HEAD, BODY) end by read_timeout_seconds from its first byte
# as well, which HEAD "starts" and BODY "keeps": a body trickled a byte per few seconds
# restarts its silence clock forever, but not that one.
PHASES = {
    Phase.NEW: ("head_timeout_seconds", None),        # one that never sends (slowloris)
    Phase.IDLE: ("keepalive_timeout_seconds", None),
    Phase.HEAD: ("head_timeout_seconds", "starts"),
    Phase.BODY: ("body_timeout_seconds", "keeps"),    # of silence: each read restarts it
    Phase.SERVING: (None, None),
    Phase.WRITING: ("read_timeout_seconds", None),    # a client that stopped reading a stream
}
WAITING = (Phase.NEW, Phase.IDLE)   # no request begun: may be closed to make room


def phase_rules(limits) -> dict:
    """{phase: (seconds it may last, what it does to the request's deadline)}, from
    [server]; no connection waits for its first request longer than a request may take."""
    rules = {phase: (None if key is None else getattr(limits, key), request)
             for phase, (key, request) in PHASES.items()}
    rules[Phase.NEW] = (min(limits.head_timeout_seconds, limits.read_timeout_seconds), None)
    return rules


class Clock(NamedTuple):
    """A connection's phase and deadlines, as `Handler.clock` shows them. The handler keeps
    them as a plain tuple of these fields (`Handler._clock`), replaced whole by
    Handler.enter(): the Deadlines ticker and the eviction of idle connections read it from
    other threads, without a lock, so they take it once and read its fields, never the
    handler's twice."""
    phase: Phase
    since: float                 # when the phase began
    expires: float | None        # past it the Deadlines shut the socket down
    request_ends: float | None   # HEAD and BODY: read_timeout_seconds from the first byte


class DeadlineWriter(io.BufferedIOBase):
    """The handler's socket for writing: each write is a WRITING phase, which must end
    within read_timeout_seconds or the Deadlines shut the socket down, so a client that
    stops reading a stream cannot hold its thread forever."""

    def __init__(self, sock, handler) -> None:
        self.sock, self.handler = sock, handler

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        before = self.handler.enter(Phase.WRITING)
        try:
            self.sock.sendall(data)
        finally:
            self.handler.resume(before)
        return len(data)


class HubServer(ThreadingHTTPServer):
    """Serves one Hub. Class attributes are socketserver's knobs, each set for a reason."""

    request_queue_size = 1024  # TCPServer's default of 5 (and even 128) drops bursts: a page
                               # or benchmark opening 1,000 streams at once lost 40% at 128
    daemon_threads = True      # an open stream must not keep the interpreter alive
    block_on_close = False     # server_close() must not wait for long-lived streams

    def __init__(self, hub, raise_errors: bool = False, port: int | None = None) -> None:
        self.hub = hub
        self.raise_errors = raise_errors   # tests: record view bugs so the test fails on them
        self.errors: list[BaseException] = []
        self._busy = 0
        self.connections = 0
        self.per_client: dict[str, int] = {}   # open connections by client address
        self._busy_cond = threading.Condition()
        self._busy_guard = Busy(self)
        self.hangups = HangupWatch()       # clients of runs driven in their handler's thread
        self.pinger = Pinger(hub.config.server.ping_interval_seconds)   # … and their pings
        self.deadlines = Deadlines(interval=0.25)   # every connection's read/write limit
        self.origins = OriginPolicy(hub.config.server)
        hub.routes = routes.ROUTES   # for /help and /openapi.json, without an import cycle
        port = hub.config.server.port if port is None else port
        super().__init__((hub.config.server.host, port), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse-DNS lookup that can stall startup.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        host = self.server_name
        return f"http://[{host}]:{self.server_port}" if ":" in host else \
            f"http://{host}:{self.server_port}"

    def process_request(self, request, client_address) -> None:
        """Past max_connections_per_client or max_connections, close an idle keep-alive
        connection (the client's own, for its cap) to make room; with none idle, answer
        429 or 503 from the accept loop itself: no thread is spent."""
        with self._busy_cond:
            refusal = self._admit(client_address[0])
        if refusal:
            self._refuse(request, *refusal)
            return
        super().process_request(request, client_address)

    def _admit(self, address: str) -> tuple | None:
        """Count a new connection in, or say why not: (status, message). Call with
        _busy_cond held. An evicted connection is still counted: it leaves within moments."""
        limits = self.hub.config.server
        mine = self.per_client.get(address, 0)
        if mine >= limits.max_connections_per_client:
            if not self._evict_idle(address):
                return 429, ("Too many connections from your address; close some or try "
                             "again shortly (max_connections_per_client)")
        elif self.connections >= limits.max_connections and not self._evict_idle():
            return 503, "Too many connections; try again shortly"
        self.connections += 1
        self.per_client[address] = mine + 1
        return None

    def _evict_idle(self, address: str | None = None) -> bool:
        """Shut down the connection (of `address`, if given) that has waited longest for
        its next request."""
        idle = [(clock.since, handler) for handler in self.deadlines.holders()
                if (clock := handler.clock).phase in WAITING and not handler.evicted
                and (address is None or handler.client_address[0] == address)]
        if not idle:
            return False
        oldest = min(idle, key=lambda pair: pair[0])[1]
        oldest.evicted = True
        oldest.expire()
        return True

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._busy_cond:
                self.connections -= 1
                address = client_address[0]
                left = self.per_client.pop(address) - 1
                if left:                 # no entry for an address with none: the map stays
                    self.per_client[address] = left   # as small as the connections open

    def _refuse(self, sock, status: int, message: str) -> None:
        body = json_bytes({"error": {"message": message, "code": "too_many_connections",
                                     "status": status}})
        reason = {429: b"Too Many Requests", 503: b"Service Unavailable"}[status]
        try:
            sock.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nRetry-After: 1"
                         b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                         % (status, reason, len(body)) + body)
        except OSError:
            pass
        self.shutdown_request(sock)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, CLIENT_GONE):
            log.error("unhandled error serving %s", client_address[0], exc_info=True)

    def busy(self) -> "Busy":
        """Counts runs being served, so shutdown can let them finish their last frames."""
        return self._busy_guard

    def stop(self, grace: float = 5.0) -> None:
        """Cancel every run, let streams send their end, stop serving. Not from serve_forever."""
        self.hub.registry.cancel_all("shutdown")
        with self._busy_cond:
            self._busy_cond.wait_for(lambda: self._busy == 0, grace)
        self.shutdown()
        self.server_close()


class Busy:
    """`with server.busy():` counts a run being served. A class rather than a
    @contextmanager, which costs a generator and three Python calls a request; it keeps
    nothing of one use, so one serves every thread."""

    __slots__ = ("server",)

    def __init__(self, server: HubServer) -> None:
        self.server = server

    def __enter__(self) -> None:
        server = self.server
        with server._busy_cond:
            server._busy += 1

    def __exit__(self, *exc_info) -> None:
        server = self.server
        with server._busy_cond:
            server._busy -= 1
            if not server._busy:       # only stop() waits, and only for none left
                server._busy_cond.notify_all()


def make_server(hub, raise_errors: bool = False, port: int | None = None) -> HubServer:
    """A server for the hub, on [server] port or on `port` (the Ollama listener, which
    serves the same hub where Ollama's clients look for it)."""
    return HubServer(hub, raise_errors=raise_errors, port=port)


class StreamOut:
    """A stream's writer (streaming.StreamWriter) on a handler's connection: chunked over
    HTTP/1.1; over HTTP/1.0 the body ends where the connection does."""

    def __init__(self, handler: "Handler", response: StreamResponse) -> None:
        self.handler, self.response = handler, response
        self.chunked = handler.request_version == "HTTP/1.1"

    @property
    def started(self) -> bool:
        return self.handler.state.sent

    def start(self, data: bytes) -> None:
        handler, response = self.handler, self.response
        headers = {"Content-Type": response.renderer.content_type,
                   "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                   "X-Run-Id": response.run.id, **response.headers}
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            handler.close_connection = True
        handler._begin(200, headers)
        handler._capture(data)
        handler._end_headers(self._frame(data) if data and handler.command != "HEAD" else b"")

    def send(self, data: bytes) -> None:
        self.handler._capture(data)
        self.handler.wfile.write(self._frame(data))

    def end(self, data: bytes = b"") -> None:
        self.handler._capture(data)
        last = (self._frame(data) if data else b"") + (LAST_CHUNK if self.chunked else b"")
        if last:
            self.handler.wfile.write(last)

    def client_gone(self) -> bool:
        return peer_closed(self.handler.connection)

    def writable(self) -> bool:
        return writable(self.handler.connection)

    def _frame(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data


class RelayOut:
    """A reply written as it comes (a relayed one: generation.RelaySink; lines a view
    makes) on a handler's connection: its status and headers, its length where known, else
    chunked (HTTP/1.1) or ended by closing (HTTP/1.0); each piece written as it came."""

    def __init__(self, handler: "Handler", headers: dict) -> None:
        self.handler, self.headers = handler, headers
        self.chunked = False

    def open(self, status: int, headers: dict, length: int | None) -> None:
        handler = self.handler
        headers = {"Content-Type": "application/octet-stream", **headers, **self.headers}
        if length is not None:
            headers["Content-Length"] = str(length)
        elif handler.request_version == "HTTP/1.1":
            self.chunked = True
            headers.update({"Transfer-Encoding": "chunked", "Cache-Control": "no-cache",
                            "X-Accel-Buffering": "no"})
        else:
            handler.close_connection = True
        handler._begin(status, headers)
        handler._end_headers()

    def send(self, data: bytes) -> None:
        self.handler._capture(data)
        self.handler.wfile.write(chunk(data) if self.chunked else data)

    def end(self) -> None:
        if self.chunked:
            self.handler.wfile.write(LAST_CHUNK)


class RequestState:
    """What the handler knows of the request in hand; a new one for each request on a
    connection, so nothing of one request leaks into the next."""

    __slots__ = ("head", "request_id", "sent", "status", "run", "dialect", "route",
                 "body_read", "body", "captured")

    def __init__(self, head) -> None:
        self.head = head               # framing.RequestHead, None before one was read
        self.request_id = "-"
        self.sent = False              # the status line has gone out
        self.status: int | None = None
        self.run: Run | None = None    # the run it served, for the request log
        self.dialect: ModuleType | None = None   # whose error shape answers it
        self.route = "unmatched"       # for metrics
        self.body_read = head is None or head.body == "none"
        self.body = b""                # the request body, once read
        self.captured: bytearray | None = None   # what was sent, with [log] capture_bodies


class Handler(BaseHTTPRequestHandler):
    server: HubServer                # not any BaseServer: views reach the hub through it
    wfile: DeadlineWriter
    headers: Headers                 # the request's (_take_head), not any email Message
    _head: list[str]                 # the reply's head, _begin to _end_headers
    protocol_version = "HTTP/1.1"    # keep-alive; JSON has Content-Length, streams are chunked
    disable_nagle_algorithm = True   # one write per frame goes out at once (TCP_NODELAY)
    server_version = f"llmhub/{__version__}"
    METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    # -- plumbing ----------------------------------------------------------------------------
    def version_string(self) -> str:
        return self.server_version   # no Python version in the Server header

    def date_time_string(self, timestamp=None) -> str:
        """The Date header, formatted once a second rather than once a response (the
        stdlib's goes through datetime and email.utils: ~15 µs a response)."""
        global _date
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        if _date[0] != now:
            _date = (now, email.utils.formatdate(now, usegmt=True))
        return _date[1]

    def setup(self) -> None:
        # The socket stays blocking (a socket timeout costs a poll() per recv and send).
        # Instead the server's Deadlines shut it down once its phase outstays its timeout,
        # which reaps idle keep-alive connections, clients that trickle a request a byte
        # at a time (slowloris), and clients that stopped reading what they are sent.
        limits = self.server.hub.config.server
        self.read_timeout = limits.read_timeout_seconds
        self.phases = phase_rules(limits)
        self.enter(Phase.NEW)
        self.evicted = False                   # closed to make room: not to be chosen again
        self.served = 0
        self.linger = False                    # read and drop the client's rest at the end
        self.state = RequestState(None)
        super().setup()
        self.rfile.close()   # requests are read through `requests`, writes through a
        self.requests = RequestReader(self._recv)             # writer that keeps a deadline
        self.recv_size = RecvSize()            # an idle keep-alive connection holds its recv
        self.wfile = DeadlineWriter(self.connection, self)
        self.server.deadlines.add(self)

    def finish(self) -> None:
        self.server.deadlines.discard(self)
        super().finish()
        if self.linger:
            self._linger()

    def _linger(self) -> None:
        """Answered early, with the client perhaps still writing its body: signal the end,
        then read and drop what comes for a bounded time, so the client can read the answer
        rather than get a reset for writing into a closed socket."""
        sock, left = self.connection, LINGER_BYTES
        end = time.monotonic() + LINGER_SECONDS
        buffer = bytearray(65536)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(LINGER_IDLE)
            while left > 0 and time.monotonic() < end and (count := sock.recv_into(buffer)):
                left -= count

    def expire(self) -> None:
        """Deadlines: the client took too long; a read or write blocked on it ends now."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- the connection's phases -------------------------------------------------------------
    # Clock's fields as a plain tuple: the phase changes five times a request and at every
    # write, and a NamedTuple made each time cost more than the rest of enter().
    _clock: tuple = (Phase.NEW, 0.0, None, None)   # until setup() enters NEW

    def enter(self, phase: Phase) -> tuple:
        """The one place the phase changes: the phase and its deadlines are stamped together,
        in one tuple swapped whole. Returns the one it replaced, for resume()."""
        now, before = time.monotonic(), self._clock
        timeout, request = self.phases[phase]
        if request is None:
            ends = None
        elif request == "starts":
            ends = now + self.read_timeout
        else:
            ends = before[3]               # "keeps": the request's own deadline carries on
        expires = None if timeout is None else now + timeout
        if ends is not None and expires is not None and ends < expires:
            expires = ends
        self._clock = (phase, now, expires, ends)
        return before

    def resume(self, clock: tuple) -> None:
        """Back to the phase a write interrupted, with its deadlines as they were."""
        self._clock = clock

    @property
    def clock(self) -> Clock:
        """The phase and its deadlines, for another thread (read once: one consistent set)."""
        return Clock(*self._clock)

    @property
    def expires_at(self) -> float | None:
        """For the Deadlines: when this connection's phase is over. A write of a cancelled
        run not yet concluded gives way within CANCELLED_WRITE_GRACE: the thread blocked in
        it is the run's driver, and a cancel by id, a shutdown or an unload waits for that
        thread to store what the run made, not for read_timeout_seconds. Once the run is
        concluded nothing waits on the write, and a slow reader of its reply (an awaited
        one, a replay) keeps the whole read_timeout_seconds."""
        phase, since, expires, _ = self._clock
        run = self.state.run
        if phase is Phase.WRITING and expires is not None and isinstance(run, Run) and \
                run.status == CANCELLED and not run.concluded:
            return min(expires, since + CANCELLED_WRITE_GRACE)
        return expires

    def _recv(self) -> bytes:
        """The next bytes from the client, for `requests`. A per-recv timeout never trips on
        a client sending one byte every few seconds; here the first byte of a request
        begins its HEAD phase, and each read of a body restarts the BODY phase's silence
        clock (nginx's client_body_timeout), both within the request's own deadline."""
        phase, _, _, request_ends = self._clock
        if request_ends is not None and time.monotonic() >= request_ends:
            raise TimeoutError("the request took longer than read_timeout_seconds")
        data = self.recv_size.recv(self.connection)
        if data and phase in WAITING:
            self.enter(Phase.HEAD)
        elif data and phase is Phase.BODY:
            self.enter(Phase.BODY)
        return data

    def handle_one_request(self) -> None:
        self.state = RequestState(None)
        if self.requests.pending:      # its first byte came with the request before it
            self.enter(Phase.HEAD)
        else:
            self.enter(Phase.IDLE if self.served else Phase.NEW)
        self.command, self.request_version, self.path = "", "HTTP/1.1", ""
        try:
            head = self.requests.read_head()
        except FramingError as exc:
            self.close_connection = self.linger = True
            return self._protocol_error(exc)
        if head is None:
            self.close_connection = True
            return
        self.served += 1
        self._take_head(head)
        self.enter(Phase.BODY)
        if self.command not in self.METHODS:
            # An unread body ends the connection; without one, the client's own
            # `Connection: close` (read in _take_head) still holds.
            if head.body != "none":
                self.close_connection = self.linger = True
            return self._protocol_error(HubError(f"Method {self.command} is not implemented",
                                                 status=501, code="not_implemented"))
        self.dispatch()

    def _take_head(self, head) -> None:
        self.state = RequestState(head)
        self.command, self.request_version, self.path = head.method, head.version, head.path
        self.requestline = f"{head.method} {head.target} {head.version}"
        headers = self.headers = Headers(head.headers, head.fields)
        head.headers, head.fields = (), {}   # kept once, as the message: a held stream is small
        connection = headers.fields.get("connection")
        tokens = {t.strip().lower() for t in connection.split(",")} if connection else ()
        self.close_connection = "close" in tokens or (head.version == "HTTP/1.0"
                                                      and "keep-alive" not in tokens)

    def handle(self) -> None:
        try:
            super().handle()
        except CLIENT_GONE:
            self.close_connection = True

    def log_request(self, code="-", size="-") -> None:
        pass   # dispatch writes one structured line per request instead

    def log_message(self, format, *args) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- the funnel --------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Every check that needs no body comes before the body is read: origin and host,
        route, key, size. Only then is `100 Continue` sent and the body read."""
        started = time.perf_counter()
        self.state.request_id = self._request_id()
        try:
            path, _, query = self.path.partition("?")
            path = unquote(path)
            self._guard()
            if "websocket" in self.headers.fields.get("upgrade", "").lower():
                raise UpgradeRequired("The hub speaks HTTP only here: send the same request "
                                      "as an HTTP POST (WebSocket is not served)",
                                      param="Upgrade", code="websocket_not_supported")
            if self.command == "OPTIONS":
                self._read_body()
                return self._preflight(path)
            route, params = routes.match("GET" if self.command == "HEAD" else self.command, path,
                                         self.headers.fields.get("accept", ""))
            self.state.dialect, self.state.route = route.dialect, route.pattern
            key = self._authorise(route)
            hub = self.server.hub
            hub.limits.admit(key, self.command, path)
            caller = accounting.Caller((key, route.pattern, hub.config.key_limits.get(key)))
            accounting.current.set(caller)
            if route.admin:
                caller.check_admin(f"{self.command} {route.path}")
            # Only the Request holds the body (and the request log, if it keeps bodies),
            # so that Request.json can let it go.
            request = Request(self, path, query, self._read_body())
            if hub.config.log.capture_bodies:
                self.state.body, self.state.captured = request.body, bytearray()
            self.enter(Phase.SERVING)
            self._send_result(route.view(request, **params))
        except CLIENT_GONE:
            raise
        except HubError as exc:
            if isinstance(exc, FramingError):   # the rest of the input is not a request
                self.close_connection = self.linger = True
            self._settle_body()
            self.send_error_json(exc)
        except Exception as exc:
            log.error("error in %s %s", self.command, self.path, exc_info=True)
            if self.server.raise_errors:
                self.server.errors.append(exc)
            self._settle_body()
            self.send_error_json(HubError("Internal server error"))
        finally:
            if self.state.status is None:   # nothing was sent: the client left first
                self.server.hub.metrics.request(self.state.route, self.command, None)
            self._log_request(started)
            self._keep_bodies()

    def _guard(self) -> None:
        """DNS rebinding and cross-origin pages are refused before anything runs."""
        policy, authority = self.server.origins, self.state.head.authority
        if not policy.host_allowed(authority):
            raise Forbidden(f"Host {authority!r} is not allowed; add it to [server] "
                            "allowed_hosts to reach the hub by that name", param="Host",
                            code="host_not_allowed")
        origin = self.headers.fields.get("origin")
        if not policy.origin_allowed(origin, authority):
            raise Forbidden(f"Origin {origin!r} is not allowed; add it to [server] "
                            "cors_origins to let that page use the hub", param="Origin",
                            code="origin_not_allowed")

    def _read_body(self) -> bytes:
        head, limit = self.state.head, self.server.hub.config.server.max_body_bytes
        if self.state.body_read:
            return b""
        check_length(head, limit)
        if self.headers.fields.get("expect", "").lower() == "100-continue" and \
                head.version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.requests.read_body(head, limit)
        self.state.body_read = True
        return body

    def _settle_body(self) -> None:
        """Answering without the body: drop a small one and keep the connection; otherwise
        (large, chunked, half read, or awaiting 100 Continue) close it, lingering."""
        if self.state.body_read:
            return
        self.state.body_read = True
        waiting = self.headers.fields.get("expect", "").lower() == "100-continue"
        if not waiting and self.requests.discard_body(self.state.head, DISCARD_LIMIT):
            return
        self.close_connection = self.linger = True

    def _authorise(self, route) -> str:
        """The name of the key the request presents ("local" with no keys configured, "-"
        on a public route); 401 for a guarded route without a valid one."""
        keys = self.server.hub.config.keys
        if not keys:
            return accounting.LOCAL
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            token = self.headers.get("x-api-key", "")   # Anthropic's SDKs send it so
        secret = token.strip().encode()
        name = next((n for n, k in keys.items() if hmac.compare_digest(secret, k.encode())),
                    None) if secret else None
        if name is not None or not route.auth:
            return name or accounting.PUBLIC
        raise Unauthorized("Missing or invalid API key: send 'Authorization: Bearer <key>' "
                           "(or x-api-key)", headers={"WWW-Authenticate": "Bearer"})

    def _send_result(self, result) -> None:
        if isinstance(result, BytesResponse):
            self._send_bytes(result.status, result.content_type, result.body, result.headers)
        elif isinstance(result, JSONResponse):
            self.send_json(result.status, result.body, result.headers)
        elif isinstance(result, StreamResponse):
            self.serve_stream(result)
        elif isinstance(result, RunResponse):
            self.serve_awaited(result)
        elif isinstance(result, RelayResponse):
            self.serve_relay(result)
        elif isinstance(result, LinesResponse):
            self.serve_lines(result)
        elif isinstance(result, FileResponse):
            self.serve_file(result)
        else:
            raise TypeError(f"a view returned {type(result).__name__}")

    # -- JSON responses ----------------------------------------------------------------------
    def send_json(self, status: int, body, headers: dict | None = None) -> None:
        payload = b"" if status == 204 else json_bytes(body)
        self._send_bytes(status, "application/json", payload, headers)

    def _send_bytes(self, status: int, content_type: str, payload: bytes,
                    headers: dict | None) -> None:
        self._begin(status, headers)
        self._head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}")
        self._capture(payload)
        self._end_headers(b"" if self.command == "HEAD" else payload)

    def send_error_json(self, exc: HubError) -> None:
        if self.state.sent:
            self.close_connection = True   # too late for a status: end the connection
            return
        redact_error(exc, self.server.hub.engine.secrets)   # whatever raised it
        path = unquote(self.path.partition("?")[0]) if self.path else ""
        dialect = self.state.dialect or routes.dialect_for(path) or service
        status, body = exc.status, dialect.error_body(exc)
        if isinstance(body, tuple):        # the dialect restates the status too
            status, body = body
        self.send_json(status, body, exc.headers)

    def _protocol_error(self, error: HubError) -> None:
        """A request that could not be read as one (bad framing, unknown method): answer in
        the generic shape; the caller has decided whether the connection survives."""
        self.state = RequestState(self.state.head)   # no request id: none was read
        with contextlib.suppress(*CLIENT_GONE):
            self.send_error_json(error)

    def _begin(self, status: int, headers: dict | None) -> None:
        """Start the reply's head: the lines send_response and send_header would write, in
        their order, kept as text for _end_headers to encode once (send_header formats,
        encodes and appends each header: ~1 µs apiece)."""
        # Counted before the reply leaves, so a client that reads /metrics next sees it.
        state = self.state
        state.status = status
        self.server.hub.metrics.request(state.route, self.command or "-", status)
        head = self._head = [f"{_STATUS_LINES.get(status) or f'HTTP/1.1 {status} '}\r\n"
                             f"Server: {self.server_version}\r\n"
                             f"Date: {self.date_time_string()}\r\n"
                             f"X-Request-Id: {state.request_id}"]
        if headers:
            head += [f"{name}: {value}" for name, value in headers.items()]
        self._cors_headers()
        if self.close_connection:
            head.append("Connection: close")

    def _end_headers(self, data: bytes = b"") -> None:
        # Headers and body leave in one write: with TCP_NODELAY two writes are two packets.
        head = "\r\n".join(self._head) + "\r\n\r\n"
        self.wfile.write(head.encode("latin-1") + data)
        self.state.sent = True

    def _cors_headers(self) -> None:
        origin = self.state.head is not None and self.headers.fields.get("origin")
        policy = self.server.origins
        if not origin or not policy.origin_allowed(origin, self.state.head.authority):
            return
        self._head.append(f"Access-Control-Allow-Origin: {policy.allow_origin_header(origin)}")
        if not policy.any_origin:
            self._head.append("Vary: Origin")
        self._head.append(f"Access-Control-Expose-Headers: {EXPOSED_HEADERS}")

    def _preflight(self, path: str) -> None:
        methods = routes.methods_for(path)
        if not methods:
            return self.send_error_json(routes.not_found(path))
        allow = ", ".join(sorted(set(methods) | {"OPTIONS"}))
        self._begin(204, {"Allow": allow, "Access-Control-Allow-Methods": allow,
                          "Access-Control-Allow-Headers": self.headers.get(
                              "Access-Control-Request-Headers",
                              "Authorization, Content-Type, X-Run-Id"),
                          "Access-Control-Max-Age": "600", "Content-Length": "0"})
        self._end_headers()

    # -- runs: streamed and awaited ----------------------------------------------------------
    def serve_stream(self, response: StreamResponse) -> None:
        run, renderer = response.run, response.renderer
        self.state.run = run
        out = StreamOut(self, response)
        if self.command == "HEAD":
            return out.start(b"")                  # the headers a GET would get, no body
        driven = isinstance(run, Run) and run.drivable
        reader = run.follow(response.cursor, driven)   # before launch: nothing trimmed unseen
        pump = Pump(run, renderer, out, self.server.hub.config.server.ping_interval_seconds,
                    response.cursor, reader)
        with self.server.busy():
            try:
                if driven:
                    self._drive_stream(run, pump)
                else:
                    self.server.hub.engine.launch(run)   # a worker reads the upstream
                pump.pump()                    # this thread writes (the rest of) the stream
            except CLIENT_GONE:
                self.close_connection = True       # the run's own rule says what this ends
            except HubError as error:              # failed before a byte went out: it is
                run.cancel("stream_error")         # over already, and gets its real status
                error.headers.update({"X-Run-Id": run.id, **response.headers})
                raise
            except Exception as exc:
                # a renderer's bug: the run must still end, and this thread be freed
                log.exception("stream of run %s failed", run.id)
                self.close_connection = True
                failure = HubError("The hub failed while streaming this reply; see its log")
                run.finish("fail", error=failure)
                if self.server.raise_errors:
                    self.server.errors.append(exc)
                if not self.state.sent:
                    raise failure from None        # still time for a status
            finally:
                run.unfollow(reader)               # a run nothing can resume ends here

    def _drive_stream(self, run: Run, pump: Pump) -> None:
        """A stream that ends with its one client is driven in this thread, as an awaited
        reply is: each time the run is about to wait on the upstream, what the last read
        brought is written (Pump.flush), the pinger keeps pings going while the upstream is
        silent, and the hangup watch cancels the run if the client leaves meanwhile. One
        thread a stream, and no hand-off between two on the way to the first token."""
        pump.open()

        def on_hangup():
            run.cancel("client_gone")

        server = self.server
        server.pinger.add(pump)
        try:
            with server.hangups.watching(self.connection, on_hangup):
                server.hub.engine.drive(run, deliver=pump.flush)
        finally:
            server.pinger.discard(pump)

    def serve_awaited(self, response: RunResponse) -> None:
        """Drive the run in this thread (no hand-off to a worker), while the hangup watch
        cancels it if the client leaves; then send the reply in one piece."""
        run = response.run
        self.state.run = run
        hung_up = False     # a flag, not an Event (a Condition and a lock): read once, after

        def on_hangup():
            nonlocal hung_up
            hung_up = True
            run.cancel("client_gone")

        with self.server.busy(), self.server.hangups.watching(self.connection, on_hangup):
            self.server.hub.engine.drive(run)
            run.wait(None)          # at once, unless a worker is driving it
        if hung_up:
            self.close_connection = True
            return
        try:
            result = response.finish(run)
        except HubError as error:          # its record can be found by the run's id
            error.headers.setdefault("X-Run-Id", run.id)
            raise
        self.send_json(result.status, result.body,
                       {"X-Run-Id": run.id, **response.headers, **result.headers})

    def serve_relay(self, response: RelayResponse) -> None:
        """Drive a relayed call in this thread, its reply written as it comes; the hangup
        watch cancels it (and so stops the upstream) if the client leaves meanwhile, even
        while the upstream is silent. A failure before the reply began gets its status;
        after, the connection is closed, so the client sees the body cut short."""
        run = response.run
        self.state.run = run
        response.relay.sink = RelayOut(self, {"X-Run-Id": run.id})

        def on_hangup():
            run.cancel("client_gone")

        with self.server.busy(), self.server.hangups.watching(self.connection, on_hangup):
            self.server.hub.engine.drive(run)
            run.wait(None)
        if self.state.sent:
            if run.status != COMPLETED:
                self.close_connection = True
            return
        if run.cancel_reason == "client_gone":
            self.close_connection = True
            return
        error = run.failure() if run.error is not None else \
            HubError("Cancelled before the upstream answered", status=409, code="cancelled")
        error.headers.setdefault("X-Run-Id", run.id)
        raise error

    def serve_lines(self, response: LinesResponse) -> None:
        """Lines a view makes as it goes (a download's progress), each sent as it comes;
        a client that left ends it at the next line."""
        out = RelayOut(self, {})
        out.open(200, {"Content-Type": response.content_type}, None)
        for line in response.lines:
            out.send(line)
            self.wfile.flush()
        out.end()

    def serve_file(self, response: FileResponse) -> None:
        """A stored file, a piece at a time after its Content-Length: never whole in memory.
        Should the file come up short, the connection ends, as its length promised more."""
        sent = 0
        try:
            self._begin(200, response.headers)
            self._head.append(f"Content-Type: {response.content_type}\r\n"
                              f"Content-Length: {response.size}")
            self._end_headers()
            if self.command == "HEAD":
                return
            for piece in response.pieces:
                piece = piece[:response.size - sent]
                self.wfile.write(piece)
                sent += len(piece)
            if sent < response.size:
                self.close_connection = True
        finally:
            response.pieces.close()

    # -- logging -----------------------------------------------------------------------------
    def _keep_bodies(self) -> None:
        state, hub = self.state, self.server.hub
        if state.captured is not None and state.run is not None:
            hub.request_log.bodies(state.run.id, state.body, bytes(state.captured),
                                   hub.engine.secrets + state.run.secrets)

    def _capture(self, data: bytes) -> None:
        captured = self.state.captured
        if captured is not None and len(captured) <= self.server.hub.request_log.max_body_bytes:
            captured += data

    def _request_id(self) -> str:
        given = self.headers.fields.get("x-request-id")
        return given if given and SAFE_ID.match(given) else \
            f"{_request_ids.getrandbits(64):016x}"

    def _log_request(self, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        run = self.state.run
        fields = {"request_id": self.state.request_id, "method": self.command,
                  "path": self.path.partition("?")[0], "status": self.state.status,
                  "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                  "client": self.client_address[0]}
        record = run.info.get("record") if run is not None else None
        if run is not None and record is not None:   # the request log's record of the run
            fields.update(run_id=record["run_id"], key=record["key"], model=record["model"],
                          target=record["target"],
                          outcome=record["status"], reason=run.cancel_reason,
                          tokens_in=record["input_tokens"], tokens_out=record["output_tokens"],
                          ttft_ms=record["ttft_ms"])
        elif run is not None:
            fields.update(run_id=run.id, model=run.model, outcome=run.status)
        access_log.info("%s %s %s", self.command, fields["path"], self.state.status,
                        extra={"fields": fields})
