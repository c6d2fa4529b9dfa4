"""Which target of a pool answers a run (docs/configuration.md, "Several model machines").

Rules:
- A pool is a list of targets, each an upstream's model with a weight and a tier; a name
  that is no pool resolves to a pool of one (resolution.py), which this routes at no cost.
- The choice, among targets not skipped by their box's health (health.Box.blocked):
  the target the run's thread (or session) last used, while it has room; else the lowest
  tier with room, a warm target (its model loaded) before a cold one, then the lowest
  in-flight runs per unit of capacity (capacity × weight).
- Capacity is the target's `max_concurrent`, else its upstream's, else the slots the server
  reports (LM Studio's `parallel`, llama.cpp's `total_slots`); unknown capacity never
  fills, and the server queues. When every target of a pool is full, runs wait for one in
  the pool's line, first in first out: only the run at the head of the line chooses.
- When every target is skipped, the one free soonest is tried anyway (a breaker never
  turns a request away by itself: the client gets the server's real answer), unless it
  asked the hub to wait (Retry-After): then the request is refused with the time to wait.
- A failure retries on another target only before the upstream could have acted on the
  request: an upstream that closed after the request was written without answering
  (reason `unanswered`) may be generating, so the run fails with its 502 instead.
- A batch line (gate.background set by its driver) waits behind every interactive run of
  the line and takes a target only when none waits; an interactive run at the head of the
  line that finds no room preempts a batch line holding one of its targets (gate.py), one
  per interactive run waiting.
- Affinity is a thread's (or session's) last target, kept in memory for `affinity_seconds`,
  at most `affinity_max` of them (the oldest go first).
"""

import collections
import threading
import time
from dataclasses import dataclass

from llmhub.config import Config, HealthConfig
from llmhub.engine.health import BUSY, Box
from llmhub.engine.runs import FINAL
from llmhub.errors import HubError, UpstreamError
from llmhub.upstream.base import Upstream
from llmhub.upstream.gate import PREEMPTED, QueueFull, background

__all__ = ["Target", "Router", "Affinity", "NoTarget", "retryable"]


@dataclass(frozen=True)
class Target:
    upstream: Upstream
    model: str
    weight: float = 1.0
    tier: int = 1
    max_concurrent: int = 0


class NoTarget(UpstreamError):
    """Every target of the pool asked the hub to wait (Retry-After); a fallback may do."""
    status, code = 503, "upstream_busy"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, model_unavailable=True, **kwargs)


def retryable(error: HubError) -> bool:
    """May another target of the pool succeed where this one failed, before any byte?"""
    if not isinstance(error, UpstreamError) or error.code == "aborted":
        return False
    if error.reason == "unanswered":     # it may be generating: never sent twice (nginx's
        return False                     # proxy_next_upstream leaves out non_idempotent)
    return error.model_unavailable or (error.upstream_status or 0) in (401, 403, 429) or \
        error.status >= 500


class Slot:
    """One target's counters (guarded by the router's lock)."""
    __slots__ = ("inflight", "requests", "errors", "ttft_total", "ttft_count",
                 "affinity_hits", "last_done")

    def __init__(self) -> None:
        self.inflight = self.requests = self.errors = self.ttft_count = self.affinity_hits = 0
        self.ttft_total = 0.0
        self.last_done = time.monotonic()


class Line:
    """The runs waiting for a pool's targets, first in first out."""

    def __init__(self, router: "Router") -> None:
        self.router = router
        self.runs: collections.deque = collections.deque()   # interactive
        self.low: collections.deque = collections.deque()    # background (batch lines)

    def position(self, run) -> int | None:
        with self.router.lock:
            if run in self.runs:
                return self.runs.index(run) + 1
            return len(self.runs) + self.low.index(run) + 1 if run in self.low else None

    def __len__(self) -> int:
        return len(self.runs) + len(self.low)


class Affinity:
    """Session key → the target that served it last, with a TTL and a size cap."""

    def __init__(self, seconds: float, most: int) -> None:
        self.seconds, self.most = seconds, most
        self._kept: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: str, now: float) -> Target | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        target, at = kept
        if now - at > self.seconds:
            del self._kept[key]
            return None
        return target

    def put(self, key: str, target: Target, now: float) -> None:
        if not self.most or not self.seconds:
            return
        self._kept[key] = (target, now)
        self._kept.move_to_end(key)
        while len(self._kept) > self.most:
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)


