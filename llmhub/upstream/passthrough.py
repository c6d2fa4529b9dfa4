"""Relayed calls: a client's request body sent to an upstream endpoint as it came, and the
reply read back as it comes (rerank, tokenize, audio, images: the relays dialect's).

Rules:
- The body goes as bytes or as pieces (multipart.replaced), sent one after the other and
  never joined; the client's Content-Type goes with it (a multipart boundary is in it);
  the upstream's own key goes, never the client's.
- `paths` are tried in order. An endpoint the server does not have moves on to the next
  path, and after the last the call is `not_served`: 404 or 405 (unless the message is
  about a model: vLLM's 404 "The model `x` does not exist"), 501 (llama.cpp's endpoints
  it was not started for), or LM Studio's HTTP 200 `{"error": "Unexpected endpoint…"}`.
  The error keeps the upstream's status, so health.py never counts it against the box:
  its chat still works. Trying another path is safe: the server acted on nothing.
- A JSON reply is read whole (up to `[upstream] max_reply_bytes`): it is passed on with its
  length, and reading it is how LM Studio's HTTP 200 refusal is told from an answer. Any
  other reply (audio, text) is read as it comes, so speech plays while it is made.
- Any other error status is `http_error`'s UpstreamError, as every other call's.
- `abort()` from any thread stops the exchange in hand and any try after it.
"""

import re
import threading

from llmhub.errors import UpstreamError
from llmhub.upstream.base import Relaying, Upstream
from llmhub.upstream.exchange import Aborted, Exchange, retry_after
from llmhub.upstream.openai import error_message, error_type, http_error

__all__ = ["PassCall", "not_served"]

_MODEL_ERROR = re.compile(r"model", re.I)     # a 404 about a model, not a missing route
MISSING = (404, 405, 501)
PASSED_HEADERS = ("content-type", "content-disposition")   # what a reply keeps of its head


class PassCall:
    """One relayed request: open() (tries each path), then read() until b''.

    `paths` are from the server's root (`/v1/rerank`, `/tokenize`): an upstream's base URL
    ends in /v1 for chat, and llama.cpp serves /tokenize beside /v1, not under it."""

    def __init__(self, upstream: Relaying, endpoint: str, paths: tuple, body, content_type: str,
                 accept: str | None = None) -> None:
        root = upstream.prefix.removesuffix("/v1")
        self.upstream, self.endpoint = upstream, endpoint
        self.paths = tuple(root + path for path in paths)
        self.body = body
        self.headers = {**upstream.headers(), "Content-Type": content_type,
                        "Accept": accept or "*/*"}
        self.exchange: Exchange | None = None
        self.status = 0
        self.reply_headers: dict = {}
        self.length: int | None = None     # the reply's length, where it is known
        self.whole: bytes | None = None    # a JSON reply, read in open()
        self._aborted = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Send to the first path the upstream serves; UpstreamError unless it accepted."""
        answers = []
        for path in self.paths:
            response = self._send(path)
            status = response.status
            body = self._whole_json(response)
            if not self._missing(status, body):
                return self._accepted(status, response, body)
            answers.append((status, path))
            self._end_exchange()
        raise not_served(self.upstream, self.endpoint, answers)

    def _send(self, path: str):
        upstream = self.upstream
        exchange = Exchange(upstream.base_url, upstream.timeouts, upstream.label, upstream.pool)
        with self._lock:
            self.exchange, aborted = exchange, self._aborted
        if aborted:
            raise Aborted("aborted")
        return exchange.send("POST", path, self.body, self.headers)

    def _whole_json(self, response) -> bytes | None:
        """A JSON reply's body (or an error's, whatever its type), read whole."""
        kind = (response.getheader("Content-Type") or "").lower()
        if response.status >= 400 or "json" in kind:
            return self._live.read_all(self.upstream.config.max_reply_bytes)
        return None

    @staticmethod
    def _missing(status: int, body: bytes | None) -> bool:
        message = error_message(body) if body is not None else ""
        if status == 200:          # LM Studio's unknown routes (lmstudio.md §1.6)
            return body is not None and len(body) < 4096 and \
                "Unexpected endpoint" in message and b'"error"' in body
        return status in MISSING and not (status == 404 and _MODEL_ERROR.search(message))

    def _accepted(self, status: int, response, body: bytes | None) -> None:
        if status >= 400:
            wait = retry_after(response.getheader("Retry-After")) \
                if status in (429, 503) else None
            raw = body or b""         # an error's body is read whole (_whole_json)
            raise http_error(status, error_message(raw), self.upstream.label,
                             error_type(raw), retry_after=wait,
                             secrets=self.upstream.secrets)
        self.status, self.whole = status, body
        self.reply_headers = {name.title(): response.getheader(name)
                              for name in PASSED_HEADERS if response.getheader(name)}
        if body is not None:
            self.length = len(body)
            self._live.finish()
        elif response.getheader("Content-Length", "").isdigit():
            self.length = int(response.getheader("Content-Length"))

    def read(self) -> bytes:
        """The next piece of the reply as it comes (the whole JSON reply first, if read);
        b'' at its end."""
        if self.whole is not None:
            whole, self.whole = self.whole, b""
            return whole
        exchange = self._live
        if exchange.response is None or exchange.response.isclosed():
            return b""
        data = exchange.read()
        if not data:
            exchange.finish()
        return data

    @property
    def _live(self) -> Exchange:
        """The exchange in hand: each one open() sends is kept until the next or the end."""
        assert self.exchange is not None, "open() came first"
        return self.exchange

    def _end_exchange(self) -> None:
        with self._lock:
            exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.finish()
            exchange.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            exchange = self.exchange
        if exchange is not None:
            exchange.abort()

    def close(self) -> None:
        """From the reading thread only (exchange.py)."""
        self._end_exchange()


def not_served(upstream: Upstream, endpoint: str, answers: list) -> UpstreamError:
    """The upstream has no such endpoint: a clear 404 (501 where it said 501) naming it,
    which never marks the box unhealthy (health.py reads `upstream_status`: a 4xx or a 501
    is not a fault) nor sends the request there again; another target of a pool, or a
    fallback, may serve it (model_unavailable). `answers`: (status, path) per path tried;
    none for an upstream kind that has no such calls at all (Anthropic, mock)."""
    said = "; ".join(f"{status if status != 200 else 'Unexpected endpoint'} to POST {path}"
                     for status, path in answers)
    last = answers[-1][0] if answers else 501
    return UpstreamError(f"The upstream {upstream.name!r} ({upstream.base_url}) does not serve "
                         f"{endpoint}" + (f" (it answered {said})" if said else "") +
                         "; send it to an upstream that does (llama.cpp, vLLM, LocalAI, "
                         "another hub)", status=501 if last == 501 else 404,
                         code="unsupported_endpoint", model_unavailable=True,
                         reason="unsupported_endpoint", where=upstream.label,
                         upstream_status=last if answers else None)
