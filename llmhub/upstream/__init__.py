"""Upstream model servers: one module per kind, all with the same small surface.

An upstream has `name`, `kind`, `label`, `base_url`, `provider`, `gate` (its FIFO admission
for `max_concurrent`), `chat(body) -> call`, `list_models()`, `probe()` (reachable or not,
for /health) and `check()` (what a health probe learns: models, loaded, slots). A call has
`open()` (raises UpstreamError unless accepted), `chunks()` (yields chat.completion.chunk
dicts), `abort()` (any thread) and `close()` (the reading thread). Only this package does
network I/O.
"""

from llmhub.config import Config, UpstreamConfig
from llmhub.errors import UpstreamError
from llmhub.upstream.anthropic import Anthropic
from llmhub.upstream.http import Aborted
from llmhub.upstream.llamacpp import VLLM, LlamaCpp
from llmhub.upstream.lmstudio import LMStudio
from llmhub.upstream.mock import Mock
from llmhub.upstream.openai import OpenAICompatible

__all__ = ["make_upstream", "make_upstreams", "UpstreamError", "Aborted"]

KINDS = {"lmstudio": LMStudio, "openai": OpenAICompatible, "llamacpp": LlamaCpp,
         "vllm": VLLM, "anthropic": Anthropic}


def make_upstream(upstream: UpstreamConfig, config: Config):
    if upstream.kind == "mock":
        return Mock(upstream, config.mock, config.models)
    return KINDS[upstream.kind](upstream)


def make_upstreams(config: Config) -> dict:
    """Every configured upstream by name; the first is the default."""
    return {u.name: make_upstream(u, config) for u in config.upstreams}
