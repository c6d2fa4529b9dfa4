"""llama.cpp's `llama-server` (`kind = llamacpp`) and vLLM (`kind = vllm`): OpenAI-compatible
servers that also say whether they are ready.

Both answer `GET /health` (at the root, beside `/v1`): 200 when ready; llama.cpp answers
503 `{"error": {"message": "Loading model"}}` while it loads its model. llama.cpp's
`GET /props` gives `total_slots`, the requests it serves at once (`--parallel`), which is
each of its models' capacity. Neither loads or unloads models on request.
"""

from llmhub.errors import UpstreamError
from llmhub.upstream.openai import OpenAICompatible

__all__ = ["LlamaCpp", "VLLM", "Loading"]


class Loading(UpstreamError):
    """The server is up but still loading its model: not ready, not down."""
    status, code = 503, "model_loading"


class _WithHealth(OpenAICompatible):
    def check(self, timeout: float) -> dict:
        root = self.prefix.removesuffix("/v1")
        try:
            self.get_json(root + "/health", timeout)
        except UpstreamError as exc:
            if exc.upstream_status == 503 and "loading" in exc.message.lower():
                raise Loading(exc.message, where=self.label, upstream_status=503,
                              reason="loading") from None
            raise
        facts = super().check(timeout)
        slots = self.slots(root, timeout)
        facts["slots"] = dict.fromkeys(facts["models"], slots) if slots else {}
        return facts

    def slots(self, root: str, timeout: float) -> int | None:
        return None


class LlamaCpp(_WithHealth):
    kind = "llamacpp"
    label = "llama.cpp"

    def slots(self, root: str, timeout: float) -> int | None:
        try:
            total = self.get_json(root + "/props", timeout).get("total_slots")
        except UpstreamError:
            return None
        return total if type(total) is int and total > 0 else None


class VLLM(_WithHealth):
    kind = "vllm"
    label = "vLLM"
