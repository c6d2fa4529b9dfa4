"""Ollama's native API (`/api/*`), for the largest family of local clients: the `ollama`
Python and npm libraries, LangChain's ChatOllama, Open WebUI, Enchanted, Home Assistant,
and the editors (Copilot, JetBrains, Zed, Cline) that find local models through it.

Wire rules kept here (the `ollama` client's `_types.py` is the ground truth):
- `/api/chat` and `/api/generate` stream unless `"stream": false`: NDJSON lines
  (`application/x-ndjson`), the last with `done: true`, `done_reason`, the token counts
  (`prompt_eval_count`, `eval_count`) and durations in nanoseconds; a failure after the
  first line is a last line `{"error": "..."}`;
- errors are `{"error": "<string>"}` (an object there prints as `[object Object]` in
  ollama-js) with Ollama's statuses: 404 `model "x" not found, try pulling it first`, 400
  for bad input naming the field;
- model names are `name:tag` and a bare name means `:latest`: listed names without a tag
  get `:latest`, and a requested `x:latest` is `x` on every route (resolution.py); replies
  echo the name as sent; only aliases whose model an upstream serves are listed;
- messages carry `images` (base64), `thinking`, and `tool_calls` whose arguments are JSON
  objects (OpenAI's are strings); a `tool` message is matched to its call by `tool_name`;
- `options` holds the sampling settings (`num_predict` is max tokens; -1 and -2 mean no
  limit); `num_ctx` is the context of a load the request causes (lifecycle.py; a loaded
  model keeps its own); other load-time ones (`num_gpu`, ...) are accepted and not sent; `format` is `"json"` or a JSON schema, sent as a
  json_schema response format (LM Studio takes no json_object);
- `think: false` hides the model's reasoning; "low"/"medium"/"high" ("max": high) is
  reasoning_effort;
- `keep_alive` (a Go duration, seconds, 0 or negative) sets how long the model stays loaded
  after the request (lifecycle.py); an empty prompt or empty messages only loads the model
  (`done_reason: "load"`), and with `keep_alive: 0` unloads it (`"unload"`); with keys set,
  only a key that may manage models sets either (others' keep_alive is ignored);
- `/api/pull` of a model an upstream has succeeds at once; another is downloaded by an
  upstream that can (LM Studio 0.4+, for an admin or a manage_models key), its progress
  streamed as pull lines; push, create, copy and delete are refused with a message saying
  what to do instead.
"""

import hashlib
import itertools
import json
import math
import re
import time
from fnmatch import fnmatchcase
from typing import Any

from llmhub.dialects.checks import decoded_head, decoded_size
from llmhub.dialects.embeddings import encoded
from llmhub.dialects.studio import MAGIC
from llmhub.engine.facade import ChatRequest, Prompt, Stateless
from llmhub.engine.runs import CANCELLED, FAILED, Run
from llmhub.errors import BadRequest, HubError, NotFound
from llmhub.ids import utc_text
from llmhub.transcript import Seen
from llmhub.wire import (BytesResponse, JSONResponse, LinesResponse, RunResponse,
                         StreamRenderer, StreamResponse, ndjson)

__all__ = ["TITLE", "error_body", "version", "tags", "show", "ps", "chat", "generate",
           "embed", "embeddings", "pull", "unsupported"]

TITLE = "Ollama"
RUNNING = b"Ollama is running"
ROLES = ("system", "user", "assistant", "tool")
# Ollama's options and the OpenAI field each becomes; the others are load-time settings
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
           "min_p": "min_p", "seed": "seed", "repeat_penalty": "repeat_penalty",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
           "num_predict": "max_tokens", "stop": "stop"}
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
DURATION = re.compile(rf"({NUMBER.pattern})(ns|us|µs|ms|s|m|h)")
UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
MODIFIED = "2026-01-01T00:00:00Z"    # no upstream says when a model changed
FOREVER = "2318-01-01T00:00:00Z"     # what Ollama answers for a model kept loaded for good
GIF = b"GIF8"


def error_body(error: HubError):
    status = 404 if error.code == "model_not_found" else error.status
    return status, {"error": error.message}


def running(request) -> BytesResponse:
    """`GET /` as Ollama answers it; clients probe it before anything else."""
    return BytesResponse(RUNNING, "text/plain; charset=utf-8")


# --- models ----------------------------------------------------------------------------------

def version(request) -> JSONResponse:
    return JSONResponse({"version": request.hub.config.ollama.version})


