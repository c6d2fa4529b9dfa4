"""Model management on one upstream: list, load, unload (LM Studio hub seed). There is one
manager per upstream (lifecycle.py); the LM Studio hub's /models endpoints pick one by name.

Rules (lmstudio.md §2.4, §3.1; gateway-pitfalls #14):
- a model already loaded gets no new instance: LM Studio's load always makes `key:2`;
- concurrent loads of one model make one upstream request (single-flight), per box;
- `exclusive` unloads every other instance on that box first;
- a load asked for a context length is checked: LM Studio may fit a smaller one without a
  word (lmstudio.md "Context length may be silently changed"), and that is a 502 naming both;
- a model with runs in flight is never unloaded from under them: 409 naming the runs,
  unless `force`, which cancels them first;
- every load and unload the hub makes is told (`on_load`, `on_unload`) as it happens, so
  the router's view of what is loaded is never staler than the hub's own acts.
"""

import logging
import re
import threading
import time

from llmhub.errors import Conflict, HubError, NotFound, UpstreamError
from llmhub.upstream.base import Downloads, ManagesModels, Upstream

__all__ = ["ModelManager", "NotManaged"]

INSTANCE_SUFFIX = re.compile(r":\d+$")
log = logging.getLogger("llmhub.models")


class NotManaged(HubError):
    status, code = 501, "not_implemented"


class ContextNotApplied(HubError):
    """The model loaded, but with another context length than the one asked for."""
    status, code = 502, "context_length_not_applied"


