"""Who ran what: the key and route of the request in hand, and a bounded log of every run.

The server sets `current` (the key's name and the route) in the handler's thread before a
view runs; the registry stamps it on each run it creates, so a run always says whose it
was ("local" when no keys are configured, "-" for a public route without one). When a
run retires, `record(run)` is its one record: the request log stores it, and the access
log line is made from it, so the two never disagree.

The log is written in batches by one thread, every `flush_seconds`, so recording a run
costs a dict and an append in the request's own thread. Each record of a batch is stored on
its own (store.insert_requests): one the database refuses (a number SQLite cannot hold, say)
is logged and left out, and never takes the others of its batch with it. Retention is by
count and age (`[log] keep_count`, `keep_days`); nothing grows without bound.

A batch the store refuses (a full disk, a read-only file) stays pending and is written when
the store takes writes again; pending records are bounded by `max_pending`, and a record
pushed out past it is counted (`dropped`, /metrics llmhub_request_log_dropped_total), never
lost silently.
"""

import collections
import contextvars
import logging
import math
import threading
import time
from fnmatch import fnmatchcase

from llmhub.errors import Forbidden, HubError
from llmhub.redaction import redact

__all__ = ["current", "Caller", "Limits", "Budget", "RateLimited", "TokensSpent", "record",
           "RequestLog"]

log = logging.getLogger("llmhub.accounting")


class Caller(tuple):
    """(key name, route pattern, the key's KeyLimits) of the request being served.

    Keys are owners: every run and stored thing belongs to the key that made it. Without
    keys everything is `local`'s, and `local` sees all, as a single user should; with keys,
    an `admin` key sees and controls everything and a `user` key only its own. A public
    route reached without a key is `-`, which owns and sees nothing."""
    __slots__ = ()

    @property
    def key(self) -> str:
        return self[0]

    @property
    def route(self) -> str:
        return self[1]

    @property
    def limits(self):
        return self[2]

    @property
    def admin(self) -> bool:
        return self.key == LOCAL or self.limits is not None and self.limits.admin

    def sees(self, owner: str | None) -> bool:
        return self.admin or owner == self.key

    @property
    def only(self) -> str | None:
        """The owner a listing is narrowed to: None for an admin (everyone's)."""
        return None if self.admin else self.key

    def may_use(self, *names: str | None) -> bool:
        """Whether this key may use one of these names (the requested one, an alias, or
        what it resolved to); a key with no `models` may use any."""
        patterns = self.limits.models if self.limits is not None else ()
        return not patterns or any(fnmatchcase(n or "", p) for n in names for p in patterns)

    def check_model(self, *names: str | None) -> None:
        """403 naming `model` unless this key may use one of these names."""
        if not self.may_use(*names):
            raise Forbidden(f"Key {self.key!r} may not use model {names[0]!r} (allowed: "
                            f"{', '.join(self.limits.models)})", param="model",
                            code="model_not_allowed")

    def check_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"Key {self.key!r} may not {what}: that takes an admin key",
                            param="Authorization", code="admin_only")

    def check_manage(self, model: str | None) -> None:
        """403 unless this key may load and unload models (an admin, or `manage_models`),
        and this one (a key's `models`)."""
        if self.admin:
            return
        if self.limits is None or not self.limits.manage_models:
            raise Forbidden(f"Key {self.key!r} may not load or unload models ([key:"
                            f"{self.key}] manage_models)", param="Authorization",
                            code="model_management_not_allowed")
        if model is not None:
            self.check_model(model)


LOCAL = "local"     # the one owner when no keys are configured
PUBLIC = "-"        # a public route reached without a valid key while keys are set
current: contextvars.ContextVar = contextvars.ContextVar("caller",
                                                         default=Caller((LOCAL, "-", None)))


