"""The hot path's shortcuts answer exactly what the code they replace answered."""

import email.utils
import json
import socket
import threading
from http.client import HTTPMessage

from llmhub.http.server import Handler, Headers
from llmhub.http.sockets import RecvSize
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