def tags(request) -> JSONResponse:
    """Every model and alias the hub serves, with what the upstream says of each."""
    hub = request.hub
    listed, errors = hub.engine.list_models()
    if errors and not listed:
        raise errors[0]
    # an alias whose model no upstream serves is left out: a client asks /api/show of
    # every name listed, and Copilot drops the whole list at one 404
    aliases = [a for a in hub.config.aliases if "*" not in a and
               not hub.engine.unknown_model(a)]
    names = list(dict.fromkeys([m["id"] for m in listed] + aliases))
    facts = hub.engine.model_facts(names)
    return JSONResponse({"models": [listing(n, f) for n, f in zip(names, facts)]})


def listing(name: str, facts: dict) -> dict:
    tagged = tagged_name(name)
    return {"name": tagged, "model": tagged, "modified_at": MODIFIED,
            "size": facts.get("size_bytes") or 0, "digest": digest(name),
            "details": details(facts)}


def show(request) -> JSONResponse:
    hub = request.hub
    _, model = known_request(request)
    facts = hub.engine.model_facts([model])[0]
    arch = facts.get("architecture") or "llama"
    # an alias shows by its own name: editors list models by basename
    info = {"general.architecture": arch, "general.basename": model.removesuffix(":latest")}
    # Ollama's is the model's trained context; the loaded one is /api/ps's
    context = facts.get("max_context_length") or facts.get("context_length")
    if context:
        info[f"{arch}.context_length"] = context
    return JSONResponse({
        "license": "", "parameters": "", "template": "{{ .Prompt }}",
        "modelfile": f"# Served by llmhub from the upstream {facts['upstream']} "
                     f"({facts['kind']})\nFROM {facts['model']}\n",
        "details": details(facts), "model_info": info,
        "capabilities": capabilities(hub, facts), "modified_at": MODIFIED})


def ps(request) -> JSONResponse:
    """The models loaded now; `expires_at` from the idle unload, if one is set."""
    hub = request.hub
    models = []
    for facts in hub.engine.loaded_models():
        tagged = tagged_name(facts["key"])
        idle = next((u.idle_unload_seconds for u in hub.config.upstreams
                     if u.name == facts["upstream"]), 0)
        models.append({"name": tagged, "model": tagged, "size": facts.get("size_bytes") or 0,
                       "digest": digest(facts["key"]), "details": details(facts),
                       "expires_at": utc_text(time.time() + idle, 6) if idle else FOREVER,
                       "size_vram": facts.get("size_bytes") or 0,
                       "context_length": facts.get("context_length") or 0})
    return JSONResponse({"models": models})


def details(facts: dict) -> dict:
    arch = facts.get("architecture") or ""
    return {"parent_model": "", "format": facts.get("format") or "gguf", "family": arch,
            "families": [arch] if arch else None,
            "parameter_size": facts.get("parameters") or "",
            "quantization_level": facts.get("quantization") or ""}


def capabilities(hub, facts: dict) -> list[str]:
    """As the upstream says (LM Studio), else as `[ollama]` lists; an upstream that says
    nothing of tools (llama.cpp, vLLM) is taken to have them, as its chat template does."""
    if facts.get("type") == "embedding":
        return ["embedding"]
    config, model = hub.config.ollama, facts["model"]
    found = ["completion"]
    if facts.get("tools") is not False or matches(model, config.tools):
        found.append("tools")
    if facts.get("vision") or matches(model, config.vision):
        found.append("vision")
    if facts.get("reasoning") or matches(model, config.thinking):
        found.append("thinking")
    return found


def matches(model: str, patterns: tuple) -> bool:
    return any(fnmatchcase(model.lower(), p.lower()) for p in patterns)


