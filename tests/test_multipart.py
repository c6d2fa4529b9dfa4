"""multipart/form-data read in place (llmhub/multipart.py): offsets, not copies; every
malformed form a 400 that says what is wrong."""

import pytest

from llmhub.errors import BadRequest, UnsupportedMediaType
from llmhub.formats import multipart

B = b"xYz"
GOOD = (b"--xYz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        b"--xYz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a \\\"b\\\".wav\""
        b"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--xY\r\n\r\n--xYz--\r\n")


@pytest.mark.parametrize("content_type, boundary", [
    ("multipart/form-data; boundary=xYz", b"xYz"),
    ('multipart/form-data; boundary="a b:c"', b"a b:c"),
    ("Multipart/Form-Data;charset=utf-8;boundary=----x", b"----x"),
])
def test_the_boundary_comes_from_the_content_type(content_type, boundary):
    assert multipart.boundary_of(content_type) == boundary


@pytest.mark.parametrize("content_type, error", [
    ("application/json", UnsupportedMediaType), (None, UnsupportedMediaType),
    ("multipart/form-data", BadRequest), ("multipart/form-data; boundary=" + "x" * 71,
                                          BadRequest),
])
def test_a_content_type_without_a_boundary_is_refused(content_type, error):
    with pytest.raises(error):
        multipart.boundary_of(content_type)


def test_parts_are_offsets_into_the_body():
    parts = multipart.parse(GOOD, B)
    assert [(p.name, p.filename, p.content_type) for p in parts] == \
        [("model", None, None), ("file", 'a "b".wav', "audio/wav")]
    assert GOOD[parts[1].start:parts[1].end] == b"RIFF\r\n--xY\r\n"   # a near-delimiter is data
    assert multipart.text(GOOD, multipart.find(parts, "model")) == "whisper-1"


def test_a_preamble_is_skipped():
    parts = multipart.parse(b"ignored preamble\r\n" + GOOD, B)
    assert [p.name for p in parts] == ["model", "file"]


def test_replacing_a_part_keeps_every_other_byte():
    part = multipart.find(multipart.parse(GOOD, B), "model")
    pieces = multipart.replaced(GOOD, part, b"whisper-large-v3")
    assert b"".join(pieces) == GOOD.replace(b"whisper-1", b"whisper-large-v3")
    assert isinstance(pieces[2], memoryview)           # the file is not copied


@pytest.mark.parametrize("body, why", [
    (b"no boundary here", "never occurs"),
    (GOOD[:-9], "closing boundary"),
    (b"--xYz\r\nContent-Type: text/plain\r\n\r\nx\r\n--xYz--", "Content-Disposition"),
    (b"--xYz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xYz--", "no name"),
    (b"--xYz junk\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--xYz--",
     "line break"),
    (b"--xYz\r\n" + b"X: " + b"y" * 20000, "headers do not end"),
])
def test_a_malformed_form_is_a_400_saying_why(body, why):
    with pytest.raises(BadRequest, match=why):
        multipart.parse(body, B)
