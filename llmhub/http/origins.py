"""Which web pages and which host names may reach the hub (DESIGN §10).

Any page a user opens can send requests to 127.0.0.1: a `text/plain` POST needs no CORS
preflight, so CORS response headers alone stop nothing. Two checks run before a request is
routed, and each refuses with 403:

- `Origin`, sent by browsers: it must match `[server] cors_origins` (default: pages served
  from loopback, on any port) or be the hub's own page (the origin of the Host it was
  reached by). Clients that are not browsers send no Origin and pass.
- `Host`: it must be a loopback name or address, the address the hub is bound to, or match
  `[server] allowed_hosts`. This stops DNS rebinding, where evil.example resolves to
  127.0.0.1 and its page then reads the hub as same-origin. An IP literal cannot be
  rebound, so when the hub is bound to every address (0.0.0.0 or ::) any IP literal passes.

Patterns: `*` allows everything; an origin pattern may end in `:*` for any port, or be
`scheme://*` for every origin of a scheme; a host pattern may start with `*.` for any
subdomain. The default also lets browser extensions in (as Ollama does: Page Assist and
its kind are Ollama clients): an extension is installed by the user, and no page they
visit can send an extension's Origin.
"""

import ipaddress

from llmhub.config import ServerConfig

__all__ = ["OriginPolicy", "split_host", "startup_warnings"]

WILDCARD_BINDS = ("", "0.0.0.0", "::")


def split_host(authority: str) -> tuple[str, str]:
    """'Host' as (lower-cased name without brackets, port or '')."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        name, _, rest = authority[1:].partition("]")
        return name, rest.removeprefix(":")
    name, colon, port = authority.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, port
    return authority, ""


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


class OriginPolicy:
    def __init__(self, server_config: ServerConfig) -> None:
        self.origins = tuple(o.rstrip("/").lower() for o in server_config.cors_origins)
        self.any_origin = "*" in self.origins
        self.hosts = tuple(h.lower() for h in server_config.allowed_hosts)
        self.bound = split_host(server_config.host)[0]
        self._seen: dict[str, bool] = {}   # every request asks; few Hosts are ever sent

    def host_allowed(self, authority: str | None) -> bool:
        if authority is None:          # HTTP/1.0 without Host: no browser sends that
            return True
        allowed = self._seen.get(authority)
        if allowed is None:
            allowed = self._host_allowed(authority)
            if len(self._seen) < 256:
                self._seen[authority] = allowed
        return allowed

    def _host_allowed(self, authority: str) -> bool:
        name, _ = split_host(authority)
        if not name or any(c in name for c in " /\\@"):
            return False
        address = _ip(name)
        if name == "localhost" or name.endswith(".localhost") or \
                (address is not None and address.is_loopback):
            return True
        if name == self.bound or (address is not None and self.bound in WILDCARD_BINDS):
            return True
        return any(_host_matches(name, pattern) for pattern in self.hosts)

    def origin_allowed(self, origin: str | None, authority: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        origin = origin.rstrip("/").lower()
        if authority and origin in (f"http://{authority.lower()}",
                                    f"https://{authority.lower()}"):
            return True                # the hub's own page, however it was reached
        return any(_origin_matches(origin, pattern) for pattern in self.origins)

    def allow_origin_header(self, origin: str) -> str:
        """The Access-Control-Allow-Origin value for an allowed origin."""
        return "*" if self.any_origin else origin


def _host_matches(name: str, pattern: str) -> bool:
    if pattern == "*" or pattern == name:
        return True
    return pattern.startswith("*.") and name.endswith(pattern[1:])


def _origin_matches(origin: str, pattern: str) -> bool:
    if pattern == origin:
        return True
    if pattern.endswith("://*"):          # every origin of a scheme: chrome-extension://*
        return origin.startswith(pattern[:-1])
    if pattern.endswith(":*"):
        base = pattern[:-2]
        if origin == base:
            return True
        prefix, colon, port = origin.rpartition(":")
        return bool(colon) and port.isdigit() and prefix == base
    return False


def startup_warnings(server_config: ServerConfig) -> list[str]:
    if "*" in server_config.cors_origins and not server_config.api_keys:
        return ["cors_origins = * and no api_keys: any web page you open can read your "
                "threads and run your models through this hub"]
    return []