def tagged_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def digest(name: str) -> str:
    """A stable stand-in: clients use it to tell models apart, and no upstream gives one."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def model_field(body: dict) -> str:
    """`model` (`name` in older clients): a non-empty string."""
    name = body.get("model", body.get("name"))
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' is required: a model name", param="model")
    return name


def known_request(request, messages: bool = True) -> tuple[dict, str]:
    """The body and the model it names, once the model is known."""
    body = request.json_object(messages)
    model = model_field(body)
    check_known(request.hub, model)
    return body, model


def check_known(hub, name: str) -> None:
    """404 as Ollama says it when neither an upstream's last probe nor the hub's aliases
    and pools know the name (`x:latest` is `x`: resolution.py)."""
    if hub.engine.unknown_model(name):
        raise NotFound(f'model "{name}" not found, try pulling it first', param="model",
                       code="model_not_found")


# --- chat and generate -----------------------------------------------------------------------

def chat(request):
    hub = request.hub
    body, model = generation_request(request)
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise BadRequest("'messages' must be a list", param="messages")
    if not messages:
        return load_or_unload(request, body, model, ChatLines)
    params = dict(generation_params(body), **tool_params(body))
    chat = ChatRequest(Stateless(openai_messages(messages, hub, model)), model=model,
                       params=params, dialect="ollama", run_id=request.run_id(),
                       load_context=num_ctx(body))
    return respond(request, body, chat, model, ChatLines)


def generate(request):
    hub = request.hub
    body, model = generation_request(request)
    for field in ("prompt", "suffix", "system"):
        if body.get(field) is not None and not isinstance(body[field], str):
            raise BadRequest(f"'{field}' must be a string", param=field)
    prompt, images = body.get("prompt") or "", body.get("images")
    if not prompt and not images and not body.get("suffix"):
        return load_or_unload(request, body, model, GenerateLines)
    params = generation_params(body)
    if body.get("raw") or body.get("suffix") is not None:
        # no chat template: the prompt as written, and the suffix for fill-in-the-middle
        if body.get("suffix") is not None:
            params["suffix"] = body["suffix"]
        params["prompt"] = prompt            # a legacy completion's travels in its params
        plan: Prompt | Stateless = Prompt(prompt)
    else:
        user = user_message(prompt, images, hub, model, "images")
        system = [{"role": "system", "content": body["system"]}] if body.get("system") else []
        plan = Stateless(system + [user])
    chat = ChatRequest(plan, model=model, params=params, dialect="ollama",
                       run_id=request.run_id(), load_context=num_ctx(body))
    return respond(request, body, chat, model, GenerateLines)


def generation_request(request) -> tuple[dict, str]:
    """A chat or generate body checked: (the body, the model's name as sent)."""
    body, model = known_request(request)
    check_request(body)
    return body, model


def respond(request, body: dict, chat: ChatRequest, model: str, lines):
    engine = request.hub.engine
    keep = keep_alive(body)             # checked before a run exists
    run = engine.prepare(chat)
    if keep is not None:
        engine.keep_alive(run, keep)
    shape = lines(run, model, hide_thinking=body.get("think") is False)
    if body.get("stream", True):
        return StreamResponse(run, shape)
    return RunResponse(run, lambda run: JSONResponse(shape.whole(run)))


def load_or_unload(request, body: dict, model: str, lines):
    """No prompt: load the model (Ollama's way to warm it up), or with keep_alive 0 unload
    it as soon as no run uses it."""
    engine = request.hub.engine
    keep = keep_alive(body)
    if keep == 0:
        engine.unload_when_idle(model)
        reason = "unload"
    else:
        engine.warm_up(model, num_ctx(body))
        reason = "load"
    reply = dict(lines.piece(model, ""), done=True, done_reason=reason)
    if body.get("stream", True):
        return BytesResponse(ndjson(reply), "application/x-ndjson")
    return JSONResponse(reply)


def check_request(body: dict) -> None:
    if not isinstance(body.get("stream", True), bool):
        raise BadRequest("'stream' must be true or false", param="stream")
    if body.get("options") is not None and not isinstance(body["options"], dict):
        raise BadRequest("'options' must be an object", param="options")
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in EFFORTS:
        raise BadRequest("'think' must be true, false, or one of low, medium, high, max",
                         param="think")


def generation_params(body: dict) -> dict:
    params = sampling(body.get("options") or {})
    fmt = body.get("format")
    if fmt == "json":
        params["response_format"] = schema_format({"type": "object"})
    elif isinstance(fmt, dict):
        params["response_format"] = schema_format(fmt)
    elif fmt not in (None, ""):
        raise BadRequest("'format' must be \"json\" or a JSON schema object", param="format")
    if body.get("think") in EFFORTS:
        params["reasoning_effort"] = EFFORTS[body["think"]]
    return params


def num_ctx(body: dict) -> int | None:
    """`options.num_ctx`: the context a model loaded for this request gets (a model loaded
    already keeps its own, as reloading it would end others' runs)."""
    value = (body.get("options") or {}).get("num_ctx")
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise BadRequest("option 'num_ctx' must be a whole number of at least 1",
                         param="options.num_ctx")
    return value


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def sampling(options: dict) -> dict:
    params = {}
    for name, field in OPTIONS.items():
        value: Any = options.get(name)
        if value is None:
            continue
        if name == "stop":
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadRequest("option 'stop' must be a list of strings",
                                 param="options.stop")
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadRequest(f"option '{name}' must be a number", param=f"options.{name}")
        if name == "num_predict" and value <= 0:
            continue                     # -1: no limit, -2: fill the context
        params[field] = int(value) if name in ("num_predict", "seed", "top_k") else value
    return params


def keep_alive(body: dict) -> float | None:
    """`keep_alive` in seconds: a number, or a Go duration ("5m", "2h45m", "-1s", "300" as
    seconds); negative is infinite (kept for good); absent is None (the hub's own idle
    unload applies)."""
    value = body.get("keep_alive")
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = duration(value.strip())
    if seconds is None:
        raise BadRequest("'keep_alive' must be a duration such as \"5m\" or \"2h45m\", or "
                         "a number of seconds", param="keep_alive")
    return math.inf if seconds < 0 else seconds


def duration(text: str) -> float | None:
    """Go's time.ParseDuration, which Ollama uses, and a bare number as seconds."""
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    if NUMBER.fullmatch(text):
        return sign * float(text)
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sign * sum(float(n) * UNIT[u] for n, u in parts)


# --- messages --------------------------------------------------------------------------------

def openai_messages(messages: list, hub, model: str) -> list[dict]:
    out: list[dict] = []
    calls: list[tuple] = []      # (name, id) of tool calls not answered yet
    replay = hub.config.context.replay_reasoning
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise BadRequest(f"'{where}' must be an object", param=where)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadRequest(f"'{where}.role' must be one of {', '.join(ROLES)}",
                             param=f"{where}.role")
        if content is not None and not isinstance(content, str):
            raise BadRequest(f"'{where}.content' must be a string", param=f"{where}.content")
        if message.get("images"):
            out.append(user_message(content or "", message["images"], hub, model,
                                    f"{where}.images", role))
            continue
        one = {"role": role, "content": content or ""}
        if role == "assistant":
            one.update(assistant_parts(message, where, i, calls, replay))
        elif role == "tool":
            one["tool_call_id"] = answered(message, calls)
        out.append(one)
    return out


def assistant_parts(message: dict, where: str, i: int, calls: list, replay: bool) -> dict:
    parts = {}
    if replay and isinstance(message.get("thinking"), str) and message["thinking"]:
        parts["reasoning_content"] = message["thinking"]
    given = message.get("tool_calls")
    if not given:
        return parts
    if not isinstance(given, list):
        raise BadRequest(f"'{where}.tool_calls' must be a list", param=f"{where}.tool_calls")
    parts["tool_calls"] = []
    for j, call in enumerate(given):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"'{where}.tool_calls.{j}.function.name' is required",
                             param=f"{where}.tool_calls.{j}.function.name")
        arguments = function.get("arguments") or {}
        call_id = call.get("id") or f"call_{i}_{j}"
        calls.append((function["name"], call_id))
        parts["tool_calls"].append({"id": call_id, "type": "function", "function": {
            "name": function["name"], "arguments": arguments if isinstance(arguments, str)
            else json.dumps(arguments, ensure_ascii=False)}})
    return parts


