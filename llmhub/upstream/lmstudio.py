"""LM Studio (`kind = lmstudio`): the OpenAI-compatible API, LM Studio's quirks, and its own
REST API for model management (../shared/reference/lmstudio.md §2–§5).

- LM Studio ignores `max_completion_tokens` (§1.2), so it is sent as `max_tokens`.
- It refuses `response_format: json_object` ("must be 'json_schema' or 'text'"), so JSON mode
  is sent as a schema that admits any object.
- `OPENAI_BASE_URL` may be given with or without `/v1`.
- Models are read from `/api/v1/models` (0.4+), else `/api/v0/models`, else `/v1/models`;
  the answers are normalised to one entry shape (`model_entry`).
- It refuses WebP images (`image_refusal`, asked before a request is sent).
- Unknown routes answer HTTP 200 with `{"error": "Unexpected endpoint…"}` (§1.6): that is
  how an LM Studio older than 0.4 (no `/api/v1`) shows itself.
"""

import json
import re
from typing import Any
from urllib.parse import quote

from llmhub.errors import HubError, UpstreamError
from llmhub.upstream.exchange import Exchange, Timeouts
from llmhub.upstream.openai import OpenAICompatible, error_message, http_error

__all__ = ["LMStudio", "NoNativeAPI", "model_entry"]

INSTANCE = re.compile(r":\d+$")
ANY_OBJECT = {"type": "json_schema",
              "json_schema": {"name": "json_object", "schema": {"type": "object"}}}


class NoNativeAPI(HubError):
    """This LM Studio has no /api/v1 (it is older than 0.4): it cannot load or unload."""
    status, code = 501, "not_implemented"


class LMStudio(OpenAICompatible):
    kind = "lmstudio"
    label = "LM Studio"
    # No tokenizer over REST: /tokenize and /apply-template answer 200 "Unexpected
    # endpoint" (§1.6), and /v1/messages/count_tokens too (#2055); its SDKs count tokens
    # over their websocket API only. So the hub estimates, and says so.
    tokenizer = False
    accepts_token_ids = False   # embeddings of token ids: refused, with a confusing message

    @staticmethod
    def normalise_url(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    def prepare(self, body: dict) -> dict:
        body = dict(body)
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body.pop("max_completion_tokens"))
        if (body.get("response_format") or {}).get("type") == "json_object":
            body["response_format"] = ANY_OBJECT
        return body

    @staticmethod
    def image_refusal(media_type: str) -> str | None:
        """Why LM Studio cannot take an image of this type: its OpenAI-compatible endpoint
        refuses WebP (lmstudio.md), so the hub says so before the upstream is asked."""
        if media_type == "image/webp":
            return "LM Studio's OpenAI-compatible endpoint refuses WebP images; send PNG or JPEG"
        return None

    # -- model management --------------------------------------------------------------------
    def native_models(self) -> tuple[list[dict], str]:
        """Every model LM Studio has, normalised, and which endpoint said so."""
        for path in ("/api/v1/models", "/api/v0/models"):
            try:
                listed = self.get_json(path)
            except UpstreamError as exc:
                if not _unknown_route(exc):
                    raise
                continue
            key = "models" if path == "/api/v1/models" else "data"
            return [model_entry(m, path) for m in listed.get(key) or ()], path
        return [model_entry(m, "/v1/models") for m in self.list_models()], "/v1/models"

    def check(self, timeout: float) -> dict:
        """LM Studio 0.4+ says which models are loaded, which are embedding models, and
        each instance's parallel slots (`loaded_instances[].config.parallel`). Older ones
        say `state: loaded` in /api/v0/models: that is `resident` only, since the hub cannot
        load through them (`loaded` None leaves it to LM Studio's own load on first use).
        The oldest only list models."""
        for path in ("/api/v1/models", "/api/v0/models"):
            try:
                listed = self.get_json(path, timeout)
            except UpstreamError as exc:
                if not _unknown_route(exc):
                    raise
                continue
            native = path == "/api/v1/models"
            entries = [model_entry(m, path) for m in listed.get("models" if native else "data")
                       or ()]
            keys = [e["key"] if native or not e["loaded"] else INSTANCE.sub("", e["key"])
                    for e in entries]           # v0 lists a second instance as key:2
            resident = {k for k, e in zip(keys, entries) if e["loaded"]}
            return {"models": list(dict.fromkeys(keys)), "loaded": resident if native else None,
                    "resident": resident,
                    "embeddings": {k for k, e in zip(keys, entries) if e["type"] == "embedding"},
                    "slots": {e["key"]: e["parallel"] for e in entries if e["parallel"]},
                    "contexts": {k: e["context_length"] for k, e in zip(keys, entries)
                                 if e["context_length"] and native}}
        return super().check(timeout)

    def load(self, key: str, context_length: int | None, timeout: float) -> dict:
        body: dict[str, Any] = {"model": key}
        if context_length:   # and say what was applied: LM Studio may fit it smaller
            body.update(context_length=context_length, echo_load_config=True)
        return self._native_post("/api/v1/models/load", body, timeout)

    def unload(self, instance_id: str) -> None:
        self._native_post("/api/v1/models/unload", {"instance_id": instance_id}, 60)

    def download(self, key: str) -> dict:
        """Start downloading a model (LM Studio 0.4+): its job, to be polled."""
        return self._native_post("/api/v1/models/download", {"model": key}, 60)

    def download_status(self, job_id: str) -> dict:
        return self.get_json(f"/api/v1/models/download/status/{quote(job_id, safe='')}")

    def _native_post(self, path: str, body: dict, timeout: float) -> dict:
        timeouts = Timeouts(self.timeouts.connect, timeout, timeout, timeout)
        exchange = Exchange(self.base_url, timeouts, self.label, self.pool)
        try:
            response = exchange.send("POST", path, json.dumps(body).encode(), self.headers())
            raw = exchange.read_all(self.config.max_reply_bytes)
            exchange.finish()
        finally:
            exchange.close()
        message = error_message(raw)
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if response.status >= 400 or not isinstance(reply, dict) or "error" in reply:
            error = http_error(response.status, message, self.label, secrets=self.secrets)
            if _unknown_route(error):
                raise NoNativeAPI("This LM Studio has no /api/v1 (it is older than 0.4), so "
                                  "the hub cannot load or unload models. Load one with "
                                  "`lms load <model>`, or let LM Studio load it on first use.")
            raise error
        return reply


