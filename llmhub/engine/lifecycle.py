"""Models loaded when first asked for and unloaded when idle, on every upstream that can.

Rules:
- A run for a model its box's last probe did not list as loaded loads it first
  (`[upstream] load_on_demand`, with the context the run asks for, as Ollama's `num_ctx`,
  else `load_context_length`); one load per model and box
  at a time (models.ModelManager single-flights it), and the runs that want it wait,
  queued, the stream sending pings. A failed load fails those runs as the upstream said.
- A model the hub loaded (on demand or by POST /models/load) is unloaded after
  `idle_unload_seconds` with no run on it: LM Studio never unloads API-loaded models by
  itself. A model someone else loaded is theirs, and stays.
- Every unload the hub makes (idle, `POST /models/unload`, an exclusive load) marks the
  model cold at once, not at the next probe, so the next run loads it on demand.
- A client may set a model's idle time itself (Ollama's `keep_alive`): a duration replaces
  `idle_unload_seconds` for that model, a negative one keeps it loaded, 0 unloads it as
  soon as no run uses it. The model is then the hub's to unload, whoever loaded it.
- Only upstreams that manage models (LM Studio, the mock) load or unload; for the others a
  model is what the server serves.
"""

import functools
import logging
import threading
import time

from llmhub.engine.models import ModelManager
from llmhub.engine.routing import Router, Target
from llmhub.engine.runs import FINAL
from llmhub.errors import HubError
from llmhub.upstream.base import Upstream

__all__ = ["Lifecycle"]

log = logging.getLogger("llmhub.lifecycle")


class Lifecycle:
    def __init__(self, router: Router, upstreams: dict[str, Upstream], registry) -> None:
        self.router = router
        self.managers = {name: ModelManager(u, registry, u.config.load_timeout_seconds,
                                            on_load=self._loaded, on_unload=self._unloaded)
                         for name, u in upstreams.items()}
        self._ours: dict[tuple, float] = {}      # (upstream, key) the hub loaded → when
        self._keep: dict[tuple, float] = {}      # a client's idle time for one (inf: never)
        self._lock = threading.Lock()

    def manager(self, upstream_name: str | None) -> ModelManager:
        return self.managers[upstream_name] if upstream_name else \
            next(iter(self.managers.values()))

    def ready(self, target: Target, run=None, context: int | None = None) -> bool:
        """Load the target's model first if its box says it is not loaded, with the context
        the run (or `context`) asks for, else `load_context_length`; False if `run` ended
        while it waited (the load goes on for the runs that still want it). A model loaded
        already keeps its context: reloading it would end other runs."""
        upstream = target.upstream
        manager = self.managers.get(upstream.name)
        if manager is None or not manager.managed or not upstream.config.load_on_demand \
                or self.router.warm(target):
            return True
        log.info("loading %s on %s for a request", target.model, upstream.name)
        asked = getattr(run, "load_context", None) if context is None else context
        load = functools.partial(manager.load, target.model, strict=False,
                                 context_length=asked or upstream.config.load_context_length
                                 or None)
        return self._await(load, run)

    @staticmethod
    def _await(load, run) -> bool:
        """Do `load` on a thread of its own, so the run that waits for it can be cancelled
        meanwhile: its driver notices within a poll, and concludes it."""
        outcome: dict = {}
        done = threading.Event()

        def loading():
            try:
                load()
            except BaseException as exc:   # handed to the waiting run's thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=loading, name="model load", daemon=True).start()
        while not done.wait(0.05):
            if run is not None and run.status in FINAL:
                return False
        if "error" in outcome:
            raise outcome["error"]
        return True

    def _loaded(self, upstream: Upstream, key: str) -> None:
        with self._lock:
            self._ours[upstream.name, key] = time.monotonic()
        self.router.note_loaded(upstream.name, key, True)

    def _unloaded(self, upstream: Upstream, key: str) -> None:
        """Any unload the hub made (idle, POST /models/unload, an exclusive load): cold now,
        so the next run for it loads it on demand instead of meeting "No models loaded"."""
        with self._lock:
            self._ours.pop((upstream.name, key), None)
            self._keep.pop((upstream.name, key), None)
        self.router.note_loaded(upstream.name, key, False)

    def keep_alive(self, upstream_name: str, key: str, seconds: float) -> None:
        manager = self.managers.get(upstream_name)
        if manager is None or not manager.managed:
            return                       # a server that loads nothing on request
        if seconds == 0:
            try:
                manager.unload(key)
            except HubError as exc:      # another run uses it (409), or it is gone
                log.info("keep_alive 0: %s on %s stays: %s", key, upstream_name, exc.message)
            return
        with self._lock:
            self._keep[upstream_name, key] = seconds
            self._ours.setdefault((upstream_name, key), time.monotonic())

    def unload_idle(self) -> None:
        """Unload each model the hub loaded that has had no run for idle_unload_seconds."""
        now = time.monotonic()
        with self._lock:
            ours = list(self._ours.items())
        for (name, key), loaded_at in ours:
            manager = self.managers[name]
            idle = self._keep.get((name, key), manager.upstream.config.idle_unload_seconds)
            since = self.router.idle_since(name, key)
            if not idle or since is None or now - max(since, loaded_at) < idle:
                continue
            try:
                manager.unload(key)
            except HubError as exc:      # a run started meanwhile (409), or the box is down
                log.info("idle %s on %s stays loaded: %s", key, name, exc.message)
                continue
            log.info("unloaded %s on %s after %g s idle", key, name, idle)
