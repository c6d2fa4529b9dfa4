"""Upstream model servers: one module per kind, all with the same small surface.

An upstream has `name`, `kind`, `label`, `base_url`, `provider`, `gate` (its FIFO admission
for `max_concurrent`), `chat(body) -> call`, `list_models()`, `probe()` (reachable or not,
for /health) and `check()` (what a health probe learns: models, loaded, slots). A call has
`open()` (raises UpstreamError unless accepted), `chunks()` (yields chat.completion.chunk
dicts), `abort()` (any thread) and `close()` (the reading thread). Only this package does
network I/O.

Kind detection: an upstream of `kind = auto` (the default; `--kind` or
`[upstream] kind` names one) is asked once, at start, what it is: llama.cpp
answers `GET /props` (with `total_slots`), LM Studio `GET /api/v1/models` (or
`/api/v0/models` before 0.4), vLLM `GET /version`. One log line says what was found; a
server that answers none of them, or is not reachable then, keeps the default `lmstudio`
(set the kind to be sure). The kind is not changed later, by probes.
"""

import dataclasses
import logging
from typing import Callable
from urllib.parse import urlsplit

from llmhub.config import Config, UpstreamConfig
from llmhub.errors import UpstreamError
from llmhub.upstream.anthropic import Anthropic
from llmhub.upstream.base import Upstream
from llmhub.upstream.exchange import Aborted
from llmhub.upstream.llamacpp import VLLM, LlamaCpp
from llmhub.upstream.lmstudio import LMStudio
from llmhub.upstream.mock import Mock
from llmhub.upstream.openai import OpenAICompatible

__all__ = ["make_upstream", "make_upstreams", "Upstream", "UpstreamError", "Aborted"]

KINDS: dict[str, Callable[[UpstreamConfig], Upstream]] = {
    "lmstudio": LMStudio, "openai": OpenAICompatible, "llamacpp": LlamaCpp, "vllm": VLLM,
    "anthropic": Anthropic}


def make_upstream(upstream: UpstreamConfig, config: Config) -> Upstream:
    if upstream.kind == "mock":
        return Mock(upstream, config.mock, config.models)
    return KINDS[upstream.kind](upstream)


log = logging.getLogger("llmhub.upstream")

# what each kind answers that the others do not: (kind, path, a key its JSON reply has)
SIGNS = (("llamacpp", "/props", "total_slots"), ("lmstudio", "/api/v1/models", "models"),
         ("lmstudio", "/api/v0/models", "data"), ("vllm", "/version", "version"))


def make_upstreams(config: Config) -> dict[str, Upstream]:
    """Every configured upstream by name; the first is the default. A kind not given is
    detected first (detect_kind)."""
    return {u.name: make_upstream(with_detected_kind(u), config) for u in config.upstreams}


def with_detected_kind(upstream: UpstreamConfig) -> UpstreamConfig:
    """The upstream with `kind = auto` made a real kind: detected, else `lmstudio`."""
    if upstream.kind != "auto":
        return upstream
    kind = detect_kind(upstream)
    if kind is None:
        log.info("upstream %s (%s): kind not detected; taken as lmstudio ([upstream] kind "
                 "or --kind sets it)", upstream.name, upstream.base_url)
        return dataclasses.replace(upstream, kind="lmstudio")
    log.info("upstream %s (%s): detected kind %s ([upstream] kind or --kind sets it)",
             upstream.name, upstream.base_url, kind)
    return dataclasses.replace(upstream, kind=kind)


def detect_kind(upstream: UpstreamConfig, timeout: float = 2.0) -> str | None:
    """What the server at the upstream's address says it is; None if it does not say."""
    probe = OpenAICompatible(upstream)
    root = urlsplit(upstream.base_url).path.rstrip("/").removesuffix("/v1")
    for kind, path, sign in SIGNS:
        try:
            if sign in probe.get_json(root + path, min(timeout,
                                                      upstream.connect_timeout_seconds)):
                return kind
        except UpstreamError as exc:
            if exc.reason in ("unreachable", "timeout"):
                return None              # nobody there now: no point asking the rest
        except Exception:                # a reply in no shape we know: not this kind
            continue
    return None
