"""Secrets never reach a client, a log line or the database (DESIGN §10).

Model servers echo the key they refused, in a status error or inside a stream's error frame,
and an upstream URL may carry `user:password@`. An upstream masks its own keys (`secrets`)
in every error it makes of what the server said, before anything else reads it (the health
probes, the startup line, model loads); every error a run carries passes through
`redact_error` once more, in `Run.finish`, before any dialect renders it or the store keeps
it; every error a request answers with passes through it in the server's one error funnel;
captured bodies pass through `redact`; and every upstream URL shown anywhere is `public_url`.

`redact` masks, each behind a cheap substring test so that most text costs a few scans:
- a known secret, as written or in any spelling JSON or a URL allows for it (`sk-a\\/b`,
  `\\u0073k-…`, `%2F`);
- the string value of a JSON field named like a secret (`apiKey`, `x-api-key`,
  `Authorization`, `client_secret`, `access_token`, `password`, `LB-LLM-Key`…), known or
  not, also in JSON quoted inside a JSON string; token counts (`max_tokens`) are not
  secrets, nor a model's `key`, nor a logprob's `token`;
- credentials in a URL (`scheme://user:pw@`) and the token after `Bearer`.
"""

import base64
import functools
import re
import string
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact", "redact_error", "public_url", "url_secrets", "upstream_secrets",
           "config_secrets", "secret_name", "MASK"]

MASK = "***"
MIN_SECRET = 4       # shorter strings are too common to replace without mangling text

# A field name must contain one of these for the name test to run at all (lowercased).
HINTS = ("key", "auth", "pass", "secret", "token", "cred", "cookie", "pwd", "bearer")
# Its last word is one of these: a secret (apiKey, client_secret, x-auth-token, password).
SECRET_WORDS = {"password", "passwd", "passphrase", "passcode", "pwd", "secret", "secrets",
                "auth", "authorization", "credential", "credentials", "cookie", "token",
                "bearer", "apikey"}
# `…key` is a secret unless the word before says what kind of key (model_key, cache_key).
PLAIN_KEYS = {"model", "cache", "public", "idempotency", "sort", "partition", "primary",
              "foreign", "lookup", "group", "thread", "routing", "hash", "index", "field",
              "dedup", "object"}

_NAME_CHARS = "[A-Za-z0-9_.-]"
_NAME_HEAD = re.compile(r'(\\?)"(' + _NAME_CHARS + r'{0,64})\Z')   # "api_  before a hint
_NAME_TAIL = re.compile("(" + _NAME_CHARS + r'{0,64})(\\?)"\s*:\s*(\\?)"')  # key": "
_VALUE = re.compile(r'(?:[^"\\]|\\.)*', re.S)            # up to its closing quote
# Inside a JSON string the closing quote is \", and the value's own escapes are doubled.
_QUOTED_VALUE = re.compile(r'(?:[^"\\]|\\\\(?:\\.|[^"\\])|\\[^"\\])*', re.S)
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_LOGPROB = re.compile(r'\s*,\s*"logprob"')
_ASCII_ESCAPE = re.compile(r"\\u00[0-7][0-9A-Fa-f]")     # \u0410 cannot spell an ASCII key
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@\"'<>]+@")
# A token has a digit or a symbol in it, so prose ("bearer instruments") stays.
_BEARER = re.compile(r"(\bbearer\s+)(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}",
                     re.I)


def redact(text: str, secrets=()) -> str:
    """`text` with every secret in `secrets`, every secret-named JSON field's value, URL
    credentials and bearer tokens replaced by the mask."""
    if not text:
        return text
    # Longest first: a key that holds another is masked whole, not around the shorter one.
    known = tuple(sorted((s for s in secrets if s and len(s) >= MIN_SECRET), key=len,
                         reverse=True))
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    if known and _maybe_spelled(text, known):
        text = _spellings(known).sub(MASK, text)
    lowered = text.lower()
    if len(lowered) != len(text):     # "İ" lowers to two characters: keep the positions
        lowered = text.translate(_ASCII_LOWER)
    if '"' in text and any(hint in lowered for hint in HINTS):
        text = _mask_fields(text, lowered)
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(r"\1" + MASK + "@", text)
    if "bearer" in lowered:
        text = _BEARER.sub(r"\1" + MASK, text)
    return text


