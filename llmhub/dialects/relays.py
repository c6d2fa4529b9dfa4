"""The relays that RAG, voice and image tools call, passed to an upstream that serves them
(llama.cpp, vLLM, LocalAI, another hub): rerank, tokenize and detokenize, audio
transcriptions, translations and speech, image generations and edits.

Wire rules kept here:
- the body goes upstream byte for byte (a JSON one labelled JSON, whatever curl -d said);
  only a `model` the hub resolves to another name (an alias, a pool, an `up:` prefix) is
  rewritten: the JSON re-encoded with that one field changed, or in a multipart form that
  one part's data swapped in place (multipart.py);
- the model goes through aliases, pools, fallbacks, queues, keys and the request log as a
  chat's does (generation.Relay); with no model, the default upstream answers;
- the reply (status 2xx), its Content-Type and its bytes come back as the upstream sent
  them, speech as it is made (not buffered);
- what the upstream must have is checked first, and a missing or mistyped field is a 400
  naming it: rerank's `query` and `documents`, tokenize's `content` (or vLLM's `prompt` or
  `messages`), detokenize's `tokens`, speech's `input`, an image's `prompt`, a
  transcription's `file` part, an edit's `image` and `prompt` parts;
- an upstream without the endpoint is a 404 (501 where it said 501) naming it, and stays
  healthy (passthrough.not_served); errors are OpenAI's shape.
"""

from llmhub.context import estimate_tokens
from llmhub.dialects.checks import check_int, check_type
from llmhub.dialects.openai import error_body
from llmhub.engine.facade import Relay
from llmhub.errors import BadRequest
from llmhub.formats import multipart
from llmhub.wire import RelayResponse, json_pieces

__all__ = ["TITLE", "error_body", "rerank", "tokenize", "detokenize", "transcriptions",
           "translations", "speech", "image_generations", "image_edits"]

TITLE = "Relays"
# llama.cpp serves /v1/rerank, /rerank and /v1/reranking; vLLM /rerank and /v1/rerank;
# LocalAI /v1/rerank. The first is everyone's; /rerank is for a server with only that.
RERANK = ("/v1/rerank", "/rerank")
RERANK_EXAMPLE = {"model": "bge-reranker-v2-m3", "query": "What is a panda?",
                  "documents": ["hi", "The giant panda is a bear native to China."],
                  "top_n": 1}


# -- JSON relays ----------------------------------------------------------------------------

def rerank(request) -> RelayResponse:
    def check(body: dict) -> int:
        _require(body, "query", str, "a string")
        documents = body.get("documents")
        if documents is None:
            raise _missing("documents")
        if not isinstance(documents, list) or not documents:
            raise BadRequest("'documents' must be a non-empty list of strings or objects",
                             param="documents", code="invalid_type")
        check_int(body, "top_n", 1)
        return estimate_tokens(body["query"]) + sum(estimate_tokens(_text(d))
                                                    for d in documents)
    return _json_relay(request, "/v1/rerank", RERANK, check)


def tokenize(request) -> RelayResponse:
    def check(body: dict) -> int:
        if not any(name in body for name in ("content", "prompt", "messages")):
            raise BadRequest("'content' is required (llama.cpp's name; vLLM's 'prompt' or "
                             "'messages' also go)", param="content", code="missing_field")
        check_type(body, "content", str, "a string")
        return estimate_tokens(_text(body.get("content") or body.get("prompt")))
    return _json_relay(request, "/tokenize", ("/tokenize",), check)


def detokenize(request) -> RelayResponse:
    def check(body: dict) -> int:
        tokens = body.get("tokens")
        if tokens is None:
            raise _missing("tokens")
        if not isinstance(tokens, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise BadRequest("'tokens' must be a list of token ids (whole numbers)",
                             param="tokens", code="invalid_type")
        return 0
    return _json_relay(request, "/detokenize", ("/detokenize",), check)


def speech(request) -> RelayResponse:
    def check(body: dict) -> int:
        _require(body, "input", str, "a string")
        check_type(body, "voice", (str, dict), "a voice name")
        return estimate_tokens(body["input"])
    return _json_relay(request, "/v1/audio/speech", ("/v1/audio/speech",), check)


def image_generations(request) -> RelayResponse:
    def check(body: dict) -> int:
        _require(body, "prompt", str, "a string")
        check_int(body, "n", 1)
        return estimate_tokens(body["prompt"])
    return _json_relay(request, "/v1/images/generations", ("/v1/images/generations",), check)


def _json_relay(request, endpoint: str, paths: tuple, check) -> RelayResponse:
    """Check a JSON body, then relay its bytes as they came (kept before Request.json lets
    them go); re-encoded only to rename the model."""
    raw = request.body
    body = request.json_object(messages=False)
    check_type(body, "model", str, "a string")
    estimate = check(body)
    relay = Relay(endpoint, paths, body.get("model") or None, raw,
                  json_type(request.headers.get("Content-Type")),
                  renamed=lambda name: json_pieces(dict(body, model=name)),
                  accept=request.headers.get("Accept"), input_estimate=estimate)
    return RelayResponse(request.hub.engine.relay(relay), relay)


def json_type(given: str | None) -> str:
    """The Content-Type a JSON body goes upstream with: the client's if it says JSON, else
    application/json. curl -d labels JSON as a form, which the hub reads as JSON (wire.py)
    but vLLM's FastAPI would refuse."""
    kind = (given or "").split(";", 1)[0].strip().lower()
    return given if given and (kind == "application/json" or kind.endswith("+json")) else \
        "application/json"


def _require(body: dict, name: str, types, what: str) -> None:
    if body.get(name) is None:
        raise _missing(name)
    check_type(body, name, types, what)


def _missing(name: str) -> BadRequest:
    return BadRequest(f"'{name}' is required", param=name, code="missing_field")


def _text(value) -> str:
    """A document's or prompt's text, for the estimate: a string, or an object's `text`."""
    if isinstance(value, dict):
        value = value.get("text")
    return value if isinstance(value, str) else ""


# -- multipart relays -----------------------------------------------------------------------

def transcriptions(request) -> RelayResponse:
    return _form_relay(request, "/v1/audio/transcriptions", ("file",))


def translations(request) -> RelayResponse:
    return _form_relay(request, "/v1/audio/translations", ("file",))


def image_edits(request) -> RelayResponse:
    # OpenAI's SDKs send several images as `image[]`; one as `image`
    return _form_relay(request, "/v1/images/edits", (("image", "image[]"), "prompt"))


def _form_relay(request, endpoint: str, required: tuple) -> RelayResponse:
    """Check a multipart form's parts, then relay its bytes as they came, with only the
    `model` part's data swapped where the model is known upstream by another name."""
    raw = request.body
    content_type = request.headers.get("Content-Type")
    parts = multipart.parse(raw, multipart.boundary_of(content_type))
    for names in required:
        names = (names,) if isinstance(names, str) else names
        if not any(multipart.find(parts, name) for name in names):
            raise BadRequest(f"'{names[0]}' is required (a multipart/form-data part)",
                             param=names[0], code="missing_field")
    part = multipart.find(parts, "model")
    model = multipart.text(raw, part).strip() if part is not None else None
    relay = Relay(endpoint, (endpoint,), model or None, raw, content_type,
                  renamed=None if part is None else
                  lambda name: multipart.replaced(raw, part, name.encode("utf-8")),
                  accept=request.headers.get("Accept"))
    return RelayResponse(request.hub.engine.relay(relay), relay)
