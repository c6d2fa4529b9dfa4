"""OpenAI's legacy text completions (`POST /v1/completions`), for completion models (`llm`'s
`completion: true`) and editors' fill-in-the-middle autocomplete (Continue).

Wire rules kept here: `prompt` (a string, strings, or token ids) and `suffix` go upstream
with every other field the hub does not read; a reply is a `text_completion` with
`choices[].text`, `logprobs` in the legacy parallel-list shape, and usage; a stream is
`text_completion` chunks relayed as the upstream sent them (one id for all), the usage
chunk when `stream_options.include_usage` asks, then `data: [DONE]`. It is a run like a
chat: cancellable by id, cancelled when the client leaves, pinged while silent. Errors are
OpenAI's shape.
"""

from llmhub.dialects.checks import check_int, check_number, check_type
from llmhub.dialects.embeddings import is_token_ids
from llmhub.dialects.openai import ChunkStream, error_body, openai_usage, upstream_params
from llmhub.engine.facade import ChatRequest, Prompt
from llmhub.engine.runs import FAILED
from llmhub.errors import BadRequest
from llmhub.transcript import finish_reason
from llmhub.wire import JSONResponse, RunResponse, StreamResponse, sse

__all__ = ["TITLE", "error_body", "create_completion", "TextStream"]

TITLE = "OpenAI"


def create_completion(request):
    hub = request.hub
    body = request.json_object()
    check_fields(body)
    params = upstream_params(body, ("model", "stream"), hub.config.openai.drop_fields)
    run = hub.engine.prepare(ChatRequest(
        Prompt(body.get("prompt")), model=body.get("model") or None, params=params,
        dialect="completions", run_id=request.run_id()))
    if body.get("stream"):
        options = body.get("stream_options") or {}
        return StreamResponse(run, TextStream(run, bool(options.get("include_usage"))))
    return RunResponse(run, lambda run: JSONResponse(completion_body(run)))


def check_fields(body: dict) -> None:
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("'prompt' is required", param="prompt", code="missing_field")
    if not (isinstance(prompt, str) or is_token_ids(prompt) or
            isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)):
        raise BadRequest("'prompt' must be a string, a list of strings, or token ids",
                         param="prompt", code="invalid_type")
    check_type(body, "model", str, "a string")
    check_type(body, "suffix", str, "a string")
    check_type(body, "stream", bool, "true or false")
    check_type(body, "echo", bool, "true or false")
    check_type(body, "stop", (str, list), "a string or a list of strings")
    check_type(body, "stream_options", dict, "an object")
    check_int(body, "max_tokens", -1)
    check_int(body, "logprobs", 0)
    check_int(body, "n", 1)
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)


def completion_id(run) -> str:
    return "cmpl-" + run.id.removeprefix("run_")


def completion_body(run) -> dict:
    if run.status == FAILED:
        raise run.failure()
    return {"id": completion_id(run), "object": "text_completion", "created": run.created,
            "model": run.transcript.model or run.model,
            "choices": [{"text": one.text, "index": index,
                         "logprobs": legacy_logprobs(one.logprobs),
                         "finish_reason": finish_reason(one.finish_reason, run.status)}
                        for index, one in run.transcript.choices()],
            "usage": openai_usage(run.usage, run)}


def legacy_logprobs(entries: list) -> dict | None:
    """Per-token entries back in the legacy shape: four parallel lists."""
    if not entries:
        return None
    return {"tokens": [e.get("token") for e in entries],
            "token_logprobs": [e.get("logprob") for e in entries],
            "top_logprobs": [e.get("top_logprobs") for e in entries],
            "text_offset": [e.get("text_offset") for e in entries]}


class TextStream(ChunkStream):
    """The chat stream's renderer, with text_completion chunks for upstreams that send none
    of their own (the mock)."""

    object = "text_completion"
    chunk_id = staticmethod(completion_id)

    def _build(self, event) -> bytes:
        if event.kind == "finish":
            return sse(self._chunk([text_choice("", event.reason)]))
        if event.kind == "delta" and event.text:
            return sse(self._chunk([text_choice(event.text)]))
        return b""

    def _cancelled(self) -> dict:
        return text_choice("", "cancelled")


def text_choice(text: str, finish_reason: str | None = None) -> dict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