def answered(message: dict, calls: list) -> str:
    """The id of the call a tool result answers: its own `tool_call_id`, else the oldest
    open call of its `tool_name`, else the oldest open call (Ollama matches by order)."""
    if isinstance(message.get("tool_call_id"), str):
        given = message["tool_call_id"]
        calls[:] = [c for c in calls if c[1] != given]
        return given
    name = message.get("tool_name") or message.get("name")
    pick = next((c for c in calls if c[0] == name), calls[0] if calls else None)
    if pick is None:
        return "call_0"
    calls.remove(pick)
    return pick[1]


def user_message(text: str, images, hub, model: str, where: str, role: str = "user") -> dict:
    if images is None:
        return {"role": role, "content": text}
    if not isinstance(images, list):
        raise BadRequest(f"'{where}' must be a list of base64 images", param=where)
    parts = [{"type": "text", "text": text}] if text else []
    parts += [image_part(image, hub, model, f"{where}.{j}") for j, image in enumerate(images)]
    return {"role": role, "content": parts}


def image_part(image, hub, model: str, where: str) -> dict:
    if not isinstance(image, str):
        raise BadRequest(f"'{where}' must be a base64 string", param=where)
    data = re.sub(r"\s+", "", image.split("base64,", 1)[-1])
    try:
        size, head = decoded_size(data), decoded_head(data)
    except ValueError:                          # binascii.Error is one
        raise BadRequest(f"'{where}' is not valid base64", param=where) from None
    limit = hub.config.server.max_image_bytes
    if size > limit:
        raise BadRequest(f"'{where}' is {size} bytes; the limit is {limit} "
                         "(max_image_bytes)", param=where)
    mime = "image/gif" if head.startswith(GIF) else \
        next((m for m, looks in MAGIC.items() if looks(head)), None)
    if mime is None:
        raise BadRequest(f"'{where}' is not a PNG, JPEG, WebP or GIF image", param=where)
    if refusal := hub.engine.image_refusal(model, mime):
        raise BadRequest(f"'{where}': {refusal}", param=where)
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def tool_params(body: dict) -> dict:
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and
            isinstance(t["function"].get("name"), str) for t in tools):
        raise BadRequest("'tools' must be a list of {type: function, function: {name, "
                         "description, parameters}}", param="tools")
    return {"tools": [dict(t, type=t.get("type") or "function") for t in tools]}


