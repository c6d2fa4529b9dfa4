"""The hot path's shortcuts answer exactly what the code they replace answered."""

import dataclasses
import email.utils
import inspect
import io
import json
import logging
import random
import socket
import threading
import time
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from llmhub.events import ReasoningDelta, TextDelta
from llmhub.http.framing import RequestReader
from llmhub.http.protocol import END, NEED_DATA, Head, ProtocolError, Reader
from llmhub.http.server import Handler, Headers, Phase, RequestState
from llmhub.http.sockets import RecvSize
from llmhub.ids import utc_text
from llmhub.logs import JSONFormatter
from llmhub.upstream.connection import LIMITS as REPLY_LIMITS
from llmhub.upstream.connection import _status_line
from llmhub.upstream.sse import EventTooLarge, SSEParser
from llmhub.wire import json_bytes, sse

PAIRS = [("Host", "hub"), ("Content-Type", "application/json; charset=latin-1"),
         ("X-Twice", "1"), ("x-twice", "2")]


def message(pairs) -> HTTPMessage:
    found = HTTPMessage()
    for name, value in pairs:
        found[name] = value
    return found


def test_headers_look_up_as_an_http_message_does():
    ours, theirs = Headers(PAIRS), message(PAIRS)
    for name in ("host", "CONTENT-TYPE", "X-Twice", "missing"):
        assert ours.get(name) == theirs.get(name)
        assert ours[name] == theirs[name]
        assert (name in ours) == (name in theirs)
    assert ours.get("missing", "default") == "default"
    assert ours.get_all("x-twice") == theirs.get_all("x-twice") == ["1", "2"]
    assert ours.get_content_charset() == theirs.get_content_charset() == "latin-1"
    assert list(ours.items()) == list(theirs.items())


