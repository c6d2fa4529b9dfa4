"""protocol.Reader, the one sans-IO HTTP/1.1 reader, on bytes alone: every message split at
every byte boundary reads the same, each limit gives its status, and a message's end leaves
the next one untouched. Both directions: requests as the server reads them (framing), replies
as the upstream client does (connection)."""

import pytest

from llmhub.http.framing import LIMITS, _request_line
from llmhub.http.protocol import (CLOSED, END, NEED_DATA, Data, Head, Limits, ProtocolError,
                                  Reader, Truncated)
from llmhub.upstream.connection import LIMITS as REPLY_LIMITS
from llmhub.upstream.connection import _status_line


def server(limits: Limits = LIMITS) -> Reader:
    return Reader(_request_line, limits, noun="request")


def client() -> Reader:
    return Reader(_status_line, REPLY_LIMITS, noun="reply")


def events(reader: Reader, pieces, framing=("none",), size=None) -> list:
    """Feed `pieces` one by one; every event until the message's END (or CLOSED), the
    body's Data joined into one, and the head's body framed as `framing` says."""
    pieces, found, data = list(pieces), [], b""
    while True:
        event = reader.next_event(size)
        if event is NEED_DATA:
            reader.feed(pieces.pop(0) if pieces else b"")
        elif isinstance(event, Head):
            found.append(event)
            reader.start_body(*framing)
            if framing[0] == "none":
                return found + [END]
        elif isinstance(event, Data):
            assert size is None or len(event.data) <= size
            data += event.data
        else:
            return found + ([data] if data else []) + [event]


def every_split(message: bytes):
    """The message in one piece, a byte at a time, and cut in two at every position."""
    yield [message]
    yield [message[i:i + 1] for i in range(len(message))]
    for cut in range(1, len(message)):
        yield [message[:cut], message[cut:]]


REQUEST = (b"POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
REPLY = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"b\r\ndata: one\n\n\r\n4\r\nabcd\r\n0\r\n\r\n")


@pytest.mark.parametrize("pieces", list(every_split(REQUEST)), ids=lambda p: str(len(p)))
def test_a_chunked_request_split_anywhere_reads_the_same(pieces):
    head, body, end = events(server(), pieces, ("chunked", 0, 1000, "max_body_bytes"))
    assert head.start == ("POST", "/v1/x", "HTTP/1.1")
    assert head.headers == [("Host", "h"), ("Transfer-Encoding", "chunked")]
    assert body == b"hello" + b"z" * 26 and end is END


@pytest.mark.parametrize("pieces", list(every_split(REPLY)), ids=lambda p: str(len(p)))
def test_a_chunked_reply_split_anywhere_reads_the_same(pieces):
    head, body, end = events(client(), pieces, ("chunked",))
    assert head.start == (200, "OK", "HTTP/1.1") and body == b"data: one\n\nabcd"


@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_data_comes_in_pieces_of_at_most_the_size_asked(size):
    _, body, _ = events(client(), [REPLY], ("chunked",), size=size)
    assert body == b"data: one\n\nabcd"


def test_a_whole_buffer_of_body_is_handed_on_without_a_copy():
    """The relay's hot path: a recv that holds just body is passed on as the same object."""
    reader = client()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    assert isinstance(reader.next_event(), Head)
    reader.start_body("length", 10)
    assert reader.next_event() is NEED_DATA
    payload = b"0123456789"
    reader.feed(payload)
    assert reader.next_event().data is payload and reader.next_event() is END


