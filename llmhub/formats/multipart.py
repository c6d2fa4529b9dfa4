"""multipart/form-data request bodies (RFC 7578), read in place and never copied (sans-IO).

Audio and image uploads are relayed to the upstream as they came, so the hub only needs to
know where each part lies in the body: its name, its filename, and the offsets of its data.
`parse()` finds them with `bytes.find` over the one copy the server read; no part's data is
sliced out except the small text fields a caller asks for (`text()`). `replaced()` gives the
body with one part's data swapped (the `model` field, when an alias names another model) as
pieces that point into the original, which the upstream client sends one after the other:
a 25 MB recording is not copied to change a dozen bytes.

Rules kept here:
- the boundary comes from the Content-Type's `boundary` parameter (quoted or not); a body
  that is not multipart/form-data, or has no boundary, is a 415 / 400 that says so;
- a delimiter is CRLF "--" boundary (the first may start the body); the close delimiter
  adds "--"; a body without it is cut short, and refused;
- each part's headers are bounded (MAX_HEADER_BYTES) and so is the number of parts
  (MAX_PARTS): a form is a handful of fields, and a scan must not run away on junk.
"""

import re
from dataclasses import dataclass

from llmhub.errors import BadRequest, UnsupportedMediaType

__all__ = ["Part", "boundary_of", "parse", "text", "replaced", "find"]

MAX_HEADER_BYTES = 16384   # one part's header block: a name, a filename, a type
MAX_PARTS = 1000           # OpenAI's forms have under ten fields; `timestamp_granularities[]`
                           # repeats, but not a thousand times
_PARAM = re.compile(r';\s*([\w*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    start: int                 # the data's first byte in the body
    end: int                   # one past its last

    @property
    def size(self) -> int:
        return self.end - self.start


def boundary_of(content_type: str | None) -> bytes:
    """The boundary a multipart/form-data Content-Type names; 415 for another type."""
    kind, _, rest = (content_type or "").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data, not "
                                   f"{kind.strip() or 'none'!r}", param="Content-Type")
    boundary = _params(";" + rest).get("boundary", "")
    if not boundary or len(boundary) > 70:           # RFC 2046 §5.1.1: 1 to 70 characters
        raise BadRequest("The multipart Content-Type has no valid boundary parameter",
                         param="Content-Type", code="invalid_multipart")
    return boundary.encode("latin-1", "replace")


def parse(body: bytes, boundary: bytes) -> list[Part]:
    """Every part of a multipart/form-data body, in order; a 400 naming what is wrong."""
    delimiter = b"\r\n--" + boundary
    if body.startswith(delimiter[2:]):                     # no preamble: the usual case
        at = len(delimiter) - 2
    else:
        at = body.find(delimiter)
        if at < 0:
            raise _invalid("its boundary never occurs")
        at += len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", at):
            return parts                                   # the close delimiter
        line_end = body.find(b"\r\n", at)
        if line_end < 0 or body[at:line_end].strip(b" \t"):
            raise _invalid("a delimiter is not followed by a line break")
        part, at = _part(body, line_end + 2, delimiter)
        parts.append(part)
        if len(parts) > MAX_PARTS:
            raise _invalid(f"it has more than {MAX_PARTS} parts")


def _part(body: bytes, start: int, delimiter: bytes) -> tuple[Part, int]:
    """The part whose headers begin at `start`, and where the next delimiter ends."""
    head_end = body.find(b"\r\n\r\n", start, start + MAX_HEADER_BYTES + 4)
    if head_end < 0:
        raise _invalid(f"a part's headers do not end within {MAX_HEADER_BYTES} bytes")
    headers = _headers(body[start:head_end])
    data_end = body.find(delimiter, head_end + 4)
    if data_end < 0:
        raise _invalid("it ends before its closing boundary (cut short?)")
    disposition = headers.get("content-disposition", "")
    if disposition.partition(";")[0].strip().lower() != "form-data":
        raise _invalid("a part has no Content-Disposition: form-data header")
    params = _params(disposition[disposition.find(";"):] if ";" in disposition else "")
    if "name" not in params:
        raise _invalid("a part's Content-Disposition has no name")
    return Part(params["name"], params.get("filename"), headers.get("content-type"),
                head_end + 4, data_end), data_end + len(delimiter)


def _headers(block: bytes) -> dict:
    headers = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _params(text: str) -> dict:
    """`; name="x"; filename="a.wav"` as a dict; quoted values unescaped."""
    params = {}
    for name, value in _PARAM.findall(text):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.lower()] = value
    return params


def _invalid(why: str) -> BadRequest:
    return BadRequest(f"The multipart/form-data body cannot be read: {why}",
                      code="invalid_multipart")


def find(parts: list[Part], name: str) -> Part | None:
    """The first part with this name (a form field given twice: the first wins)."""
    return next((part for part in parts if part.name == name), None)


def text(body: bytes, part: Part, limit: int = 4096) -> str:
    """A small text field's value; a 400 naming it if it is longer than `limit` bytes or
    not UTF-8 (a model name is a few dozen bytes; anything larger is not one)."""
    if part.size > limit:
        raise BadRequest(f"The form field {part.name!r} is longer than {limit} bytes",
                         param=part.name, code="invalid_value")
    try:
        return body[part.start:part.end].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"The form field {part.name!r} is not UTF-8 text", param=part.name,
                         code="invalid_value") from None


def replaced(body: bytes, part: Part, value: bytes) -> list:
    """The body with `part`'s data replaced by `value`, as pieces pointing into `body`."""
    view = memoryview(body)
    return [view[:part.start], value, view[part.end:]]