def _unknown_route(error: UpstreamError) -> bool:
    """LM Studio's answer to a path it does not serve; a 404 about a model (a download of
    one its catalog lacks) is about the model."""
    return "Unexpected endpoint" in error.message or \
        (error.status in (404, 405) and error.code != "model_not_found")


def model_entry(model: dict, source: str) -> dict:
    """One model, whichever endpoint described it: key, type, vision, instances, context."""
    if source == "/api/v1/models":
        vision = bool((model.get("capabilities") or {}).get("vision"))
        instances = model.get("loaded_instances") or []
        kind = "embedding" if model.get("type") == "embedding" else "vlm" if vision else "llm"
        configs = [i.get("config") or {} for i in instances]
        context = next((c.get("context_length") for c in configs), None)
        parallel = [c["parallel"] for c in configs if type(c.get("parallel")) is int]
        capabilities = model.get("capabilities") or {}
        quantization = model.get("quantization") or {}
        return {"key": model["key"], "type": kind, "vision": vision,
                "loaded": bool(instances), "instances": [i["id"] for i in instances],
                "context_length": context, "parallel": sum(parallel) or None,
                "max_context_length": model.get("max_context_length"),
                "tools": capabilities.get("trained_for_tool_use"),
                "reasoning": bool(capabilities.get("reasoning")) or None,
                "architecture": model.get("architecture"),
                "quantization": quantization.get("name") if isinstance(quantization, dict)
                else None, "parameters": model.get("params_string"),
                "format": model.get("format"), "size_bytes": model.get("size_bytes")}
    if source == "/api/v0/models":
        given = model.get("type")
        kind = "embedding" if given == "embeddings" else given or "llm"
        loaded = model.get("state") == "loaded"
        return {"key": model["id"], "type": kind, "vision": kind == "vlm", "loaded": loaded,
                "instances": [model["id"]] if loaded else [],
                "context_length": model.get("loaded_context_length"), "parallel": None,
                "max_context_length": model.get("max_context_length"),
                "architecture": model.get("arch"), "quantization": model.get("quantization"),
                "format": model.get("compatibility_type")}
    return {"key": model["id"], "type": "llm", "vision": False, "loaded": None,
            "instances": [], "context_length": None, "parallel": None,
            "max_context_length": None}