class Limits:
    """Each named key's [key:NAME] limits: routes and methods it may use, requests per
    minute and tokens per UTC day. Counts live in memory (a restart forgets them).

    What each counts (docs/api/hub.md, "The request log and usage"): `requests_per_minute` every HTTP request the key
    makes (a background run's creation, a poll, a refused one not), and each retry the hub
    makes on another target for it; `tokens_per_day` the input and output tokens of every
    run, however it ended, counted while it streams (`budget`), so a run is cut where the
    budget ends rather than after it. A key past its tokens may still read (GET) its
    records and usage."""

    def __init__(self, limits: dict) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._recent: dict[str, collections.deque] = {}   # key → request times, last minute
        self._tokens: dict[str, tuple[str, int]] = {}     # key → (UTC day, tokens spent)
        self._held: dict[str, int] = {}                   # key → tokens of its live runs

    def admit(self, key: str, method: str, path: str) -> None:
        """Refuse what the key may not do: 403 for a route or method, 429 (with
        Retry-After) past a rate."""
        limits = self.limits.get(key)
        if limits is None:
            return
        if limits.routes and not any(fnmatchcase(path, p) for p in limits.routes) or \
                limits.methods and method not in limits.methods:
            raise Forbidden(f"Key {key!r} may not {method} {path}", param="Authorization",
                            code="route_not_allowed")
        now = time.time()
        with self._lock:
            if limits.tokens_per_day and method == "POST" and \
                    self._spent(key, now) >= limits.tokens_per_day:   # reading spends none
                raise RateLimited(f"Key {key!r} has spent its {limits.tokens_per_day} tokens "
                                  "today", _until_midnight(now))
            if limits.requests_per_minute:
                recent = self._window(key, now)
                if len(recent) >= limits.requests_per_minute:
                    raise RateLimited(f"Key {key!r} may make {limits.requests_per_minute} "
                                      "requests a minute", recent[0] + 60 - now)
                recent.append(now)

    def count_request(self, key: str | None) -> None:
        """A request the hub makes for the key on its own (a retry): counted, not refused."""
        limits = self.limits.get(key)
        if key is not None and limits is not None and limits.requests_per_minute:
            with self._lock:
                self._window(key, time.time()).append(time.time())

    def _window(self, key: str, now: float) -> collections.deque:
        recent = self._recent.setdefault(key, collections.deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        return recent

    def budget(self, key: str, input_tokens: int) -> "Budget | None":
        """A run's share of its key's tokens_per_day, its input held from now on; None for
        a key without one. 429 if the input alone would cross what is left."""
        limits = self.limits.get(key)
        if limits is None or not limits.tokens_per_day:
            return None
        now = time.time()
        with self._lock:
            used = self._spent(key, now) + self._held.get(key, 0)
            if used + input_tokens > limits.tokens_per_day:
                raise TokensSpent(key, limits.tokens_per_day, used, input_tokens)
            self._held[key] = self._held.get(key, 0) + input_tokens
        return Budget(self, key, limits.tokens_per_day, input_tokens)

    def spend(self, key: str, tokens: int, budget: "Budget | None" = None) -> None:
        """A finished run's tokens, as its record counts them; what its budget held for it
        while it ran is let go in the same step, so nothing is counted twice or not at all."""
        if key not in self.limits:
            return
        with self._lock:
            if budget is not None:
                self._held[key] = self._held.get(key, 0) - budget.held
                budget.held, budget.settled = 0, True
            if tokens and tokens > 0:      # the counts are checked; a negative never refills
                self._tokens[key] = (_day(time.time()), self._spent(key, time.time()) + tokens)

    def _spent(self, key: str, now: float) -> int:
        day, tokens = self._tokens.get(key, ("", 0))
        return tokens if day == _day(now) else 0


class Budget:
    """One live run's share of its key's tokens_per_day: charged as the run streams; the
    run is over budget once its key's spent and held tokens pass the day's. Once the run's
    record has settled it (Limits.spend), a late charge holds nothing: a run can end inside
    its own token's charge (a driven stream's first token is written before it is charged,
    and a client gone in that write ends the run there), and what it held then would never
    be let go."""

    __slots__ = ("limits", "key", "cap", "held", "settled")

    def __init__(self, limits: Limits, key: str, cap: int, held: int) -> None:
        self.limits, self.key, self.cap, self.held = limits, key, cap, held
        self.settled = False

    def charge(self, tokens: int) -> bool:
        """Count `tokens` more; False once the key has crossed its budget, or the run's
        tokens were settled."""
        limits = self.limits
        with limits._lock:
            if self.settled:
                return False
            self.held += tokens
            limits._held[self.key] = limits._held.get(self.key, 0) + tokens
            used = limits._spent(self.key, time.time()) + limits._held[self.key]
        return used <= self.cap

    def spent(self) -> "TokensSpent":
        return TokensSpent(self.key, self.cap, self.cap, 0, during=True)


def _day(moment: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(moment))


def _until_midnight(now: float) -> float:
    return 86400 - now % 86400


class RateLimited(HubError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float, **fields) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
                         **fields)


