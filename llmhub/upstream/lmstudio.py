"""LM Studio (`kind = lmstudio`): the OpenAI-compatible API plus LM Studio's quirks.

See ../shared/reference/lmstudio.md. LM Studio ignores `max_completion_tokens` (§1.2), so it
is sent as `max_tokens`; it refuses `response_format: json_object` ("must be 'json_schema' or
'text'"), so JSON mode is sent as a schema that admits any object; `OPENAI_BASE_URL` may be
given with or without `/v1`.
"""

ANY_OBJECT = {"type": "json_schema",
              "json_schema": {"name": "json_object", "schema": {"type": "object"}}}

from llmhub.upstream.openai import OpenAICompatible

__all__ = ["LMStudio"]


class LMStudio(OpenAICompatible):
    kind = "lmstudio"
    label = "LM Studio"

    @staticmethod
    def normalise_url(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    @property
    def root_url(self) -> str:
        """Where LM Studio's own REST API (/api/v1, /api/v0) lives."""
        return self.base_url[: -len("/v1")]

    def prepare(self, body: dict) -> dict:
        body = dict(body)
        if "max_completion_tokens" in body:
            body.setdefault("max_tokens", body.pop("max_completion_tokens"))
        if (body.get("response_format") or {}).get("type") == "json_object":
            body["response_format"] = ANY_OBJECT
        return body
