"""What the hub knows of each model server: its health, its breaker, its models and slots.

Rules (docs/configuration.md, "Several model machines"):
- Each upstream is a `Box` with a state: healthy, loading, busy (every slot in use),
  down, or auth (it refused the hub's key).
- Failures count, from requests and from probes alike: a refused or timed-out connection,
  a 5xx, a stream cut before it began. After `[health] failures` in a row the breaker opens:
  the box is skipped for `cooldown_seconds`; then one trial (a request, or the next probe)
  is let through (half-open); its success closes the breaker, its failure reopens it.
  A 401 or 403 opens it at once (state auth): no retry will fix a key.
- A 429 or 503 with `Retry-After` keeps requests away from the box until then.
- A client's bad request (other 4xx) says nothing about the box, and neither does a 501:
  the server does not serve that endpoint (llama.cpp's /v1/embeddings without
  --embeddings), which no retry and no cooldown will change, and its chat still works.
- The `Prober` thread asks every box, each `interval_seconds`, what it has: the models it
  lists, which are loaded, how many requests each serves at once (health.check()); and it
  runs the lifecycle's idle unloads. Probes run beside requests and never hold one up.
"""

import logging
import threading

from llmhub.config import HealthConfig
from llmhub.errors import UpstreamError
from llmhub.upstream.base import Upstream

__all__ = ["Box", "Prober", "HEALTHY", "LOADING", "BUSY", "DOWN", "AUTH"]

log = logging.getLogger("llmhub.health")

HEALTHY, LOADING, BUSY, DOWN, AUTH = "healthy", "loading", "busy", "down", "auth"
BROKEN = ("unreachable", "timeout", "disconnected", "garbage")   # UpstreamError reasons


class Box:
    """One upstream's health and what it last said of its models. Guarded by the router's
    lock (routing.Router), which is the only writer besides the prober's `observe`."""

    def __init__(self, upstream: Upstream, health: HealthConfig, tracked: bool = True) -> None:
        self.upstream = upstream
        self.tracked = tracked           # False: a client-named provider, never skipped
        self.threshold = health.failures
        self.cooldown = health.cooldown_seconds
        self.state = HEALTHY
        self.failures = 0                # in a row
        self.open_until = 0.0            # the breaker's cooldown ends
        self.trial = False               # the half-open trial is under way
        self.retry_at = 0.0              # Retry-After: nothing before this
        self.detail: str | None = None   # why it is not healthy
        self.models: set | None = None   # what it lists; None until probed
        self.loaded: set | None = None   # which of them are loaded; None: not said
        self.slots: dict = {}            # model → requests served at once, where it says
        self.contexts: dict = {}         # model → the context length it is loaded with
        self.stand_in: str | None = None  # what an alias whose model it lacks uses instead
        self.checked_at: float | None = None
        self.cooldowns = 0

    # -- may a request go there? -------------------------------------------------------------
    def blocked(self, now: float) -> str | None:
        """Why no request should go here now, or None."""
        if now < self.retry_at:
            return "retry_after"
        if self.state in (DOWN, AUTH):
            if now < self.open_until:
                return "cooldown"
            if self.trial:
                return "trial"
        if self.state == LOADING:
            return "loading"
        return None

    def free_at(self) -> float:
        """When it may be asked again."""
        return max(self.retry_at, self.open_until)

    def begin(self, now: float) -> None:
        """A request is sent: past a cooldown, it is the half-open trial."""
        if self.state in (DOWN, AUTH) and now >= self.open_until:
            self.trial = True

    # -- what requests and probes found ------------------------------------------------------
    def succeeded(self) -> None:
        self.failures, self.trial, self.detail = 0, False, None
        self.state = HEALTHY

    def failed(self, error: UpstreamError, now: float) -> None:
        """Count what a failed request or probe says of the box."""
        if not self.tracked:
            return
        wait = getattr(error, "retry_after", None)
        if wait is not None and error.upstream_status in (429, 503):
            self.retry_at = now + wait
        if error.upstream_status in (401, 403):
            self._open(AUTH, error.message, now)
        elif error.reason == "loading":
            self.state, self.detail, self.trial = LOADING, error.message, False
        elif error.reason in BROKEN or (error.upstream_status or 0) >= 500 and \
                error.upstream_status != 501:    # 501: an endpoint it does not serve
                                                 # (llama.cpp's /v1/embeddings), not a fault
            self.failures += 1
            if self.trial or self.failures >= self.threshold:
                self._open(DOWN, error.message, now)
            else:
                self.detail = error.message
        elif self.trial or self.state == LOADING:
            self.succeeded()       # it answered, so it is up: the request was at fault

    def _open(self, state: str, detail: str, now: float) -> None:
        if not (self.state == state and now < self.open_until):
            self.cooldowns += 1
            log.warning("%s is %s (%s); skipped for %g s", self.upstream.name, state,
                        self.upstream.label, self.cooldown)
        self.state, self.detail, self.trial = state, detail, False
        self.open_until = now + self.cooldown

    def observe(self, facts: dict | None, error: UpstreamError | None, now: float) -> None:
        """A probe's outcome. During a cooldown a success is only noted: the breaker
        closes after its cooldown, on this or a request's trial."""
        self.checked_at = now
        if error is not None:
            self.failed(error, now)
            return
        assert facts is not None          # a probe gives its facts or its error
        self.models = set(facts["models"])
        self.loaded = facts["loaded"]
        self.slots = facts["slots"]
        self.contexts = facts.get("contexts") or {}
        self.stand_in = stand_in(facts)
        if self.state in (DOWN, AUTH) and now < self.open_until:
            return
        self.succeeded()

    def view(self, now: float) -> dict:
        return {"state": self.state, "detail": self.detail, "failures": self.failures,
                "cooldown_seconds_left": round(max(0.0, self.open_until - now), 3)
                if self.state in (DOWN, AUTH) else 0.0,
                "retry_after_seconds_left": round(max(0.0, self.retry_at - now), 3),
                "cooldowns": self.cooldowns,
                "models": sorted(self.models) if self.models is not None else None,
                "loaded": sorted(self.loaded) if self.loaded is not None else None,
                "slots": dict(self.slots),
                "checked_seconds_ago": round(now - self.checked_at, 3)
                if self.checked_at is not None else None}


