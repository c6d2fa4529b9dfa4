"""The LM Studio hub (`/models…`, `/chat…`), after the seed of that name.

The seed used LM Studio's SDK for model management and the OpenAI SDK for chat; here both go
through the hub's engine and model manager. Wire rules kept here:
- chat requests are `{model_key?, messages: [{role, content, images?: [{data_base64,
  mime_type}]}], config: {temperature, maxTokens, topP, presencePenalty, frequencyPenalty}}`;
- replies are `{model, content, stop_reason, predicted_tokens}`, streams NDJSON
  (`application/x-ndjson`): `fragment` lines, then `done`, or `error` mid-stream;
- errors are FastAPI's: `{"detail": "…"}`, and 422 with a list `[{loc, msg, type}]` for
  invalid input; the seed's own messages are kept word for word.
"""

import re

from llmhub.context import estimate_tokens
from llmhub.dialects.checks import decoded_head, decoded_size
from llmhub.engine.facade import ChatRequest, Stateless
from llmhub.engine.runs import FAILED
from llmhub.errors import HubError, UpstreamError
from llmhub.transcript import Seen, finish_reason
from llmhub.wire import JSONResponse, RunResponse, StreamRenderer, StreamResponse, ndjson

__all__ = ["TITLE", "error_body", "list_models", "load_model", "unload_model", "chat",
           "chat_stream", "Invalid"]

TITLE = "LM Studio hub"
ROLES = ("system", "user", "assistant")
CONFIG = {"temperature": ("temperature", float, 0, 2), "maxTokens": ("max_tokens", int, 1, None),
          "topP": ("top_p", float, 0, 1), "presencePenalty": ("presence_penalty", float, -2, 2),
          "frequencyPenalty": ("frequency_penalty", float, -2, 2)}
MAGIC = {"image/jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
         "image/png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
         "image/webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"}
NO_MODEL = "Chat service unavailable: No model loaded"


class Invalid(HubError):
    """422 with FastAPI's detail list: every problem in the body, each with its location."""
    status, code = 422, "validation_error"

    def __init__(self, problems: list[dict]) -> None:
        super().__init__("; ".join(p["msg"] for p in problems), param=_dotted(problems[0]))
        self.detail = problems


def _dotted(problem: dict) -> str:
    return ".".join(str(p) for p in problem["loc"][1:])


def problem(loc: list, msg: str, kind: str = "value_error") -> dict:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


# The hub's own validation codes (a run's upstream error keeps its own status and text).
VALIDATION = {"invalid_request", "invalid_json", "empty_body", "invalid_encoding",
              "invalid_type", "invalid_value", "missing_field", "unknown_field",
              "duplicate_key"}


def error_body(error: HubError):
    if isinstance(error, Invalid):
        return {"detail": error.detail}
    if error.code in VALIDATION:     # FastAPI reports every validation problem as a 422 list
        loc = ["body", *error.param.split(".")] if error.param else ["body"]
        kind = "json_invalid" if error.code in ("invalid_json", "empty_body",
                                                "invalid_encoding") else "value_error"
        return 422, {"detail": [{"loc": loc, "msg": error.message, "type": kind}]}
    reason = getattr(error, "reason", None)
    if reason == "no_model_loaded" or error.code == "no_model_loaded":
        return 503, {"detail": NO_MODEL}
    if isinstance(error, UpstreamError) and reason == "unreachable":   # the seed's words
        return {"detail": f"Could not connect to {error.where}: {error.detail}"}
    return {"detail": error.message}


# --- model management ------------------------------------------------------------------------

def list_models(request) -> JSONResponse:
    """?upstream=NAME: that upstream's models (each box has its own); else the default's."""
    upstream = request.query.get("upstream") or None
    entries, source = request.hub.engine.model_catalog(upstream)
    return JSONResponse({"models": entries, "loaded": [e["key"] for e in entries if e["loaded"]],
                         "source": source, "upstream": upstream or
                         request.hub.engine.default_upstream.name})


