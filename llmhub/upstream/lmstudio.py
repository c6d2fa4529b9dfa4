"""LM Studio (`kind = lmstudio`): the OpenAI-compatible API plus LM Studio's quirks.

See ../shared/reference/lmstudio.md. LM Studio ignores `max_completion_tokens` (§1.2), so it
is sent as `max_tokens`; `OPENAI_BASE_URL` may be given with or without `/v1`.
"""

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
        if "max_completion_tokens" in body:
            body = dict(body)
            limit = body.pop("max_completion_tokens")
            body.setdefault("max_tokens", limit)
        return body