class _Flight:
    """One load in progress; later callers for the same model wait for its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: HubError | None = None
        self.waiters = 0    # callers riding on this load (tests and logs read it)


class ModelManager:
    poll_seconds = 1.0      # between questions about a download's progress

    def __init__(self, upstream: Upstream, registry, load_timeout: float, on_load=None,
                 on_unload=None) -> None:
        self.upstream = upstream
        self.registry = registry
        self.load_timeout = load_timeout
        self.on_load = on_load     # (upstream, key) after the upstream loaded a model
        self.on_unload = on_unload  # (upstream, key) after it unloaded one of its instances
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        # Asked on every request: isinstance() against a runtime-checkable Protocol walks
        # the protocol's members (~15 µs), and an upstream's kind never changes.
        self.managed = isinstance(upstream, ManagesModels)

    def _managing(self) -> ManagesModels:
        """The upstream, as one that manages models; NotManaged if it does not."""
        if not isinstance(self.upstream, ManagesModels):
            raise NotManaged(f"Model management needs an LM Studio upstream; "
                             f"{self.upstream.name} is {self.upstream.kind}")
        return self.upstream

    # -- reading -----------------------------------------------------------------------------
    def catalog(self) -> tuple[list[dict], str]:
        """Every model, one entry per key (duplicate `key:2` rows folded into their key)."""
        entries, source = self._managing().native_models()
        merged: dict[str, dict] = {}
        for entry in entries:
            key = INSTANCE_SUFFIX.sub("", entry["key"]) if entry["loaded"] else entry["key"]
            if key in merged:
                merged[key]["instances"] += entry["instances"]
                merged[key]["loaded"] = merged[key]["loaded"] or entry["loaded"]
                merged[key]["context_length"] = merged[key]["context_length"] or \
                    entry["context_length"]
            else:
                merged[key] = dict(entry, key=key, instances=list(entry["instances"]))
        return list(merged.values()), source

    def loaded_model(self) -> str | None:
        """The first loaded chat model, for a request that names none."""
        entries, _ = self.catalog()
        return next((e["key"] for e in entries if e["loaded"] and e["type"] != "embedding"),
                    None)

    # -- downloading -------------------------------------------------------------------------
    def download(self, key: str):
        """Download `key` and yield its progress ({status, total, completed}) until it is
        there; an upstream that cannot download is NotManaged, a failed download a 502."""
        upstream = self._managing()
        if not isinstance(upstream, Downloads):     # the mock loads, has nothing to fetch
            raise NotManaged(f"{self.upstream.name} ({self.upstream.kind}) cannot download "
                             "models")
        job = upstream.download(key)
        while True:
            status = job.get("status")
            yield {"status": status, "total": job.get("total_size_bytes"),
                   "completed": job.get("downloaded_bytes")}
            if status in ("completed", "already_downloaded"):
                return
            if status not in ("downloading", "paused"):
                raise HubError(f"Downloading {key} failed on {self.upstream.name}: "
                               f"{job.get('error') or status}", status=502,
                               code="download_failed")
            time.sleep(self.poll_seconds)   # LM Studio tells progress only when asked
            job = upstream.download_status(job["job_id"])

    # -- loading -----------------------------------------------------------------------------
    def load(self, key: str, exclusive: bool = False, context_length: int | None = None,
             force: bool = False, strict: bool = True) -> dict | None:
        """Load `key` unless loaded; `strict`: a context length other than the one asked
        for is an error (else only logged: a request's on-demand load goes on). None: a
        load another caller led did not end within load_timeout."""
        self._managing()
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leader:
            flight.done.wait(self.load_timeout + 5)
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = self._load(key, exclusive, context_length, force)
            return self._checked(flight.result, context_length, strict)
        except HubError as error:
            flight.error = error
            raise
        finally:
            flight.done.set()
            with self._lock:
                del self._flights[key]

    def _load(self, key: str, exclusive: bool, context_length: int | None,
              force: bool) -> dict:
        entries, _ = self.catalog()
        entry = next((e for e in entries if e["key"] == key or key in e["instances"]), None)
        if entry is None:
            raise NotFound("Model not found", code="model_not_found")
        keep = entry["instances"][:1]
        if keep and context_length and entry["context_length"] not in (None, context_length):
            keep = []                    # loaded with another context: reload, not :2
        others = [i for e in entries if e is not entry for i in e["instances"]] \
            if exclusive else []
        extra = [i for i in entry["instances"] if i not in keep] if exclusive or not keep \
            else []
        unloaded = self._unload_ids(others + extra, force)
        if keep:
            return {"loaded": True, "model_key": entry["key"], "instance_id": keep[0],
                    "load_time_seconds": 0.0, "unloaded": unloaded}
        reply = self._managing().load(entry["key"], context_length, self.load_timeout)
        if self.on_load is not None:
            self.on_load(self.upstream, entry["key"])
        instance = reply.get("instance_id", entry["key"])
        applied = (reply.get("load_config") or {}).get("context_length")
        if context_length and applied is None:       # not echoed: read what it has
            applied = next((e["context_length"] for e in self.catalog()[0]
                            if instance in e["instances"]), None)
        return {"loaded": True, "model_key": entry["key"], "instance_id": instance,
                "load_time_seconds": reply.get("load_time_seconds"), "unloaded": unloaded,
                "context_length": applied}

    def _checked(self, result: dict, asked: int | None, strict: bool) -> dict:
        got = result.get("context_length")
        if not asked or got in (None, asked):
            return result
        message = (f"{self.upstream.name} loaded {result['model_key']} with a context of "
                   f"{got} tokens, not the {asked} asked for (it may not fit in memory); "
                   "the model stays loaded")
        if strict:
            raise ContextNotApplied(message)
        log.warning("%s", message)
        return result

    # -- unloading ---------------------------------------------------------------------------
    def unload(self, key: str | None = None, everything: bool = False,
               force: bool = False) -> list[str]:
        self._managing()
        entries, _ = self.catalog()
        if everything:
            ids = [i for e in entries for i in e["instances"]]
        else:
            entry = next((e for e in entries if e["key"] == key or key in e["instances"]), None)
            if entry is None:
                raise NotFound(f"Model {key!r} not found", code="model_not_found")
            ids = entry["instances"] if entry["key"] == key else [key]
        return self._unload_ids(ids, force)

    def _unload_ids(self, ids: list[str], force: bool) -> list[str]:
        busy = self.runs_on(ids)
        if busy and not force:
            raise Conflict(f"Runs in flight use {', '.join(sorted(set(ids)))}: "
                           f"{', '.join(r.id for r in busy)}. Send 'force': true to "
                           "cancel them first.", code="runs_in_flight")
        for run in busy:
            run.cancel("model_unloaded", wait=5)   # their partial replies stored first
        for instance in ids:
            try:
                self._managing().unload(instance)
            except UpstreamError as error:
                if error.status != 404:       # already gone is what we wanted
                    raise
            # Said at once, not at the next probe: until then the router would count the
            # model warm, skip the on-demand load, and the next chat would get LM Studio's
            # "No models loaded". Cold when another instance stays costs only a
            # load that finds it loaded.
            if self.on_unload is not None:
                self.on_unload(self.upstream, INSTANCE_SUFFIX.sub("", instance))
        return ids

    def runs_on(self, ids: list[str]) -> list:
        keys = {INSTANCE_SUFFIX.sub("", i) for i in ids}
        return [r for r in self.registry.live() if r.model and
                (r.model in ids or INSTANCE_SUFFIX.sub("", r.model) in keys)]