def stand_in(facts: dict) -> str | None:
    """The chat model a box serves to an alias ([models] stand_in) whose model it does not
    list: the first it has loaded; where it does not say what is loaded (it serves what it
    lists: llama.cpp, OpenAI-compatible servers), the first it lists; where it says none
    is, none (a stand-in must not load a model nobody asked for)."""
    embeddings = facts.get("embeddings") or ()      # where the server says (LM Studio);
    chat = [m for m in facts["models"]              # else by name, as they are all named
            if m not in embeddings and "embed" not in m.lower()]
    loaded = facts.get("resident", facts["loaded"])     # in memory, whoever loaded it
    return next((m for m in chat if loaded is None or m in loaded), None)


class Prober:
    """Asks every box what it has, every `interval` seconds, on one daemon thread."""

    def __init__(self, router, interval: float, timeout: float, ticks=()) -> None:
        self.router = router
        self.interval, self.timeout = interval, timeout
        self.ticks = list(ticks)          # run after each round (idle unloads)
        self.rounds = 0
        self._stop = threading.Event()
        self._round = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="health probes",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_rounds(self, count: int, timeout: float = 10.0) -> bool:
        """Block until `count` rounds are done (tests synchronise on this)."""
        with self._round:
            return self._round.wait_for(lambda: self.rounds >= count, timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.probe_all()
            for tick in self.ticks:
                try:
                    tick()
                except Exception:
                    log.exception("a periodic task failed")
            with self._round:
                self.rounds += 1
                self._round.notify_all()
            self._stop.wait(self.interval)

    def probe_all(self) -> None:
        for box in self.router.boxes.values():
            if box.upstream.kind == "mock" or self._stop.is_set():
                continue
            try:
                facts, error = box.upstream.check(self.timeout), None
            except UpstreamError as exc:
                facts, error = None, exc
            except Exception as exc:          # a server that answers nonsense is down
                facts, error = None, UpstreamError(f"{box.upstream.label}: {exc!r}",
                                                   reason="garbage")
            self.router.observe(box, facts, error)
