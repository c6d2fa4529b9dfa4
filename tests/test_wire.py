"""wire.py: framing is byte-exact; request bodies are read whole or refused."""

import io
import json
import tracemalloc

import pytest

from llmhub.errors import BadRequest
from llmhub.http.framing import FramingError, RequestReader
from llmhub.wire import (PIECE, JSONTemplate, SSETemplate, chunk, decode_json, json_bytes,
                         json_pieces, json_str, ndjson, sse, sse_comment)


@pytest.mark.parametrize("args, expected", [
    (({"a": 1},), b'data: {"a":1}\n\n'),
    (("line1\nline2",), b"data: line1\ndata: line2\n\n"),
    (("x\r\ny\rz",), b"data: x\ndata: y\ndata: z\n\n"),
    (({"t": "Привет"}, "token"), 'event: token\ndata: {"t":"Привет"}\n\n'.encode()),
    (("d", "ev\nil", "7\r"), b"id: 7\nevent: evil\ndata: d\n\n"),
    (("[DONE]",), b"data: [DONE]\n\n"),
    # encoded JSON escapes its line breaks: one data line, whatever its strings hold
    (({"t": "a\nb\r\nc\u2028"}, "e", 3),
     'id: 3\nevent: e\ndata: {"t":"a\\nb\\r\\nc\u2028"}\n\n'.encode()),
])
def test_sse_encoding_is_exact(args, expected):
    assert sse(*args) == expected


@pytest.mark.parametrize("text", ["", "plain", "Привет 🙂", '"q" \\ \n\r\t\x00\x1f',
                                  "\u2028"])
def test_an_sse_template_filled_is_the_event_encoded(text):
    numbered = SSETemplate({"type": "d", "n": SSETemplate.NUMBER, "at": 0,
                            "delta": SSETemplate.TEXT, "after": []}, "d")
    assert numbered.fill(text, 41) == sse({"type": "d", "n": 41, "at": 0, "delta": text,
                                          "after": []}, "d")
    plain = SSETemplate({"delta": {"text": SSETemplate.TEXT}})
    assert plain.fill(text) == sse({"delta": {"text": text}})


def test_a_json_template_filled_is_the_dict_encoded():
    first = {"id": "r", "status": "in_progress", "tools": [{"name": "Привет", "x": [1.5]}],
             "output": [], "usage": None, "note": "\x00"}
    template = JSONTemplate(first, ("status", "output", "usage"))
    later = dict(first, status="completed", output=[{"text": "a\"b\n🙂"}],
                 usage={"input_tokens": 3})
    assert template.fill(first) == json_bytes(first)
    assert template.fill(later) == json_bytes(later)
    # a client's string that spells a hole's marker: the template stands aside
    spelled = dict(first, note="\x00hole 0\x00")
    assert JSONTemplate(spelled, ("status",)).parts is None
    assert JSONTemplate(spelled, ("status",)).fill(dict(spelled, status="x")) == \
        json_bytes(dict(spelled, status="x"))


def test_comment_and_ndjson():
    assert sse_comment("ping") == b": ping\n\n"
    assert sse_comment("a\nb") == b": a b\n\n"
    assert ndjson({"type": "fragment", "content": "é"}) == \
        '{"type":"fragment","content":"é"}\n'.encode()


def test_chunk_framing_and_empty_chunk_refused():
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    with pytest.raises(ValueError):
        chunk(b"")   # a zero-length chunk would end the stream (RFC 9112 §7.1)


def test_decode_json_accepts_bom_and_reports_position():
    assert decode_json(b"\xef\xbb\xbf{\"a\": 1}") == {"a": 1}
    with pytest.raises(BadRequest) as info:
        decode_json(b'{"a": 1,\n "b": }')
    assert "line 2 column 7" in info.value.message
    with pytest.raises(BadRequest, match="empty"):
        decode_json(b"  ")
    with pytest.raises(BadRequest, match="UTF-8"):
        decode_json(b'{"a": "\xff"}')
    with pytest.raises(BadRequest, match="nested too deeply"):
        decode_json(b"[" * 100_000 + b"]" * 100_000)


