"""What the engine may ask of an upstream: the `Upstream` protocol every adapter in this
package meets, and the optional capabilities only some kinds have.

The adapters do not inherit from these: they are checked structurally (mypy, where
make_upstream returns one). The engine tests an optional capability with isinstance on the
runtime-checkable protocols, which look for the methods as `hasattr` did, but never per
request: such a check walks the protocol (~15 µs), so it is made once per upstream
(ModelManager.managed), or replaced by an attribute read (`speaks()`). A capability that is
a promise rather than a shape (`relays`: Anthropic has the shape of a relaying upstream and
none of those endpoints) is a flag, read by `relays()`.
"""

from typing import Iterator, Protocol, TypeGuard, runtime_checkable

from llmhub.config import UpstreamConfig
from llmhub.upstream.exchange import Pool, Timeouts
from llmhub.upstream.gate import Gate

__all__ = ["Call", "Upstream", "ManagesModels", "Downloads", "SpeaksNatively", "Relaying",
           "speaks", "relays"]


class Call(Protocol):
    """One streamed generation: open() raises UpstreamError unless the upstream accepted;
    events() yields llmhub.events as they come (read by one thread, which also closes);
    abort() may come from any thread."""

    def open(self) -> None: ...
    def events(self) -> Iterator: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class Upstream(Protocol):
    """One configured model server (or a client-named provider, engine/providers.py)."""
    kind: str               # lmstudio, openai, llamacpp, vllm, anthropic, mock
    label: str              # the server's kind as messages name it ("LM Studio")
    name: str               # "default", or NAME of [upstream:NAME]
    base_url: str           # without credentials: it is shown everywhere
    config: UpstreamConfig
    gate: Gate              # FIFO admission for its max_concurrent
    relays: bool            # endpoints beyond chat (rerank, audio…) may be relayed to it

    @property
    def provider(self) -> dict: ...

    def chat(self, body: dict, api_key: str | None = None,
             extra_headers: dict | None = None) -> Call: ...

    def list_models(self) -> list[dict]: ...

    def probe(self, timeout: float = ...) -> dict:
        """{reachable, latency_ms} or {reachable: False, error, reason}, for /health (reason:
        UpstreamError.reason, unreachable or timeout when nothing answered)."""

    def check(self, timeout: float) -> dict:
        """What a health probe learns: {models, loaded, slots[, contexts]}."""


@runtime_checkable
class ManagesModels(Protocol):
    """Loads and unloads models on request (LM Studio, the mock): engine/models.py."""

    def native_models(self) -> tuple[list[dict], str]: ...
    def load(self, key: str, context_length: int | None, timeout: float) -> dict: ...
    def unload(self, instance_id: str) -> None: ...


@runtime_checkable
class Downloads(Protocol):
    """Downloads models, as a job to poll (LM Studio 0.4+)."""

    def download(self, key: str) -> dict: ...
    def download_status(self, job_id: str) -> dict: ...


@runtime_checkable
class SpeaksNatively(Protocol):
    """Speaks a client dialect of its own (Anthropic's Messages), so such a client's request
    is relayed as it came, and counted by the server itself."""
    speaks: str

    def relay(self, body: dict, api_key: str | None = None,
              extra_headers: dict | None = None) -> Call: ...

    def count_native(self, body: dict, extra_headers: dict | None = None) -> int | None: ...


class Relaying(Upstream, Protocol):
    """What a relayed call (passthrough.PassCall) uses of its upstream."""
    prefix: str             # the base URL's path
    timeouts: Timeouts
    pool: Pool
    secrets: tuple          # its key and URL credentials, masked in what it echoes

    def headers(self, api_key: str | None = None) -> dict: ...


def speaks(upstream: Upstream, dialect: str) -> TypeGuard[SpeaksNatively]:
    """Does this upstream speak the client's own dialect? One attribute read, where an
    isinstance() against the protocol would cost ~15 µs on every such request."""
    return getattr(upstream, "speaks", None) == dialect


def relays(upstream: Upstream) -> TypeGuard[Relaying]:
    """May a relayed request go to this upstream? Its flag says so, not its shape."""
    return upstream.relays
