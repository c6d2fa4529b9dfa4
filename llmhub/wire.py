"""Bytes on the wire: JSON bodies in, JSON / SSE / NDJSON / chunked framing out (sans-IO;
request heads and bodies are framing.py's). Rules kept here so that no view has to
remember them:

- a UTF-8 BOM (PowerShell's `Out-File`, Notepad) is accepted in front of JSON;
- a lone surrogate escape (`"\\ud83d"`, which JavaScript makes when it cuts a string inside
  an emoji) is read as U+FFFD, as browsers' TextEncoder and most servers do: Python's json
  keeps it as a lone surrogate, which no UTF-8 encoder or SQLite accepts later (a 500);
- a chunked frame is never empty: the zero-length chunk is the terminator (RFC 9112 §7.1);
- a large body is held about twice, not four or five times: the server lets go
  of a body's bytes once they are text (json_text, then parse_json), and a value holding a
  long string is written out by json_pieces (upstream requests, sent piece by piece) or
  json_str (stored JSON) without the escaped copy json.dumps makes before its join.
"""

import json
import re
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Callable, Generator, Iterable

from llmhub.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "JSONResponse", "BytesResponse", "StreamRenderer", "StreamResponse", "RunResponse",
    "RelayResponse", "LinesResponse", "FileResponse",
    "decode_json", "json_value", "json_text", "parse_json", "json_bytes", "json_pieces",
    "json_stream", "json_str", "is_large", "sse", "SSETemplate", "JSONTemplate", "sse_comment",
    "ndjson", "chunk", "LAST_CHUNK", "token_count_header", "cursor_page", "surrogate_escaped",
    "json_encoder",
]