# --- replies ---------------------------------------------------------------------------------

def done_reason(run, seen) -> str:
    if run.status == CANCELLED:
        return "cancelled"
    return "length" if seen.transcript.finish_reason == "length" else "stop"


def counters(run) -> dict:
    """The last line's counts and durations (ns): waiting for a slot or a load, reading the
    prompt (to the first token), and generating."""
    now = time.monotonic()
    sent = run.upstream_at or run.started
    first = run.first_token_at or now
    usage = run.usage
    return {"total_duration": _ns(now - run.started), "load_duration": _ns(sent - run.started),
            "prompt_eval_count": usage.input_tokens if usage else 0,
            "prompt_eval_duration": _ns(first - sent),
            "eval_count": usage.output_tokens if usage else 0,
            "eval_duration": _ns(now - first)}


def _ns(seconds: float) -> int:
    return max(int(seconds * 1e9), 0)


def tool_calls(transcript) -> list[dict]:
    """The run's tool calls with their arguments as objects, as Ollama sends them."""
    calls = []
    for index, call in sorted(transcript.tool_calls.items()):
        text = call["function"]["arguments"] or "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):      # kept, not lost: the model's own words
            arguments = {"arguments": text}
        calls.append({"id": call["id"] or f"call_{index}", "function": {
            "index": index, "name": call["function"]["name"], "arguments": arguments}})
    return calls


class ChatLines(StreamRenderer):
    """`/api/chat`'s NDJSON: a line per piece of text or thinking, the tool calls once they
    are whole, then the last line with the counts; `whole()` is the same as one object."""

    content_type = "application/x-ndjson"

    def __init__(self, run, name: str, hide_thinking: bool) -> None:
        self.run, self.name, self.hide_thinking = run, name, hide_thinking
        self.seen = Seen(run, fold=True)

    def ping(self) -> bytes:
        return b""   # NDJSON has no comment line; a silent client is still polled

    @staticmethod
    def piece(name: str, text: str, thinking: str | None = None, **extra) -> dict:
        message = {"role": "assistant", "content": text, **extra}
        if thinking:
            message["thinking"] = thinking
        return {"model": name, "created_at": utc_text(digits=6), "message": message, "done": False}

    def render(self, event) -> bytes:
        self.seen.add(event)
        kind = event.kind
        if kind == "delta" and event.text:
            return ndjson(self.piece(self.name, event.text))
        if kind == "reasoning" and event.text and not self.hide_thinking:
            return ndjson(self.piece(self.name, "", thinking=event.text))
        if kind == "error":
            return ndjson({"error": event.message})
        if kind == "done" and event.status != FAILED:
            calls = tool_calls(self.seen.transcript)
            head = ndjson(self.piece(self.name, "", tool_calls=calls)) if calls else b""
            return head + ndjson(self.last(self.piece(self.name, "")))
        return b""

    def last(self, line: dict) -> dict:
        return dict(line, done=True, done_reason=done_reason(self.run, self.seen),
                    **counters(self.run))

    def whole(self, run) -> dict:
        if run.status == FAILED:
            raise run.failure()
        transcript = run.transcript
        self.seen.transcript = transcript
        extra = {"tool_calls": tool_calls(transcript)} if transcript.tool_calls else {}
        thinking = None if self.hide_thinking else transcript.reasoning
        return self.last(self.piece(self.name, transcript.text, thinking, **extra))


