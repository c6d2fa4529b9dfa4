"""upstream/sse.py: the parser survives any split of the bytes (h11's one-byte trick)."""

import pytest

from llmhub.upstream.sse import SSEParser

STREAM = ('data: {"a":1}\n\n'
          ': keep-alive comment\n\n'
          'event: error\r\ndata: {"error":{"message":"Привет"}}\r\n\r\n'
          'data: line1\ndata: line2\n\n'
          'data: [DONE]\n\n').encode("utf-8")
EXPECTED = [("message", '{"a":1}'), ("error", '{"error":{"message":"Привет"}}'),
            ("message", "line1\nline2"), ("message", "[DONE]")]


def feed_in_pieces(data: bytes, size: int):
    parser, events = SSEParser(), []
    for i in range(0, len(data), size):
        events += parser.feed(data[i:i + size])
    return events + parser.close()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_any_split_gives_the_same_events(size):
    assert feed_in_pieces(STREAM, size) == EXPECTED


def test_event_without_trailing_blank_line_is_flushed_on_close():
    parser = SSEParser()
    assert parser.feed(b"data: tail") == []
    assert parser.close() == [("message", "tail")]


def test_field_without_space_and_unknown_fields():
    parser = SSEParser()
    assert parser.feed(b"data:x\nid: 4\nretry: 10\n\n") == [("message", "x")]