BOM = b"\xef\xbb\xbf"
LAST_CHUNK = b"0\r\n\r\n"
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def json_encoder(separators: tuple[str, str] = (",", ":"),
                 default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """json.dumps(obj, ensure_ascii=False, separators=…, default=…), built once.

    JSONEncoder.encode builds a new C encoder (c_make_encoder) on every call; every reply,
    every streamed chunk and every log line is encoded, so the C encoder is built once here
    and called directly (~2 µs a call sooner). It is built without circular-reference
    markers: one shared markers dict would be shared by all threads (two encoding the same
    object at once would see a false cycle) and is left dirty by a failed encode. A cycle,
    which the hub never builds, is then a RecursionError instead of a ValueError; the text
    is the same."""
    encoder = json.JSONEncoder(ensure_ascii=False, separators=separators, default=default,
                               check_circular=False)
    if c_make_encoder is None:                 # a Python without the _json accelerator
        return encoder.encode
    scan = c_make_encoder(None, encoder.default, encode_basestring, None,
                          encoder.key_separator, encoder.item_separator,
                          encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda obj: "".join(scan(obj, 0))


_compact = json_encoder()      # compact, as the hub's replies and stored JSON are


# --- responses a view can return -------------------------------------------------------------

def cursor_page(data: list, has_more: bool) -> dict:
    """OpenAI's cursor page (responses' input items, conversations' items, files, batches)."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def token_count_header(counted: bool) -> dict:
    """What a token count route adds to its official body: whether the upstream's tokenizer
    counted, or the hub estimated (facade.Engine.count_input)."""
    return {"X-Llmhub-Token-Count": "counted" if counted else "estimated"}


@dataclass
class JSONResponse:
    body: Any
    status: int = 200
    headers: dict = field(default_factory=dict)


class StreamRenderer:
    """Base of a dialect's stream renderer; server.Handler.serve_stream drives it.

    Class variables:
        content_type -- of the stream
        eager        -- send headers (and `opening`) before the upstream accepts the request;
                        otherwise they wait for it or the first ping, so an early error can
                        still have a real status (a property where the request decides)
    Methods that may be overridden:
        opening(run) -- bytes sent with eager headers
        ping()       -- bytes sent while the run is silent (keep-alive and disconnect probe)
        render(event) -- bytes for one run event (b"" to send nothing)
    """

    content_type = "text/event-stream; charset=utf-8"

    @property
    def eager(self) -> bool:           # a subclass may set it as a class variable
        return False

    def opening(self, run) -> bytes:
        return b""

    def ping(self) -> bytes:
        return b": ping\n\n"

    def render(self, event) -> bytes:
        raise NotImplementedError


@dataclass
class BytesResponse:
    """Anything that is not JSON: a page, a script, a stylesheet."""
    body: bytes
    content_type: str
    status: int = 200
    headers: dict = field(default_factory=dict)


@dataclass
class FileResponse:
    """A stored file, sent a piece at a time with its Content-Length; `pieces` is closed
    (the file with it) however the sending ends."""
    size: int
    pieces: Generator[bytes, None, None]
    content_type: str = "application/octet-stream"
    headers: dict = field(default_factory=dict)


@dataclass
class StreamResponse:
    """A run rendered as a stream by a dialect's StreamRenderer, from event `cursor` on."""
    run: Any
    renderer: Any
    headers: dict = field(default_factory=dict)
    cursor: int = 0


@dataclass
class RunResponse:
    """A run awaited in full, then rendered once by `finish(run) -> JSONResponse`."""
    run: Any
    finish: Callable[[Any], JSONResponse]
    headers: dict = field(default_factory=dict)


@dataclass
class LinesResponse:
    """Lines a view makes as it goes, not a run's (a model download's progress): each sent
    as it comes, chunked. The iterator ends itself, with an error line if it fails."""
    lines: Iterable[bytes]
    content_type: str = "application/x-ndjson"


@dataclass
class RelayResponse:
    """A relayed call's run (generation.Relay): the server gives `relay` its sink and drives
    the run, which writes the upstream's reply as it comes."""
    run: Any
    relay: Any


# --- request bodies --------------------------------------------------------------------------

def decode_json(body: bytes) -> Any:
    """Parse a JSON request body; every failure is a 400 that says where."""
    return parse_json(json_text(body))


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]   # C, where there is _json


def json_value(text: str) -> Any:
    """json.loads(text), sooner for what an upstream stream event holds: a value with nothing
    around it is scanned at once, without loads' whitespace regexes and three Python calls
    (each chunk of a stream is one); anything else takes json.loads, which raises as before.
    A lone surrogate escape is read as U+FFFD, as in a request body: kept, it would fail the
    reply's encoding and the store (the module's docstring)."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(text):
        value = json.loads(text)
    if "\\" in text and surrogate_escaped(text):   # rare: only then is the value walked
        value = _replace_surrogates(value, dict)      # (a 1-char `in` is the cheap test)
    return value


def json_text(body: bytes) -> str:
    """A JSON body's text: UTF-8, a BOM dropped, not empty. Apart from parse_json so that a
    caller can let go of the bytes before parsing: bytes, text and parsed value of a large
    body need not all be held at once."""
    if body.startswith(BOM):
        body = body[len(BOM):]
    if not body or body.isspace():          # as `not body.strip()`, without copying it
        raise BadRequest("Request body is empty; expected JSON", code="empty_body")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"Request body is not valid UTF-8 (byte {exc.start})",
                         code="invalid_encoding") from None


def parse_json(text: str) -> Any:
    """Parse JSON text (json_text's); every failure is a 400 that says where."""
    try:
        try:
            value = _decode(text, _DECODER)
        except _Refusal:            # rare: read it again, marking, to name the field (raises)
            _refuse_sentinels(_decode(text, _Numbers(marking=True).decoder()), "")
            raise
    except json.JSONDecodeError as exc:
        raise BadRequest(f"Invalid JSON at line {exc.lineno} column {exc.colno} "
                         f"(char {exc.pos}): {exc.msg}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("JSON is nested too deeply", code="invalid_json") from None
    if surrogate_escaped(text):             # rare: only then is the whole value walked
        value = _replace_surrogates(value, _no_duplicates)
    return value


def _decode(text: str, decoder: json.JSONDecoder) -> Any:
    if text.startswith("\ufeff"):           # json.loads refuses a BOM left in the text
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return decoder.decode(text)


# Python's json joins a valid \uD83D\uDE00 pair into one character, so any surrogate
# left in a parsed string stands alone. Raw surrogate bytes never get this far: they are
# not valid UTF-8, and the strict decode above refuses them.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_escaped(text: str) -> bool:
    """Whether JSON text escapes a surrogate (a lone one, or half of a pair)."""
    return "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None


def _replace_surrogates(value, make: Callable[[list], dict]):
    """`value` with every lone surrogate, in keys and strings, replaced by U+FFFD; `make`
    builds each object from its pairs (a request body's refuses duplicate keys)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(item, make) for item in value]
    if isinstance(value, dict):
        return make([(_replace_surrogates(k, make), _replace_surrogates(v, make))
                     for k, v in value.items()])
    return value


class _Refused:
    """Stands where a number no JSON peer can read was parsed, until its field is named."""

    def __init__(self, text: str, why: str) -> None:
        self.text, self.why = text, why


class _Refusal(Exception):
    """The shared decoder met a number to refuse (_Numbers)."""


class _Numbers:
    """JSON decoder hooks that refuse NaN, Infinity, floats that overflow to infinity, and
    integers longer than any field needs (Python raises a bare ValueError past 4,300
    digits, and converting huge ones costs quadratic time). Without `marking` the first
    such number raises _Refusal: so one decoder serves every request (json.loads with hooks
    builds one a call); with it each stands as a _Refused, to name its field."""

    max_digits = 100

    def __init__(self, marking: bool) -> None:
        self.marking = marking

    def decoder(self) -> json.JSONDecoder:
        return json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_int=self.int,
                                parse_float=self.float, parse_constant=self.constant)

    def _refuse(self, text: str, why: str) -> _Refused:
        if not self.marking:
            raise _Refusal
        return _Refused(text, why)

    def constant(self, text: str):
        return self._refuse(text, "is not a finite number (JSON has no NaN or Infinity)")

    def float(self, text: str):
        value = float(text)
        if value in (float("inf"), float("-inf")):
            return self._refuse(text[:20], "is too large for a number")
        return value

    def int(self, text: str):
        if len(text) > self.max_digits:
            return self._refuse(text[:20] + "…", f"has more than {self.max_digits} digits")
        return int(text)


def _refuse_sentinels(value, path: str) -> None:
    """Raise a 400 naming the field where a refused number stands."""
    if isinstance(value, _Refused):
        field = path or "body"
        raise BadRequest(f"'{field}' = {value.text} {value.why}", param=field,
                         code="invalid_number")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_sentinels(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_sentinels(item, f"{path}[{index}]")


def _no_duplicates(pairs: list) -> dict:
    """JSON allows a key twice and keeps the last; a client that sends it meant something."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        key = _first_repeat(k for k, _ in pairs)
        raise BadRequest(f"Duplicate key {key!r} in the JSON body", param=key,
                         code="duplicate_key")
    return obj


def _first_repeat(keys: Iterable[str]) -> str | None:
    seen = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None


_DECODER = _Numbers(marking=False).decoder()   # keeps no state between calls


JSON_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")


def check_content_type(value: str | None) -> None:
    """A JSON body may come labelled as JSON, text, or curl -d's form default; not as XML,
    multipart, or anything else that says it is not JSON."""
    kind = (value or "").split(";", 1)[0].strip().lower()
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type {kind!r} is not JSON; send application/json",
                                   param="Content-Type")


def check_message_count(body, limit: int) -> None:
    """Every dialect's message list is `messages`, Responses' `input`, or a bare array
    (thread appends): one limit guards them all (DESIGN §10)."""
    field, items = _message_list(body)
    if len(items) > limit:
        raise PayloadTooLarge(f"'{field}' has {len(items)} items; at most {limit} are accepted "
                              "in one request (max_messages)", param=field,
                              code="too_many_messages")


def _message_list(body) -> tuple[str, list]:
    """(the field it came in, the list); a bare array is named `messages`."""
    if isinstance(body, list):
        return "messages", body
    if isinstance(body, dict):
        for key in ("messages", "input"):
            if isinstance(items := body.get(key), list):
                return key, items
    return "messages", []


# --- output framing --------------------------------------------------------------------------

def json_bytes(obj: Any) -> bytes:
    return _compact(obj).encode("utf-8")


PIECE = 1 << 20     # json_pieces' piece size: about the most it holds beyond its output
LARGE = 1 << 16     # a string this long sends a value down the lean path below
_encode_leaf = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')   # all that ensure_ascii=False escapes


def json_pieces(obj: Any) -> list[bytes]:
    """`obj` as compact JSON in UTF-8 pieces of about PIECE bytes, for a body sent piece by
    piece (upstream requests). json.dumps(obj).encode() of a body holding a 15 MiB image
    holds three copies at once (the encoder's escaped parts, their join, the bytes); this
    holds the bytes and one piece. A value with no long string takes json.dumps, which is
    4 times faster on small ones."""
    if not is_large(obj):
        return [json_bytes(obj)]
    return list(json_stream(obj))


def json_stream(obj: Any):
    """json_pieces' pieces one at a time, each made when asked for: a caller that writes
    each away (the store, a large input in pieces) holds one piece, never the whole."""
    parts: list[str] = []
    size = 0
    for part in _parts(obj):
        if len(part) > PIECE:                  # a long clean string: encoded slice by slice
            yield "".join(parts).encode("utf-8")
            for i in range(0, len(part), PIECE):
                yield part[i:i + PIECE].encode("utf-8")
            parts, size = [], 0
            continue
        parts.append(part)
        size += len(part)
        if size >= PIECE:
            yield "".join(parts).encode("utf-8")
            parts, size = [], 0
    yield "".join(parts).encode("utf-8")


def json_str(obj: Any) -> str:
    """json.dumps(obj) compact, as stored: a long string with nothing to escape (base64
    image data) goes into the one join as it is, instead of as an escaped copy first."""
    if not is_large(obj):
        return _compact(obj)
    return "".join(_parts(obj))


def is_large(obj) -> bool:
    """Whether `obj` holds a string long enough (LARGE) for the lean paths above."""
    if isinstance(obj, dict):
        obj = obj.values()
    elif not isinstance(obj, (list, tuple)):
        return isinstance(obj, str) and len(obj) > LARGE
    for item in obj:
        if isinstance(item, str):
            if len(item) > LARGE:
                return True
        elif isinstance(item, (dict, list, tuple)) and is_large(item):
            return True
    return False


def _parts(obj):
    """`obj`'s compact JSON text in parts; a long string's content is one part (itself, when
    nothing in it needs escaping) between its quotes."""
    if isinstance(obj, str) and len(obj) > LARGE:
        yield '"'
        if _NEEDS_ESCAPE.search(obj) is None:
            yield obj
        else:                                  # JSON escapes are per code point: a slice
            for start in range(0, len(obj), PIECE):   # is escaped alone
                yield _encode_leaf(obj[start:start + PIECE])[1:-1]
        yield '"'
    elif isinstance(obj, dict):
        yield "{"
        for index, (key, value) in enumerate(obj.items()):
            key = key if isinstance(key, str) else _encode_leaf(key)   # as json.dumps does
            yield ("," if index else "") + _encode_leaf(key) + ":"
            yield from _parts(value)
        yield "}"
    elif isinstance(obj, (list, tuple)):
        yield "["
        for index, item in enumerate(obj):
            if index:
                yield ","
            yield from _parts(item)
        yield "]"
    else:
        yield _encode_leaf(obj)


def sse(data: str | dict | list, event: str | None = None, id: str | int | None = None) -> bytes:
    """One Server-Sent Event; multi-line data becomes several `data:` lines (WHATWG rules).
    JSON text holds no CR or LF (its strings escape both), so a value given to encode is one
    data line as it is: splitting it on line breaks (a regex scan of the whole text) cost
    more than encoding it, on every event of a Responses or Messages stream."""
    if isinstance(data, str):
        text = "\n".join("data: " + line for line in _LINE_BREAKS.split(data))
    else:
        text = "data: " + _compact(data)
    if event is not None:
        text = "event: " + _one_line(event) + "\n" + text
    if id is not None:
        text = "id: " + _one_line(str(id)) + "\n" + text
    return (text + "\n\n").encode("utf-8")


def _one_line(text: str) -> str:
    """A field's value without line breaks (they would end the field), tested before the
    regex: event names are the hub's own, and hold none."""
    return _LINE_BREAKS.sub("", text) if "\r" in text or "\n" in text else text


class SSETemplate:
    """One event encoded once around a hole for a text (TEXT in `data`) and, if it has one,
    a hole for a number before it (NUMBER), for an event sent again and again with only
    those changed: a stream's text deltas, one a token, where building and encoding the
    dict cost most of what rendering the token did. `fill` gives what `sse(data, event)`
    would with the holes filled, byte for byte: the same encoder wrote the rest."""

    NUMBER, TEXT = 7_213_000_000_000_000_001, "\x00"   # no hub-made field holds either
    __slots__ = ("parts", "tail")
    parts: tuple[bytes, ...]     # (head, middle) around the number, or (head,) without one

    def __init__(self, data: dict, event: str | None = None) -> None:
        before, self.tail = sse(data, event).split(encode_basestring(self.TEXT).encode(), 1)
        head, numbered, middle = before.partition(b"%d" % self.NUMBER)
        self.parts = (head, middle) if numbered else (before,)

    def fill(self, text: str, number: int | None = None) -> bytes:
        return self.fill_json(encode_basestring(text).encode("utf-8"), number)

    def fill_json(self, encoded: bytes, number: int | None = None) -> bytes:
        """`fill` with a value already encoded (json_bytes') in the text's hole: one sent
        in several events (a response object) is encoded once."""
        if number is None:
            return self.parts[0] + encoded + self.tail
        head, middle = self.parts
        return b"%s%d%s%s%s" % (head, number, middle, encoded, self.tail)


class JSONTemplate:
    """A dict's compact JSON with some top-level values left as holes, encoded once, for a
    dict sent several times with only those changed: a response object's status, output
    and usage around its echo of an agent's instructions and tools (tens of KB, encoded
    in hundreds of µs). `fill(value)` gives json_bytes(value), byte for byte, encoding only
    the holes' values: every other value must be what it was. A hole's marker found
    anywhere else in the text (a client may send any string) leaves the template unused,
    and fill encodes the whole dict."""

    __slots__ = ("keys", "parts")

    def __init__(self, value: dict, holes: tuple[str, ...]) -> None:
        self.keys = [key for key in value if key in holes]       # in the text's order
        markers = {key: f"\x00hole {i}\x00" for i, key in enumerate(self.keys)}
        rest = json_bytes(dict(value, **markers))
        self.parts: list[bytes] | None = []
        for key in self.keys:
            marker = encode_basestring(markers[key]).encode()
            if rest.count(marker) != 1:
                self.parts = None
                return
            part, rest = rest.split(marker)
            self.parts.append(part)
        self.parts.append(rest)

    def fill(self, value: dict) -> bytes:
        if self.parts is None:
            return json_bytes(value)
        pieces = [self.parts[0]]
        for key, part in zip(self.keys, self.parts[1:]):
            pieces += (json_bytes(value[key]), part)
        return b"".join(pieces)


def sse_comment(text: str) -> bytes:
    return (": " + _LINE_BREAKS.sub(" ", text) + "\n\n").encode("utf-8")


def ndjson(obj: Any) -> bytes:
    return json_bytes(obj) + b"\n"


def chunk(data: bytes) -> bytes:
    """HTTP/1.1 chunked frame; an empty one would end the stream, so it is refused."""
    if not data:
        raise ValueError("an empty chunk would terminate the stream")
    return b"%x\r\n%s\r\n" % (len(data), data)