class Router:
    poll = 0.05          # a waiting run notices its own cancel this often
    max_slots = 4096     # targets counted at once

    def __init__(self, config: Config, upstreams: dict[str, Upstream]) -> None:
        self.boxes = {name: Box(u, config.health) for name, u in upstreams.items()}
        routing = config.routing
        self.retries = routing.retries
        self.affinity = Affinity(routing.affinity_seconds, routing.affinity_max)
        self.lock = threading.Condition()
        self.slots: dict[tuple, Slot] = {}
        self.declared: dict[tuple, int] = {}   # a pool member's own max_concurrent
        self.registered: set = set()           # the configured pools' targets
        self._lines: dict[tuple, Line] = {}
        self.waiting = 0           # runs in any line: release() wakes them only if any
        self.holders: dict[tuple, list] = {}   # target → background runs in flight on it
        self.preempted: set = set()            # those already asked to give it up

    def register(self, pools) -> None:
        """The configured pools' targets, so that /v1/upstreams lists them before use."""
        with self.lock:
            for pool in pools:
                for target in pool:
                    self.slot(target)
                    self.registered.add((target.upstream.name, target.model))
                    if target.max_concurrent:
                        self.declared[target.upstream.name, target.model] = \
                            target.max_concurrent

    def box(self, target: Target) -> Box:
        box = self.boxes.get(target.upstream.name)
        if box is None or box.upstream is not target.upstream:   # a client-named provider
            box = self.boxes[target.upstream.name] = Box(target.upstream, _LENIENT, False)
        return box

    def slot(self, target: Target) -> Slot:
        key = (target.upstream.name, target.model)
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) >= self.max_slots:
                self._forget_idle()
            slot = self.slots[key] = Slot()
        return slot

    def _forget_idle(self) -> None:
        """Clients may name any model: the counters of idle, unconfigured targets go, so
        that weeks of made-up names cannot grow this without bound."""
        for key in [k for k, slot in self.slots.items()
                    if not slot.inflight and k not in self.registered]:
            del self.slots[key]

    def capacity(self, target: Target) -> int:
        """Runs at once; 0: unknown, never full."""
        return target.max_concurrent or self._capacity(self.box(target), target.model)

    def _capacity(self, box: Box, model: str) -> int:
        """A target's capacity but for a pool member's own max_concurrent."""
        return self.declared.get((box.upstream.name, model)) or \
            box.upstream.config.max_concurrent or box.slots.get(model) or 0

    def context_length(self, target: Target, model: str) -> int | None:
        """The context the model is loaded with on the target's box, as its last probe
        said; None where the server does not say."""
        return self.box(target).contexts.get(model)

    def warm(self, target: Target) -> bool:
        """Loaded, or not known to need loading (not said, or a model the box does not
        list, which its server will answer for)."""
        box = self.box(target)
        return box.loaded is None or target.model in box.loaded or \
            target.model not in (box.models or ())

    # -- choosing ----------------------------------------------------------------------------
    def acquire(self, run, pool: list, session: str | None = None,
                tried: tuple = ()) -> Target | None:
        """The target this run goes to, counted in flight; None if the run ended while it
        waited. Raises NoTarget when every target asked for time, QueueFull when the
        pool's line is as long as max_queued allows."""
        candidates = [t for t in pool if t not in tried]
        if not candidates:
            return None
        with self.lock:
            if len(pool) == 1:         # a lone target: its upstream's own gate queues
                return self._take(self._lone(candidates[0], time.monotonic()), False, run)
            line = self._lines.get(tuple(pool))
            if line is None:
                line = self._lines[tuple(pool)] = Line(self)
            low = background.get()
            if not line.runs and not (low and line.low):
                chosen = self._choose(candidates, session)
                if chosen is not None:
                    return self._take(*chosen, run)
            limit = max(t.upstream.config.max_queued for t in pool)
            if limit and not low and len(line.runs) >= limit:   # batch lines: not counted
                raise QueueFull(len(line.runs))
            return self._wait(run, line, candidates, session, bool(tried), low)

    def _wait(self, run, line: Line, candidates: list, session: str | None, retry: bool,
              low: bool):
        queue = line.low if low else line.runs
        if retry:
            queue.appendleft(run)        # it came before those behind it: it stays first
        else:
            queue.append(run)
        run.gate = line
        self.waiting += 1
        try:
            while True:
                if run.status in FINAL:
                    return None
                if queue[0] is run and not (low and line.runs):
                    chosen = self._choose(candidates, session)
                    if chosen is not None:
                        return self._take(*chosen, run)
                    if not low:
                        self._preempt(candidates, len(line.runs))
                self.lock.wait(self.poll)
        finally:
            queue.remove(run)
            run.gate = None
            self.waiting -= 1
            self.lock.notify_all()

    def _preempt(self, candidates: list, wanted: int) -> None:
        """Ask one batch line holding a target of these to give it up (once each), while
        fewer are giving theirs up than `wanted` (the interactive runs waiting): one victim
        per waiter, however long a victim takes to go. The cancel runs on a worker,
        outside the router's lock, which it would need."""
        held = [holder for target in candidates
                for holder in self.holders.get((target.upstream.name, target.model), ())]
        if sum(holder in self.preempted for holder in held) >= wanted:
            return
        for holder in held:
            if holder not in self.preempted:
                self.preempted.add(holder)
                threading.Thread(target=holder.cancel, args=(PREEMPTED,), daemon=True).start()
                return

    def _lone(self, target: Target, now: float) -> Target:
        box = self.box(target)
        if now < box.retry_at:
            raise self._refusal([target], now)
        return target

    def _take(self, target: Target, pinned: bool, run) -> Target:
        slot = self.slot(target)
        slot.inflight += 1
        slot.requests += 1
        slot.affinity_hits += pinned
        self.box(target).begin(time.monotonic())
        run.info["target"] = target.upstream.name
        if background.get():
            self.holders.setdefault((target.upstream.name, target.model), []).append(run)
        return target

    def _choose(self, candidates: list, session: str | None) -> tuple[Target, bool] | None:
        """(target, pinned) with room now; None to wait; NoTarget to give up."""
        now = time.monotonic()
        usable = [t for t in candidates if self.box(t).blocked(now) is None]
        if not usable:
            return self._anyway(candidates, now)
        roomy = [t for t in usable if self._has_room(t)]
        if not roomy:
            return None
        pinned = self.affinity.get(session, now) if session else None
        if pinned is not None and pinned in roomy:
            return pinned, True
        return min(roomy, key=lambda t: (t.tier, not self.warm(t), self._load(t),
                                         candidates.index(t))), False

    def _anyway(self, candidates: list, now: float) -> tuple[Target, bool] | None:
        """Every target is skipped: (the one free soonest with room, False), None to wait
        for room; NoTarget if every one asked for time."""
        untimed = [t for t in candidates if now >= self.box(t).retry_at]
        if not untimed:
            raise self._refusal(candidates, now)
        roomy = [t for t in untimed if self._has_room(t)]
        return (min(roomy, key=lambda t: self.box(t).free_at()), False) if roomy else None

    def _refusal(self, candidates: list, now: float) -> NoTarget:
        wait = min(self.box(t).retry_at for t in candidates) - now
        names = ", ".join(t.upstream.name for t in candidates)
        return NoTarget(f"The model servers ({names}) asked for time: retry in "
                        f"{wait:.1f} s", reason="busy", retry_after=wait)

    def _has_room(self, target: Target) -> bool:
        capacity = self.capacity(target)
        return not capacity or self.slot(target).inflight < capacity

    def _load(self, target: Target) -> float:
        return self.slot(target).inflight / ((self.capacity(target) or 1) * target.weight)

    # -- outcomes ----------------------------------------------------------------------------
    def release(self, target: Target, run=None) -> None:
        with self.lock:
            holders = self.holders.get((target.upstream.name, target.model))
            if holders and run in holders:
                holders.remove(run)
                self.preempted.discard(run)
            slot = self.slot(target)
            slot.inflight -= 1
            slot.last_done = time.monotonic()
            self.box(target).trial = False   # a trial that ended without a verdict
                                             # (cancelled first) lets the next one try
            if self.waiting:
                self.lock.notify_all()

    def opened(self, target: Target, session: str | None) -> None:
        """The target accepted the request: its box is up, and the session stays on it."""
        with self.lock:
            self.box(target).succeeded()
            if session:
                self.affinity.put(session, target, time.monotonic())

    def first_token(self, target: Target, seconds: float) -> None:
        with self.lock:
            slot = self.slot(target)
            slot.ttft_total += seconds
            slot.ttft_count += 1

    def failed(self, target: Target, error: HubError) -> None:
        with self.lock:
            self.slot(target).errors += 1
            if isinstance(error, UpstreamError) and error.code != "aborted":
                self.box(target).failed(error, time.monotonic())
            if self.waiting:
                self.lock.notify_all()

    def observe(self, box: Box, facts: dict | None, error: UpstreamError | None) -> None:
        with self.lock:
            box.observe(facts, error, time.monotonic())
            if self.waiting:
                self.lock.notify_all()

    def note_loaded(self, upstream_name: str, model: str, loaded: bool) -> None:
        """The hub loaded or unloaded a model (lifecycle.py): warm or cold from now on."""
        with self.lock:
            box = self.boxes.get(upstream_name)
            if box is not None and box.loaded is not None:
                box.loaded = box.loaded | {model} if loaded else box.loaded - {model}

    def idle_since(self, upstream_name: str, model: str) -> float | None:
        """When the model's last run ended; None while one runs."""
        with self.lock:
            slot = self.slots.get((upstream_name, model))
            if slot is None:
                return float("-inf")
            return None if slot.inflight else slot.last_done

    # -- what it knows -----------------------------------------------------------------------
    def listing(self, model: str) -> list[Upstream]:
        """The upstreams whose last probe listed this model (pool discovery)."""
        with self.lock:
            return [b.upstream for b in self.boxes.values()
                    if b.models is not None and model in b.models and b.state != "auth"]

    def stand_in(self, target: Target) -> str | None:
        """The model to use for the target's when its box's last probe did not list it
        (health.stand_in); None when it did, or nothing is known yet. Memory only: the
        probes keep it fresh, no request waits for a listing."""
        with self.lock:
            box = self.boxes.get(target.upstream.name)
            if box is None or box.models is None or target.model in box.models:
                return None
            return box.stand_in

    def view(self) -> list[dict]:
        """Each box with its targets' counters, for /v1/upstreams, /health and /metrics."""
        now = time.monotonic()
        with self.lock:
            out = []
            for name, box in self.boxes.items():
                if name.startswith("provider:"):
                    continue
                targets = []
                for (upstream, model), slot in self.slots.items():
                    if upstream != name:
                        continue
                    capacity = self._capacity(box, model)
                    targets.append({
                        "model": model, "in_flight": slot.inflight, "capacity": capacity or None,
                        "requests": slot.requests, "errors": slot.errors,
                        "affinity_hits": slot.affinity_hits,
                        "ttft_ms_avg": round(slot.ttft_total / slot.ttft_count * 1000, 2)
                        if slot.ttft_count else None})
                view = box.view(now)
                if view["state"] == "healthy" and targets and all(
                        t["capacity"] and t["in_flight"] >= t["capacity"] for t in targets):
                    view["state"] = BUSY
                queued = sum(len(line) for pool, line in self._lines.items()
                             if any(t.upstream.name == name for t in pool))
                out.append({"name": name, "kind": box.upstream.kind,
                            "base_url": box.upstream.base_url, **view,
                            "in_flight": sum(t["in_flight"] for t in targets),
                            "queued": queued + (box.upstream.gate.queued
                                                if hasattr(box.upstream, "gate") else 0),
                            "targets": targets})
            return out


# A client-named provider (the sessions dialect's api_base_url) is never probed, pooled or
# skipped: its errors are the client's key's as often as the server's.
_LENIENT = HealthConfig(failures=1, cooldown_seconds=0.0)