class GenerateLines(ChatLines):
    """`/api/generate`'s: `response` (and `thinking`) in place of a message."""

    @staticmethod
    def piece(name: str, text: str, thinking: str | None = None, **extra) -> dict:
        line = {"model": name, "created_at": utc_text(digits=6), "response": text, "done": False}
        if thinking:
            line["thinking"] = thinking
        return line


# --- embeddings ------------------------------------------------------------------------------

def embed(request) -> JSONResponse:
    hub = request.hub
    body, model = known_request(request, messages=False)
    given = body.get("input", "")
    texts = ([given] if given else []) if isinstance(given, str) else given
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or a list of strings", param="input")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise BadRequest("'dimensions' must be a whole number of at least 1",
                         param="dimensions")
    started = time.monotonic()
    vectors, run = vectors_of(hub, model, texts, dimensions)
    return JSONResponse({"model": model, "embeddings": vectors,
                         "total_duration": _ns(time.monotonic() - started),
                         "load_duration": 0,
                         "prompt_eval_count": run.usage.input_tokens if run and run.usage else 0})


def embeddings(request) -> JSONResponse:
    """The older single-text endpoint: `prompt` in, one `embedding` out."""
    hub = request.hub
    body, model = known_request(request, messages=False)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string", param="prompt")
    vectors, _ = vectors_of(hub, model, [prompt] if prompt else [], None)
    return JSONResponse({"embedding": vectors[0] if vectors else []})


def vectors_of(hub, model: str, texts: list, dimensions: int | None) -> tuple[list, Run | None]:
    if not texts:
        return [], None
    body: dict[str, Any] = {"model": model, "input": texts}
    if dimensions:
        body["dimensions"] = dimensions
    reply, run = hub.engine.embed(model, body)
    data = sorted((d for d in reply.get("data") or () if isinstance(d, dict)),
                  key=lambda d: d.get("index", 0))
    return [encoded(d.get("embedding"), "float") for d in data], run


# --- model management ------------------------------------------------------------------------

def pull(request):
    """A model an upstream has is pulled already; another is downloaded by an upstream
    that can (LM Studio 0.4+), its progress streamed as Ollama's pull lines."""
    hub = request.hub
    body = request.json_object()
    name = model_field(body)
    if not hub.engine.unknown_model(name):
        return pulled(body)
    progress = hub.engine.pull(name)
    first = next_progress(progress, name)      # a refusal still gets its own status
    if not body.get("stream", True):
        for _ in progress:
            pass
        return JSONResponse({"status": "success"})
    return LinesResponse(pull_lines(first, progress, name))


def next_progress(progress, name: str) -> dict:
    try:
        return next(progress)
    except HubError as error:
        if error.code != "not_implemented":
            raise
        raise HubError(f'model "{name}" is not on any model server behind llmhub, and '
                       "none of them downloads models: get it with your model server, and "
                       "it is listed here", status=404, code="model_not_found",
                       param="model") from None


def pull_lines(first: dict, progress, name: str):
    """Ollama's pull lines: the manifest, the download's progress, success; a failure on
    the way is the last line, {"error": ...}."""
    yield ndjson({"status": "pulling manifest"})
    try:
        for step in itertools.chain([first], progress):
            line = {"status": f"pulling {name}", "digest": f"sha256:{digest(name)}"}
            line.update({k: step[k] for k in ("total", "completed") if step.get(k)})
            yield ndjson(line)
    except HubError as error:
        yield ndjson({"error": error.message})
        return
    yield ndjson({"status": "success"})


def pulled(body: dict):
    lines = [{"status": "pulling manifest"}, {"status": "success"}]
    if body.get("stream", True):
        return BytesResponse(b"".join(ndjson(line) for line in lines), "application/x-ndjson")
    return JSONResponse(lines[-1])


def unsupported(request, **_):
    """push, create, copy, delete, blobs: what a model server's own tools do."""
    raise HubError(f"{request.method} {request.path}: llmhub keeps no model files (it does "
                   "not create, copy, push or delete models); do that with your model "
                   "server (LM Studio: `lms`), and llmhub lists what it has", status=501,
                   code="not_implemented")