def test_headers_indexed_by_the_framing_check_look_up_as_an_http_message_does():
    raw = (b"POST /v1/x HTTP/1.1\r\nHost: hub\r\nX-Twice: 1\r\nx-TWICE: 2\r\n"
           b"Content-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
    head = RequestReader(io.BytesIO(raw).read).read_head()
    ours, theirs = Headers(head.headers, head.fields), message(head.headers)
    for name in ("HOST", "x-twice", "content-type", "Content-Length", "missing"):
        assert ours.get(name) == theirs.get(name) and ours[name] == theirs[name]
        assert ours.fields.get(name.lower()) == theirs.get(name)
    assert ours.get_all("X-Twice") == theirs.get_all("X-Twice") == ["1", "2"]
    assert list(ours.items()) == list(theirs.items())


def test_a_reply_head_is_what_send_response_and_send_header_would_write():
    metrics = SimpleNamespace(request=lambda *args: None)
    handler = Handler.__new__(Handler)
    handler.server = SimpleNamespace(hub=SimpleNamespace(metrics=metrics), origins=None)
    handler.command, handler.request_version = "POST", "HTTP/1.0"
    for status, close in ((200, False), (404, True), (599, False)):
        handler.state, handler.close_connection = RequestState(None), close
        handler.state.request_id = "abc"
        handler._begin(status, {"X-Run-Id": "run-1", "Retry-After": 3})
        ours = ("\r\n".join(handler._head) + "\r\n\r\n").encode("latin-1")
        handler._headers_buffer = []
        BaseHTTPRequestHandler.send_response_only(handler, status)
        for name, value in (("Server", handler.version_string()),
                            ("Date", handler.date_time_string()), ("X-Request-Id", "abc"),
                            ("X-Run-Id", "run-1"), ("Retry-After", 3)):
            BaseHTTPRequestHandler.send_header(handler, name, value)
        if close:
            BaseHTTPRequestHandler.send_header(handler, "Connection", "close")
        assert ours == b"".join(handler._headers_buffer) + b"\r\n"


def test_another_thread_reads_the_phase_as_one_clock():
    handler = Handler.__new__(Handler)
    handler.read_timeout, handler.state = 60.0, RequestState(None)
    handler.phases = {Phase.HEAD: (10.0, "starts"), Phase.BODY: (90.0, "keeps"),
                      Phase.WRITING: (60.0, None)}
    handler.enter(Phase.HEAD)
    head = handler.clock
    assert head.phase is Phase.HEAD and head.expires == head.since + 10.0
    handler.enter(Phase.BODY)        # silence 90 s, but the request's own 60 s end first
    body = handler.clock
    assert body.phase is Phase.BODY and body.expires == body.request_ends == head.request_ends
    before = handler.enter(Phase.WRITING)
    assert handler.clock.phase is Phase.WRITING and handler.clock.request_ends is None
    handler.resume(before)
    assert handler.clock == body and handler.expires_at == body.expires


def test_headers_changed_after_are_seen():
    ours = Headers(PAIRS)
    ours["X-Added"] = "yes"
    del ours["Host"]
    assert ours.get("x-added") == "yes" and ours.get("host") is None


def test_the_date_header_is_the_stdlib_one():
    handler = Handler.__new__(Handler)
    date = handler.date_time_string()
    assert email.utils.parsedate_to_datetime(date).tzname() == "UTC"
    assert handler.date_time_string(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert handler.date_time_string() in (date, email.utils.formatdate(usegmt=True))


def test_a_chunk_is_one_data_line_encoded_as_json_dumps_would():
    chunk = {"choices": [{"delta": {"content": "two\nlines \u2028 é \"q\""}}], "n": None}
    text = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
    assert sse(chunk) == b"data: " + text.encode("utf-8") + b"\n\n"
    assert sse(chunk, event="delta") == b"event: delta\ndata: " + text.encode("utf-8") + b"\n\n"
    assert json_bytes(chunk) == text.encode("utf-8")
    assert sse("a\nb") == b"data: a\ndata: b\n\n"


def test_recv_asks_for_little_until_reads_fill_it_and_gets_every_byte():
    left, right = socket.socketpair()
    with left, right:
        size = RecvSize()
        left.sendall(b"x" * 100)
        assert size.recv(right) == b"x" * 100 and size.size == RecvSize.least   # short: small
        payload = bytes(range(256)) * 1024          # 256 KiB, more than one read's worth
        sender = threading.Thread(target=left.sendall, args=(payload,))
        sender.start()
        got, reads = b"", []
        while len(got) < len(payload):
            asked = size.size
            data = size.recv(right)
            reads.append((asked, len(data), size.size))
            got += data
        sender.join()
        assert got == payload                       # nothing lost or reordered
        for asked, read, then in reads:             # a full read asks four times more next
            assert then == (min(4 * asked, RecvSize.most) if read == asked else RecvSize.least)
        assert max(asked for asked, _, _ in reads) == RecvSize.most
        left.sendall(b"y")
        size.recv(right)
        assert size.size == RecvSize.least          # quiet again: a small buffer while it waits


def test_over_tls_a_read_of_a_whole_record_counts_as_full():
    # An SSL socket's recv returns one record at most: 16 KiB asked 64 is no short read.
    class Records:
        def __init__(self, sizes):
            self.sizes = iter(sizes)

        def recv(self, asked):
            return b"x" * min(asked, next(self.sizes))
    size = RecvSize(tls=True)
    records = Records([16384] * 4 + [300])
    asked = []
    for _ in range(5):
        asked.append(size.size)
        size.recv(records)
    assert asked == [2048, 8192, 32768, 65536, 65536]   # grows, then stays at the most …
    assert size.size == RecvSize.least                   # … until a record comes short
    plain = RecvSize()
    plain.size = RecvSize.most
    plain.recv(Records([16384]))
    assert plain.size == RecvSize.least                  # plain TCP: 16 KiB of 64 is short


def _dechunked(pieces, size=None, limit=None):
    """The body a reader de-chunks from `pieces` (a reply, or with `limit` a request), read
    `size` bytes at most a time; the error's message if it refuses it."""
    reader = Reader(_status_line, REPLY_LIMITS, noun="reply")
    pieces, body = list(pieces), b""
    try:
        while (event := reader.next_event(size)) is not END:
            if event is NEED_DATA:
                reader.feed(pieces.pop(0) if pieces else b"")
            elif isinstance(event, Head):
                reader.start_body("chunked", 0, limit, "max_body_bytes")
            else:
                body += event.data
    except ProtocolError as exc:
        return exc.status, exc.message
    return body


SIZE_LINE_ENDS = [b"\r\n", b"\r\n", b"\r\n", b";x=1\r\n", b" \r\n", b"\n", b"\r\r\n"]


def test_whole_chunks_taken_at_once_read_as_byte_by_byte():
    """Whole chunks (a bare size line, the data and its CRLF all in the buffer) are taken
    in one step each; a body cut anywhere, read in any size, with or without a limit on
    its size, gives what it gives fed a byte at a time: the same bytes or the same error."""
    rng = random.Random(31)
    for _ in range(60):
        datas = [bytes(rng.randrange(256) for _ in range(rng.choice([1, 2, 15, 16, 300])))
                 for _ in range(rng.randrange(1, 30))]
        body = b"".join(rng.choice([b"%x", b"%X", b"%03x"]) % len(d) + rng.choice(SIZE_LINE_ENDS)
                        + d + rng.choice([b"\r\n"] * 20 + [b"\rX"]) for d in datas)
        reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
        limit = rng.choice([None, None, sum(map(len, datas)), sum(map(len, datas)) - 1])
        slow = _dechunked([reply[i:i + 1] for i in range(len(reply))], limit=limit)
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, len(reply)), rng.randrange(0, 8)))
            pieces = [reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)])]
            size = rng.choice([None, 1, 7, 300, 301, 65536])
            assert _dechunked(pieces, size, limit) == slow