def test_a_message_end_leaves_the_next_message_untouched():
    reader = server()
    reader.feed(REQUEST + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert events(reader, [], ("chunked", 0, 1000))[-1] is END
    assert events(reader, [])[0].start == ("GET", "/next", "HTTP/1.1")
    assert events(reader, []) == [CLOSED]


def test_content_length_and_close_delimited_bodies():
    head, body, end = events(client(), [b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT"],
                             ("length", 3))
    assert body == b"abc" and end is END
    _, body, end = events(client(), [b"HTTP/1.0 200 OK\r\n\r\nall", b" of it"], ("close",))
    assert body == b"all of it" and end is END


def test_lf_line_ends_and_blank_lines_before_the_start_line_are_read():
    """RFC 9112 §2.2: a recipient may take LF as a line end and skips empty lines first."""
    head, _ = events(server(), [b"\r\n\n\r\nGET / HTTP/1.1\nHost: h\n\n"])
    assert head.start == ("GET", "/", "HTTP/1.1") and head.size == 29
    with pytest.raises(ProtocolError, match="Expected a request line"):
        events(server(), [b"\r\n" * 4 + b"GET / HTTP/1.1\r\n"])


@pytest.mark.parametrize("message, status, says", [
    (b"GET /" + b"a" * 70_000, 414, "request line is too long"),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 70_000, 431, "head is over 65536 bytes"),
    (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101, 431, "More than 100 headers"),
    (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n", 400, "Folded"),
    (b"GET / HTTP/1.1\r\nBad Name: a\r\n", 400, "Bad request header line"),
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n", 400, "CR, LF or NUL"),
    (b"GET / HTTP/1.1\r\nX: a\rb\r\n", 400, "CR, LF or NUL"),
])
def test_head_limits_and_bad_lines_carry_their_status(message, status, says):
    with pytest.raises(ProtocolError, match=says) as refused:
        events(server(), [message])             # at once: no need to wait for the rest
    assert refused.value.status == status


def test_a_bad_line_is_found_before_a_later_overflow():
    """Lines are read as they come, so the first fault in the head is the one reported."""
    with pytest.raises(ProtocolError, match="Bad request header") as refused:
        events(server(), [b"GET / HTTP/1.1\r\nBad Name: a\r\nX: " + b"a" * 70_000])
    assert refused.value.status == 400


@pytest.mark.parametrize("body, status, says", [
    (b"-3\r\n", 400, "Bad chunk size"),
    (b"0x16\r\n", 400, "Bad chunk size"),
    (b" 16\r\n", 400, "Bad chunk size"),
    (b"1" * 17 + b"\r\n", 400, "Bad chunk size"),
    (b"0" * 1025, 400, "chunk size line is too long"),
    (b"3\r\nabcX\r\n", 400, "not followed by CRLF"),
    (b"400\r\n", 413, r"Request body exceeds the limit of 1000 bytes \(max_body_bytes\)"),
    (b"0\r\n" + b"X-T: a\r\n" * 2000, 431, "trailers are too long"),
])
def test_chunk_faults_carry_their_status(body, status, says):
    with pytest.raises(ProtocolError, match=says) as refused:
        events(server(), [b"POST / HTTP/1.1\r\nHost: h\r\n\r\n" + body],
               ("chunked", 0, 1000, "max_body_bytes"))
    assert refused.value.status == status


def test_a_chunk_size_line_of_the_limit_is_read():
    line = b"5;" + b"e" * (LIMITS.chunk_line - 3) + b"\r"     # the limit, without its LF
    _, body, _ = events(server(), [b"POST / HTTP/1.1\r\n\r\n" + line + b"\nhello\r\n0\r\n\r\n"],
                        ("chunked",))
    assert body == b"hello"


def test_limits_are_parameters():
    small = Limits(head=64, headers=2, chunk_line=8, trailers=16)
    with pytest.raises(ProtocolError, match="More than 2 headers"):
        events(server(small), [b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"])
    with pytest.raises(ProtocolError, match="head is over 64 bytes"):
        events(server(small), [b"GET / HTTP/1.1\r\nA: " + b"1" * 60 + b"\r\n\r\n"])
    with pytest.raises(ProtocolError, match="too long"):
        events(server(small), [b"GET / HTTP/1.1\r\n\r\n5;abcdefgh\r\n"], ("chunked",))


def test_a_close_between_messages_is_closed_and_inside_one_is_truncated():
    assert events(server(), [b""]) == [CLOSED]
    assert events(server(), [b"\r\n"]) == [CLOSED]              # blank lines are no request
    for cut in (b"GET / HT", b"GET / HTTP/1.1\r\nHost: h\r\n"):
        with pytest.raises(Truncated):
            events(server(), [cut])
    with pytest.raises(Truncated):
        events(client(), [b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"], ("length", 9))
    with pytest.raises(Truncated):
        events(client(), [REPLY[:-7]], ("chunked",))


def test_data_before_a_close_is_handed_on_before_the_truncation():
    reader = client()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\n4\r\nabcd\r\n")
    reader.next_event()
    reader.start_body("chunked")
    reader.feed(b"")
    assert reader.next_event().data == b"abcd"
    with pytest.raises(Truncated):
        reader.next_event()


def test_the_body_must_be_framed_before_it_is_read():
    reader = server()
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(reader.next_event(), Head)
    with pytest.raises(RuntimeError):
        reader.next_event()


@pytest.mark.parametrize("headers", [
    b"A: 1\r\nB:2\r\nC: \t spaced out \t\r\nEmpty:\r\nE: \r\n",
    b"A: 1\nB: 2\r\nColon: a:b: c\n",
    b"",
])
def test_a_whole_head_and_a_trickled_one_read_the_same(headers):
    """A head all here is read in one go, one that trickles in line by line: same result."""
    message = b"GET / HTTP/1.1\r\n" + headers + b"\r\n"
    whole, _ = events(server(), [message])
    trickled, _ = events(server(), [message[i:i + 1] for i in range(len(message))])
    assert (whole.headers, whole.size) == (trickled.headers, trickled.size)
    assert all(value == value.strip(" \t") for _, value in whole.headers)