def request(*lines: bytes, body: bytes = b""):
    """A connection's RequestReader over one POST (its header `lines`, then `body`), and
    the head it read."""
    requests = RequestReader(io.BytesIO(b"POST / HTTP/1.1\r\nHost: h\r\n" + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n" + body).read1)
    return requests, requests.read_head()


def read_body(lines: list[bytes], body: bytes, limit: int = 100) -> bytes:
    requests, head = request(*lines, body=body)
    return requests.read_body(head, limit)


NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def test_read_body_by_length_and_chunked():
    assert read_body([b"Content-Length: 3"], b"abcdef") == b"abc"
    requests, head = request(b"Transfer-Encoding: chunked",
                             body=b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n" + NEXT)
    assert requests.read_body(head, 100) == b"abcde"
    assert requests.read_head().path == "/next"   # the next request is untouched


def test_a_large_body_is_held_once_while_it_is_read():
    """A 8 MiB Content-Length body arriving in 64 KiB pieces is gathered into the bytes
    that hold it, not kept as pieces and then joined (twice its size at the peak)."""
    size = 8 << 20
    stream = io.BytesIO(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
                        + b"x" * size + NEXT)
    requests = RequestReader(lambda: stream.read(65536))
    head = requests.read_head()
    tracemalloc.start()
    try:
        body = requests.read_body(head, size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(body) == size and peak < size * 1.25, peak
    assert requests.read_head().path == "/next"   # the next request is untouched
    truncated = RequestReader(io.BytesIO(b"POST / HTTP/1.1\r\nHost: h\r\n"
                                         b"Content-Length: 9\r\n\r\nabc").read1)
    with pytest.raises(ConnectionResetError):
        truncated.read_body(truncated.read_head(), 100)


def test_read_body_limits():
    with pytest.raises(FramingError) as refused:
        read_body([b"Content-Length: 101"], b"")
    assert refused.value.status == 413
    with pytest.raises(FramingError) as refused:
        read_body([b"Transfer-Encoding: chunked"], b"80\r\n" + b"x" * 128 + b"\r\n0\r\n\r\n")
    assert refused.value.status == 413 and "max_body_bytes" in refused.value.message
    with pytest.raises(FramingError):
        request(b"Transfer-Encoding: gzip")
    with pytest.raises(FramingError):
        read_body([b"Transfer-Encoding: chunked"], b"zz\r\n")


def test_a_head_reduces_absolute_form_and_keeps_its_authority():
    parsed = RequestReader(io.BytesIO(b"GET http://127.0.0.1:8000/v1/models?x=1 HTTP/1.1\r\n"
                                      b"Host: other\r\n\r\n").read1).read_head()
    assert (parsed.path, parsed.authority, parsed.body) == ("/v1/models?x=1", "127.0.0.1:8000",
                                                           "none")
    assert RequestReader(io.BytesIO(b"").read1).read_head() is None   # closed before a request


LONG = "x" * 70_000


@pytest.mark.parametrize("value", [
    {"model": "m", "messages": [{"role": "user", "content": "hi é 😀 \"q\" \n"}], "n": 1,
     "f": 0.5, "x": None, "t": [1, 2.5, False], "u": ("a",)},
    {"image": "A" * 3_000_000, "text": LONG + 'é"\\😀\n' * 100, 1: [{"d": "y" * 2_500_000}]},
    [], {}, "plain", 5, LONG, "x\n" * 100_000,
], ids=["small", "large", "list", "dict", "str", "int", "long", "long-escaped"])
def test_json_pieces_and_json_str_are_json_dumps(value):
    """The lean encoders (issue 26) write exactly what json.dumps writes, compact and UTF-8."""
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    pieces = json_pieces(value)
    assert b"".join(pieces) == expected.encode("utf-8")
    assert max(map(len, pieces)) <= 2 * PIECE + 16
    assert json_str(value) == expected


def test_decode_json_reads_a_lone_surrogate_as_the_replacement_character():
    assert decode_json(b'{"a\\ud83d": ["x\\uDE00", "\\ud83d\\ude00", "\\\\ud83d"]}') == \
        {"a\ufffd": ["x\ufffd", "\U0001F600", "\\ud83d"]}