class TokensSpent(RateLimited):
    """A key's tokens_per_day would be crossed: before a run by its input, or during it by
    its output (then the run is cut there)."""
    code = "tokens_per_day_exceeded"

    def __init__(self, key: str, cap: int, used: int, wanted: int, during: bool = False) -> None:
        if during:
            message = (f"Key {key!r} reached its {cap} tokens for today during this reply; "
                       "the reply was cut there")
        else:
            message = (f"Key {key!r} has {max(0, cap - used)} of its {cap} tokens left "
                       f"today; this request's input alone is about {wanted}")
        super().__init__(message, _until_midnight(time.time()), param="tokens_per_day")


def record(run) -> dict:
    """A finished run as the request log keeps it: no text, no secret."""
    usage, first, provider = run.usage, run.first_token_at, run.provider or {}
    return {"run_id": run.id, "at": time.time(), "key": run.info.get("key", "local"),
            "route": run.info.get("route", "-"), "dialect": run.info.get("dialect", ""),
            "requested_model": run.requested, "model": run.model,
            "provider": provider.get("name"), "upstream": provider.get("base_url"),
            "target": run.info.get("target"),      # the configured upstream's name
            "overhead_ms": round((run.upstream_at - run.started) * 1000, 3)
            if run.upstream_at is not None else None,
            "status": run.status, "finish_reason": run.transcript.finish_reason,
            "ttft_ms": round((first - run.started) * 1000, 2) if first else None,
            "duration_ms": round((time.monotonic() - run.started) * 1000, 2),
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "estimated": bool(usage and usage.estimated),
            "error_code": run.error.code if run.error is not None else None}   # failed only


class RequestLog:
    flush_seconds = 0.2
    max_pending = 10_000    # records held while the store refuses them (a day of a busy
                            # workstation's runs; a few MB)

    def __init__(self, store, keep_count: int, keep_days: float,
                 max_body_bytes: int = 65536) -> None:
        self.store = store
        self.keep_count, self.keep_seconds = keep_count, keep_days * 86400
        self.max_body_bytes = max_body_bytes
        self._pending: list[dict] = []
        self._bodies: list[tuple] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None
        self.written = 0     # records stored so far: a reader of the log sees it grew
        self._failing = False      # the last flush was refused
        self.dropped = 0           # records never stored: pushed out past max_pending

    def record(self, run) -> dict:
        row = record(run)
        with self._lock:
            self._pending.append(row)
            if self._writer is None:
                self._writer = threading.Thread(target=self._loop, name="request log",
                                                daemon=True)
                self._writer.start()
        return row

    def bodies(self, run_id: str, request: bytes, response: bytes, secrets) -> None:
        """Keep a run's request and response with its record: secrets masked, each cut at
        `max_body_bytes`."""
        def kept(data: bytes) -> str:
            # masked before the cut: a key the cut splits would leave its first part
            text = redact(data.decode("utf-8", "replace"), secrets)
            return text[:self.max_body_bytes] + ("…" if len(data) > self.max_body_bytes else "")
        with self._lock:
            self._bodies.append((run_id, kept(request), kept(response)))

    def flush(self) -> None:
        """Write what is pending now (the API reads after this, so it sees every run). What
        the store refuses goes back to wait for the next flush."""
        with self._lock:
            rows, self._pending = self._pending, []
            bodies, self._bodies = self._bodies, []
        try:
            if rows:
                for run_id, error in self.store.insert_requests(rows, self.keep_count,
                                                                self.keep_seconds):
                    log.error("the request log could not store run %s: %s", run_id, error)
                with self._lock:
                    self.written += len(rows)
                rows = []
            if bodies:
                self.store.add_request_bodies(bodies)
        except Exception as exc:   # a full disk must not take the runs down with it
            self._keep(rows, bodies, exc)
        else:
            self._failing = False

    def _keep(self, rows: list, bodies: list, exc: Exception) -> None:
        """Put a refused batch back before what came meanwhile, within `max_pending`;
        the oldest past it are dropped and counted. Logged once per outage, not per try."""
        if not self._failing:
            log.error("the request log could not store %d records (kept to retry): %s",
                      len(rows) + len(bodies), exc, exc_info=not isinstance(exc, HubError))
        self._failing = True
        with self._lock:
            self._pending = rows + self._pending
            self._bodies = bodies + self._bodies
            for pending in (self._pending, self._bodies):
                over = len(pending) - self.max_pending
                if over > 0:
                    del pending[:over]
                    self.dropped += over

    def pending(self) -> int:
        """Records waiting to be written."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._closed.set()
        self.flush()

    def _loop(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            self.flush()
