"""Upstreams a client names itself (the sessions dialect's `api_base_url`).

Rule: a request is never sent to an address that is not on the allow-list: the configured
upstreams, the seed's four providers, `[providers] allowed` (OpenAI-compatible) and
`[providers] anthropic` (Messages API). Anything else is a 403 naming the setting to change.
Which API a URL speaks is said, not guessed from its host name. Each allowed base URL is
built into an upstream once, so its keep-alive pool is shared; the client's key travels per
request and is never stored.
"""

import threading
from dataclasses import replace
from urllib.parse import urlsplit

from llmhub.config import Config
from llmhub.errors import Forbidden
from llmhub.upstream import make_upstream
from llmhub.upstream.base import Upstream

__all__ = ["Providers", "normalise"]

# nash-llm-server's README: OpenAI, Anthropic, Helicone OpenAI, Helicone Anthropic
SEED_OPENAI = ("https://api.openai.com/v1", "https://oai.helicone.ai/v1")
SEED_ANTHROPIC = ("https://api.anthropic.com", "https://anthropic.helicone.ai")


def normalise(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}{parts.path.rstrip('/')}"


class Providers:
    def __init__(self, config: Config, upstreams: dict[str, Upstream]) -> None:
        self.config = config
        self.configured = {normalise(u.base_url): u for u in upstreams.values()
                           if u.kind != "mock"}
        self.anthropic = {normalise(u) for u in SEED_ANTHROPIC + config.providers.anthropic}
        self.allowed = set(self.configured) | self.anthropic | \
            {normalise(u) for u in SEED_OPENAI + config.providers.allowed}
        self._built: dict[str, Upstream] = {}
        self._lock = threading.Lock()

    def get(self, base_url: str) -> Upstream:
        """The upstream for an allowed base URL; 403 for anything else."""
        key = normalise(base_url)
        if key in self.configured:
            return self.configured[key]
        if key not in self.allowed:
            raise Forbidden(f"api_base_url {base_url!r} is not allowed: add it to [providers] "
                            "allowed (or [providers] anthropic) in config.ini",
                            param="api_base_url", code="provider_not_allowed")
        with self._lock:
            if key not in self._built:
                kind = "anthropic" if key in self.anthropic else "openai"
                settings = replace(self.config.upstream, name=f"provider:{key}", kind=kind,
                                   base_url=key, api_key="", max_concurrent=0)
                self._built[key] = make_upstream(settings, self.config)
            return self._built[key]
