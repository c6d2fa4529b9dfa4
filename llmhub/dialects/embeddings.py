"""OpenAI embeddings (`POST /v1/embeddings`), for retrieval setups built on the hub.

Wire rules kept here:
- `input` is a string, a list of strings, token ids, or a list of token-id lists; `model`,
  `encoding_format` (`float` or `base64`), `dimensions` and `user` are read, anything else
  goes upstream as it came;
- the model goes through aliases, prefixes, fallbacks and queues as a chat does;
- `base64` is produced by the hub from the floats every upstream can send (little-endian
  float32, as OpenAI's SDKs decode it), so it works where the upstream knows only floats;
- token ids go to an upstream that takes them; LM Studio does not, and its refusal is
  confusing, so the hub answers a 400 naming the LangChain setting that avoids them;
- at most 2,048 inputs in one call, as OpenAI takes (`MAX_INPUTS`; more is a 400 naming
  `input`); `[server] max_messages` guards message lists and does not count these;
- the upstream's reply is read whole up to `[upstream] max_reply_bytes` (256 MiB, which fits
  2,048 inputs of 3,072 dimensions), and is a 502 naming that key past it, never a cut list;
- usage is the upstream's, estimated where it says 0 (LM Studio always does);
- errors are OpenAI's shape.
"""

import base64
import struct

from llmhub.dialects.checks import check_int, check_type
from llmhub.dialects.openai import error_body, upstream_params
from llmhub.errors import BadRequest
from llmhub.wire import JSONResponse

__all__ = ["TITLE", "error_body", "create_embeddings"]

TITLE = "OpenAI"
READ = ("model", "input", "encoding_format")
MAX_INPUTS = 2048     # OpenAI's own limit per call; the SDKs batch by it


def create_embeddings(request) -> JSONResponse:
    hub = request.hub
    body = request.json_object(messages=False)
    check_fields(body)
    model = body.get("model") or None
    if is_token_ids(body["input"]) and not hub.engine.accepts_token_ids(model):
        raise BadRequest("'input' holds token ids, which this model server cannot embed: send "
                         "text. (LangChain's OpenAIEmbeddings sends token ids by default; "
                         "set check_embedding_ctx_length=False.)", param="input",
                         code="invalid_value")
    sent = dict(upstream_params(body, READ, hub.config.openai.drop_fields),
                input=body["input"])
    reply, run = hub.engine.embed(model, sent)
    return JSONResponse(answer(reply, run, body.get("encoding_format") or "float"))


def check_fields(body: dict) -> None:
    given = body.get("input")
    if given is None:
        raise BadRequest("'input' is required", param="input", code="missing_field")
    if not is_input(given):
        raise BadRequest("'input' must be a string, a list of strings, a list of token ids, "
                         "or a list of such lists", param="input", code="invalid_type")
    if inputs(given) > MAX_INPUTS:
        raise BadRequest(f"'input' has {inputs(given)} items; at most {MAX_INPUTS} are "
                         "accepted in one request", param="input", code="too_many_inputs")
    check_type(body, "model", str, "a string")
    check_type(body, "user", str, "a string")
    check_int(body, "dimensions", 1)
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise BadRequest("'encoding_format' must be float or base64", param="encoding_format",
                         code="invalid_value")


def is_input(value) -> bool:
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    return all(isinstance(v, str) for v in value) or is_token_ids(value)


def inputs(value) -> int:
    """How many texts `input` holds: a string or one token-id list is one."""
    if isinstance(value, str) or all(isinstance(v, int) for v in value):
        return 1
    return len(value)


def is_token_ids(value) -> bool:
    def ids(items) -> bool:
        return isinstance(items, list) and bool(items) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in items)
    return ids(value) or (isinstance(value, list) and bool(value) and all(ids(v) for v in value))


def answer(reply: dict, run, encoding: str) -> dict:
    data = [dict(item, object="embedding", embedding=encoded(item.get("embedding"), encoding))
            for item in reply.get("data") or () if isinstance(item, dict)]
    usage = run.usage
    return {"object": "list", "data": data, "model": reply.get("model") or run.model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}}


def encoded(vector, encoding: str):
    """The vector as asked: floats, or base64 of little-endian float32."""
    if isinstance(vector, str):                       # the upstream sent base64 already
        if encoding == "base64":
            return vector
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