def _sse_events(pieces, max_bytes=8 << 20):
    parser, events = SSEParser(max_bytes), []
    try:
        for piece in pieces:
            events += parser.feed(piece)
        return events + parser.close()
    except EventTooLarge:
        return events + ["too large"]


SSE_BLOCKS = [b'data: {"a":1}', b'data: {"t":"\xd0\x9f\xd1\x80\xd0\xb8 \xe2\x80\xa8"}',
              b"data: bad \xff\xfe utf-8 \xe2\x82", b"data:no space", b": ping",
              b"event: error\ndata: {}", b"data: one\ndata: two", b"data: crlf\r\n\r",
              b"data: lone\rcr", b"data: cr at the end\r", b"", b"\ndata: after a blank",
              b"id: 7\ndata: x", b"data: " + b"x" * 40, b"data: \xef\xbb\xbfbom",
              b"data: \xed\xa0\x80 surrogate"]


def test_sse_reads_decoded_whole_give_what_line_by_line_gives():
    """A read's one-line `data:` events taken from its decoded text are the events the
    line machinery makes of it fed a byte at a time: non-ASCII, bytes that are not UTF-8,
    CR, comments, named and multi-line events, and the max_bytes bound alike."""
    rng = random.Random(31)
    for _ in range(300):
        stream = b"\n\n".join(rng.choice(SSE_BLOCKS) for _ in range(rng.randrange(1, 12)))
        stream += b"\n\n"
        bound = rng.choice([8 << 20, 30, 60])
        slow = _sse_events([stream[i:i + 1] for i in range(len(stream))], bound)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(4))))
        for pieces in ([stream], [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]):
            fast = _sse_events(pieces, bound)
            if slow[-1:] == ["too large"]:   # a feed that raises returns none of its events
                assert fast[-1] == "too large" and slow[:len(fast) - 1] == fast[:-1]
            else:
                assert fast == slow


def test_events_with_their_own_init_are_what_dataclass_would_make():
    """TextDelta and ReasoningDelta set their slots through the slots' setters: the same
    parameters, in the same order with the same defaults, as dataclass would write from
    their fields; every field set; still frozen, equal and hashable as before."""
    for cls in (TextDelta, ReasoningDelta):
        params = list(inspect.signature(cls).parameters.values())
        assert [(p.name, p.default) for p in params] == \
            [(f.name, inspect.Parameter.empty if f.default is dataclasses.MISSING
              else f.default) for f in dataclasses.fields(cls)]
        values = [f"{f.name}-value" for f in dataclasses.fields(cls)]
        for event in (cls(*values), cls(**dict(zip([p.name for p in params], values)))):
            assert [getattr(event, f.name) for f in dataclasses.fields(cls)] == values
            with pytest.raises(dataclasses.FrozenInstanceError):
                event.text = "changed"
        assert cls("x") == cls("x", raw={"other": 1}) and hash(cls("x")) == hash(cls("x"))
        assert [getattr(cls("x"), f.name) for f in dataclasses.fields(cls)][1:] == \
            [f.default for f in dataclasses.fields(cls)][1:]


def test_utc_text_keeping_the_last_second_writes_what_strftime_writes():
    moments = [1765000000.0, 1765000000.4567, 1765000000.9999, 1765000001.0,
               1764999999.5, 1765000000.25, 0.5, 86399.999, 1765000001.0]   # back and forth
    for moment in moments:
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        assert utc_text(moment) == f"{whole}.{int(moment % 1 * 1000):03d}Z"
        assert utc_text(moment, 0) == f"{whole}Z"


def test_a_json_log_line_is_what_json_dumps_wrote():
    fields = {"path": "/v1/chat/completions", "model": "модель", "ttft_ms": 6.62,
              "reason": None, "error": ValueError("not JSON: written as str()")}
    record = logging.LogRecord("llmhub.access", logging.INFO, __file__, 1, "%s %s",
                               ("POST", 200), None)
    record.fields = fields
    expected = {"time": utc_text(record.created), "level": "info", "logger": "llmhub.access",
                "message": "POST 200", **fields}
    assert JSONFormatter().format(record) == json.dumps(expected, ensure_ascii=False,
                                                        default=str)