def secret_name(name: str) -> bool:
    """Whether a field of this name holds a secret: by its last word, in any casing."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    if words[-1] in SECRET_WORDS:
        return True
    return words[-1] in ("key", "keys") and len(words) > 1 and words[-2] not in PLAIN_KEYS


# -- fields named like a secret ---------------------------------------------------------------

def _mask_fields(text: str, lowered: str) -> str:
    """Each secret-named field's string value masked. Fields are found from the hint words
    (str.find, in C), so a body that mentions none costs nothing more; a value inside
    another masked value goes with it."""
    spans: set[tuple[int, int] | None] = set()
    for hint in HINTS:
        at = lowered.find(hint)
        while at >= 0:
            spans.add(_secret_value(text, at))
            at = lowered.find(hint, at + 1)
    out, done = [], 0
    for start, end in sorted(span for span in spans if span is not None):
        if start >= done:
            out += [text[done:start], MASK]
            done = end
    return "".join(out) + text[done:] if out else text


def _secret_value(text: str, at: int) -> tuple[int, int] | None:
    """(start, end) of the string value of the field whose name has a hint at `at`, if that
    name is a secret's: `"name": "value"`, or `\\"name\\": \\"value\\"` in a JSON string."""
    head = _NAME_HEAD.search(text, max(0, at - 66), at)
    tail = _NAME_TAIL.match(text, at)
    if head is None or tail is None or not head[1] == tail[2] == tail[3]:
        return None
    name = head[2] + tail[1]
    if not secret_name(name):
        return None
    start = tail.end()
    value = (_QUOTED_VALUE if head[1] else _VALUE).match(text, start)
    assert value is not None          # both match the empty string: never None
    end = value.end()
    if name.lower() == "token" and _LOGPROB.match(text, end + 1):
        return None       # a logprob entry's token is text the model wrote
    return start, end


# -- known secrets in other spellings ---------------------------------------------------------

def _maybe_spelled(text: str, secrets: tuple) -> bool:
    """Whether a secret may be in `text` escaped. Only \\u and %XX spell a letter or a
    digit (and an ASCII one only as \\u00XX), so without them a secret's longest run of
    those must be there as written."""
    if "\\u" in text:
        ascii_only = all(s.isascii() for s in secrets)
        if not ascii_only or _ASCII_ESCAPE.search(text):
            return True
    if "%" in text and _PERCENT.search(text):
        return True
    return "\\" in text and any(_longest_run(s) in text for s in secrets)


@functools.lru_cache(maxsize=256)
def _longest_run(secret: str) -> str:
    return max(re.split(r'[/"\\]', secret), key=len)


@functools.lru_cache(maxsize=64)
def _spellings(secrets: tuple) -> re.Pattern:
    """One pattern for every secret in every spelling: each character as written or escaped
    (`\\/`, `\\u002f`, `%2F`), with any number of backslashes, as JSON nested in JSON has."""
    ordered = sorted(set(secrets), key=len, reverse=True)
    return re.compile("|".join("".join(_char(c) for c in s) for s in ordered))


def _char(c: str) -> str:
    units = c.encode("utf-16-be")        # past U+FFFF: \\uD83D\\uDE00, a surrogate pair
    forms = [re.escape(c), "".join(r"\\\\*u(?i:" + units[i:i + 2].hex() + ")"
                                   for i in range(0, len(units), 2))]
    if c in '/"\\':
        forms.append(r"\\\\*" + re.escape(c))
    if not (c.isascii() and c.isalnum()):
        forms.append("(?i:" + "".join(f"%{b:02x}" for b in c.encode()) + ")")
    return "(?:" + "|".join(forms) + ")"


def redact_error(error, secrets):
    """The same error with every secret masked in its message and in an upstream error's
    `detail` (None stays None)."""
    if error is not None:
        message = redact(error.message, secrets)
        if message != error.message:
            error.message = message
            error.args = (message,)
        if isinstance(getattr(error, "detail", None), str):   # a 422's is a list of problems
            error.detail = redact(error.detail, secrets)
    return error


def public_url(url: str) -> str:
    """A URL as it may be shown: credentials replaced by the mask."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def url_secrets(url: str) -> tuple:
    """A URL's password as written, as sent (percent-decoded), and the Basic credentials it
    makes: a server may echo any of them."""
    parts = urlsplit(url)
    if not parts.password:
        return ()
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password)}".encode()
    return (parts.password, unquote(parts.password), base64.b64encode(pair).decode("ascii"))


def upstream_secrets(upstream) -> tuple:
    """An upstream's own secrets (its [upstream] config): its key and URL credentials."""
    return tuple(s for s in (upstream.api_key, *url_secrets(upstream.base_url)) if s)


def config_secrets(config) -> tuple:
    """Every secret the configuration holds: hub keys, upstream keys, URL credentials."""
    found = list(config.server.api_keys)
    for upstream in config.upstreams:
        found += upstream_secrets(upstream)
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))
