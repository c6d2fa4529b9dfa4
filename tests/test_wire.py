"""wire.py: framing is byte-exact; request bodies are read whole or refused."""

import io
from email.message import Message

import pytest

from llmhub.errors import BadRequest, LengthRequired, PayloadTooLarge
from llmhub.wire import chunk, decode_json, ndjson, read_body, sse, sse_comment


@pytest.mark.parametrize("args, expected", [
    (({"a": 1},), b'data: {"a":1}\n\n'),
    (("line1\nline2",), b"data: line1\ndata: line2\n\n"),
    (("x\r\ny\rz",), b"data: x\ndata: y\ndata: z\n\n"),
    (({"t": "Привет"}, "token"), 'event: token\ndata: {"t":"Привет"}\n\n'.encode()),
    (("d", "ev\nil", "7\r"), b"id: 7\nevent: evil\ndata: d\n\n"),
    (("[DONE]",), b"data: [DONE]\n\n"),
])
def test_sse_encoding_is_exact(args, expected):
    assert sse(*args) == expected


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


def headers(**values) -> Message:
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def test_read_body_by_length_and_chunked():
    assert read_body(io.BytesIO(b"abcdef"), headers(Content_Length="3"), 100) == b"abc"
    stream = io.BytesIO(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\nNEXT")
    assert read_body(stream, headers(Transfer_Encoding="chunked"), 100) == b"abcde"
    assert stream.read() == b"NEXT"   # the next request on the connection is untouched


def test_read_body_limits():
    with pytest.raises(PayloadTooLarge):
        read_body(io.BytesIO(b""), headers(Content_Length="101"), 100)
    with pytest.raises(PayloadTooLarge):
        read_body(io.BytesIO(b"80\r\n" + b"x" * 128 + b"\r\n0\r\n\r\n"),
                  headers(Transfer_Encoding="chunked"), 100)
    with pytest.raises(LengthRequired):
        read_body(io.BytesIO(b""), headers(Transfer_Encoding="gzip"), 100)
    with pytest.raises(BadRequest):
        read_body(io.BytesIO(b"zz\r\n"), headers(Transfer_Encoding="chunked"), 100)