def load_model(request) -> JSONResponse:
    body = request.json_object()
    problems = _unknown(body, {"model_key", "exclusive", "force", "context_length", "upstream"})
    problems += _check_fields(body, {"model_key": str, "exclusive": bool, "force": bool,
                                    "context_length": int, "upstream": str},
                              required=("model_key",))
    length = body.get("context_length")
    if isinstance(length, int) and not isinstance(length, bool) and length < 1:
        problems.append(problem(["context_length"], "must be a whole number of at least 1"))
    if problems:
        raise Invalid(problems)
    try:
        result = request.hub.engine.load_model(body["model_key"], bool(body.get("exclusive")),
                                               body.get("context_length"),
                                               bool(body.get("force")), body.get("upstream"))
    except HubError as error:
        status = error.status if error.status != 400 else 502
        return JSONResponse({"loaded": False, "error": f"Failed to load model: {error.message}"},
                            status=status)
    return JSONResponse(result)


def unload_model(request) -> JSONResponse:
    body = request.json_object()
    problems = _unknown(body, {"model_key", "unload_all", "force", "upstream"})
    problems += _check_fields(body, {"model_key": str, "unload_all": bool, "force": bool,
                                    "upstream": str})
    if not problems and not body.get("model_key") and not body.get("unload_all"):
        problems = [problem(["model_key"], "give model_key, or unload_all: true", "missing")]
    if problems:
        raise Invalid(problems)
    unloaded = request.hub.engine.unload_models(body.get("model_key"),
                                                bool(body.get("unload_all")),
                                                bool(body.get("force")), body.get("upstream"))
    return JSONResponse({"unloaded": unloaded})


def _unknown(body: dict, known: set, where: tuple = ()) -> list[dict]:
    return [problem([*where, name], "extra fields not permitted", "value_error.extra")
            for name in body if name not in known]


def _check_fields(body: dict, types: dict, required=()) -> list[dict]:
    problems = [problem([name], "field required", "missing") for name in required
                if body.get(name) is None]
    for name, kind in types.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or
                                  (isinstance(value, bool) and kind is not bool)):
            problems.append(problem([name], f"value is not a valid {kind.__name__}",
                                    f"type_error.{kind.__name__}"))
    return problems


# --- chat ------------------------------------------------------------------------------------

def chat(request, kind: str = "chat"):
    return _run(request, kind, stream=False)


def chat_stream(request, kind: str = "chat"):
    return _run(request, kind, stream=True)


def _run(request, kind: str, stream: bool):
    hub = request.hub
    body = request.json_object()
    messages, params, problems = parse_chat(body, kind, hub)
    if problems:
        raise Invalid(problems)
    model = choose_model(hub, kind, body.get("model_key"))
    run = hub.engine.prepare(ChatRequest(Stateless(messages), model=model, params=params,
                                         dialect="studio", run_id=request.run_id()))
    if stream:
        return StreamResponse(run, FragmentStream(run))
    return RunResponse(run, reply)


def choose_model(hub, kind: str, model_key) -> str:
    """regular and vision use their configured model; /chat the key, the default, or the
    first loaded model."""
    if kind in ("regular", "vision"):
        return configured_model(hub, kind)
    if model_key:
        return model_key
    if hub.config.models.default:
        return hub.config.models.default
    model = hub.engine.loaded_model()
    if model is None:
        raise HubError(NO_MODEL, status=503, code="no_model_loaded")
    return model


def configured_model(hub, kind: str) -> str:
    """`[models] regular` or `vision`, the models of the routes by those names."""
    return hub.config.models.vision if kind == "vision" else hub.config.models.regular


def parse_chat(body: dict, kind: str, hub) -> tuple[list, dict, list]:
    problems = _unknown(body, {"model_key", "messages", "config"})
    problems += _check_fields(body, {"model_key": str, "config": dict})
    if isinstance(body.get("config"), dict):
        problems += _unknown(body["config"], set(CONFIG), ("config",))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        problems.append(problem(["messages"], "a non-empty list of messages is required",
                                "missing" if raw is None else "type_error.list"))
        raw = []
    model = configured_model(hub, kind) if kind in ("regular", "vision") else \
        body.get("model_key") or None          # whose upstream must take the images
    messages = [parse_message(m, i, kind, (hub, model), problems) for i, m in enumerate(raw)]
    params = parse_config(body.get("config") or {}, problems) \
        if isinstance(body.get("config") or {}, dict) else {}
    return messages, params, problems


def parse_message(message, i: int, kind: str, target: tuple, problems: list) -> dict:
    if not isinstance(message, dict):
        problems.append(problem(["messages", i], "value is not a valid dict", "type_error.dict"))
        return {}
    if message.get("role") not in ROLES:
        problems.append(problem(["messages", i, "role"], f"must be one of {', '.join(ROLES)}"))
    content = message.get("content")
    if not isinstance(content, str):
        problems.append(problem(["messages", i, "content"], "str type expected",
                                "type_error.str"))
        content = ""
    images = message.get("images") or []
    if images and kind == "regular":
        problems.append(problem(["messages", i, "images"], "the regular endpoint is text-only; "
                                "send images to /chat/vision"))
        return {"role": message.get("role"), "content": content}
    if not isinstance(images, list):
        problems.append(problem(["messages", i, "images"], "value is not a valid list",
                                "type_error.list"))
        images = []
    parts = [image_part(image, ["messages", i, "images", j], target, problems)
             for j, image in enumerate(images)]
    if not parts:
        return {"role": message.get("role"), "content": content}
    return {"role": message.get("role"),
            "content": [{"type": "text", "text": content}] + [p for p in parts if p]}


def image_part(image, loc: list, target: tuple, problems: list) -> dict | None:
    """An image as an OpenAI image_url data URI, after checking it is what it claims and
    that the upstream answering `target` (hub, model) takes it."""
    hub, model = target
    if not isinstance(image, dict) or not isinstance(image.get("data_base64"), str):
        problems.append(problem(loc + ["data_base64"], "field required", "missing"))
        return None
    mime = image.get("mime_type")
    if mime not in MAGIC:
        problems.append(problem(loc + ["mime_type"], "must be image/jpeg, image/png or "
                                "image/webp"))
        return None
    data = re.sub(r"\s+", "", image["data_base64"].split("base64,", 1)[-1])
    try:
        size, head = decoded_size(data), decoded_head(data)
    except ValueError:                          # binascii.Error is one
        problems.append(problem(loc + ["data_base64"], "is not valid base64"))
        return None
    limit = hub.config.server.max_image_bytes
    if size > limit:
        problems.append(problem(loc + ["data_base64"], f"image is {size} bytes; the limit "
                                f"is {limit} (max_image_bytes)"))
    elif not MAGIC[mime](head):
        problems.append(problem(loc + ["mime_type"], f"the bytes are not a {mime} image"))
    elif refusal := hub.engine.image_refusal(model, mime):
        problems.append(problem(loc + ["mime_type"], refusal))
    else:
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
    return None


def parse_config(config: dict, problems: list) -> dict:
    params = {}
    for name, (param, kind, lo, hi) in CONFIG.items():
        value = config.get(name)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
            (kind is float or isinstance(value, int))
        if not ok or value < lo or (hi is not None and value > hi):
            limits = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            problems.append(problem(["config", name], f"must be a {kind.__name__} {limits}"))
            continue
        params[param] = value
    return params


# --- replies ---------------------------------------------------------------------------------

def predicted_tokens(run) -> int:
    return (run.usage.output_tokens if run.usage else 0) or \
        estimate_tokens(run.transcript.text)


def stop_reason(run) -> str:
    return finish_reason(run.transcript.finish_reason, run.status)


def reply(run) -> JSONResponse:
    if run.status == FAILED:
        raise run.failure()
    return JSONResponse({"model": run.transcript.model or run.model,
                         "content": run.transcript.text, "stop_reason": stop_reason(run),
                         "predicted_tokens": predicted_tokens(run)})


class FragmentStream(StreamRenderer):
    """NDJSON: a `fragment` line per piece of text, then `done` (or `error`)."""

    content_type = "application/x-ndjson"

    def __init__(self, run) -> None:
        self.seen = Seen(run, fold=True)

    def ping(self) -> bytes:
        return b""   # NDJSON has no comment line; a silent client is still polled

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "delta" and event.text:
            return ndjson({"type": "fragment", "content": event.text})
        if kind == "error":
            return ndjson({"type": "error", "message": event.message})
        if kind == "done" and event.status != FAILED:
            return ndjson({"type": "done", "model": self.seen.model,
                           "predicted_tokens": predicted_tokens(self.seen),
                           "stop_reason": stop_reason(self.seen)})
        return b""
