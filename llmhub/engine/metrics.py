"""Counters and histograms for GET /metrics, rendered in Prometheus text format (0.0.4).

Requests are counted by route pattern (never the raw path, whose ids would grow without
bound), method and status. Runs are observed once, when they finish: tokens, time to first
token, the hub's own overhead (from the request's run being created to its upstream request
being sent), and upstream errors. Gauges (active, queued) are read when rendered.
"""

import bisect
import threading
import time
from typing import Sequence

from llmhub.engine.runs import QUEUED

__all__ = ["Metrics"]

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Histogram:
    def __init__(self, buckets=SECONDS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return out + [f"{name}_sum {self.sum:.6f}", f"{name}_count {running}"]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple, int] = {}
        self.runs: dict[tuple, int] = {}
        self.upstream_errors: dict[tuple, int] = {}
        self.tokens = {"in": 0, "out": 0}
        self.ttft = Histogram()
        self.overhead = Histogram()

    def request(self, route: str, method: str, status) -> None:
        key = (route, method, str(status))
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1

    def run_finished(self, record: dict) -> None:
        """Count a finished run from its request-log record (accounting.record), the one
        record the log, the access line and these counters all read."""
        with self._lock:
            key = (record["dialect"], record["status"])
            self.runs[key] = self.runs.get(key, 0) + 1
            self.tokens["in"] += record["input_tokens"] or 0
            self.tokens["out"] += record["output_tokens"] or 0
            if record["ttft_ms"] is not None:
                self.ttft.observe(record["ttft_ms"] / 1000)
            if record["overhead_ms"] is not None:
                self.overhead.observe(record["overhead_ms"] / 1000)
            if record["error_code"] is not None:
                key = (record["provider"] or "", record["error_code"])
                self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def render(self, live_runs: list, sessions: int, upstreams: Sequence[dict] = (),
               storage: dict | None = None, batches: dict | None = None) -> str:
        queued = sum(1 for run in live_runs if run.status == QUEUED)
        with self._lock:
            out = [
                *family("llmhub_requests_total", "counter",
                        "HTTP requests handled, by route, method and status",
                        {("route", "method", "status"): self.requests}),
                *family("llmhub_runs_total", "counter", "Finished runs, by dialect and status",
                        {("dialect", "status"): self.runs}),
                *family("llmhub_upstream_errors_total", "counter",
                        "Runs failed by their upstream, by provider and error code",
                        {("provider", "code"): self.upstream_errors}),
                *family("llmhub_tokens_total", "counter",
                        "Tokens in (prompt) and out (completion), as reported or estimated",
                        {("direction",): {(k,): v for k, v in self.tokens.items()}}),
                "# HELP llmhub_runs_active Runs streaming or waiting now",
                "# TYPE llmhub_runs_active gauge", f"llmhub_runs_active {len(live_runs)}",
                "# HELP llmhub_runs_queued Runs waiting for a max_concurrent slot",
                "# TYPE llmhub_runs_queued gauge", f"llmhub_runs_queued {queued}",
                "# HELP llmhub_sessions_seen Session ids seen by the sessions dialect",
                "# TYPE llmhub_sessions_seen gauge", f"llmhub_sessions_seen {sessions}",
                "# HELP llmhub_time_to_first_token_seconds From run start to its first token",
                "# TYPE llmhub_time_to_first_token_seconds histogram",
                *self.ttft.lines("llmhub_time_to_first_token_seconds"),
                "# HELP llmhub_hub_overhead_seconds From run start to its upstream request",
                "# TYPE llmhub_hub_overhead_seconds histogram",
                *self.overhead.lines("llmhub_hub_overhead_seconds"),
                *upstream_lines(upstreams),
                *storage_lines(storage or {}),
                *batch_lines(batches or {}),
                "# HELP llmhub_uptime_seconds Seconds since the hub started",
                "# TYPE llmhub_uptime_seconds gauge",
                f"llmhub_uptime_seconds {time.time() - self.started:.1f}",
            ]
        return "\n".join(out) + "\n"


STORAGE = (   # engine.storage_counters() key, metric, type, help
    ("request_log_dropped", "llmhub_request_log_dropped_total", "counter",
     "Request-log records never stored: the store refused them past [log] max_pending"),
    ("request_log_pending", "llmhub_request_log_pending", "gauge",
     "Request-log records waiting for the store to take them"),
    ("held_ends", "llmhub_store_held_ends", "gauge",
     "Responses' ends the store refused, held in memory until it takes them"),
    ("held_dropped", "llmhub_store_held_dropped_total", "counter",
     "Responses' ends never stored: pushed out of memory while the store refused them"),
)


def storage_lines(counters: dict) -> list[str]:
    out = []
    for key, name, kind, help_text in STORAGE:
        if key in counters:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                    f"{name} {counters[key]}"]
    return out


def batch_lines(progress: dict) -> list[str]:
    """Batches by status, and their lines: running, waiting, and finished by outcome
    (`requeued`: given back, preempted by an interactive request or stopped, to run again)."""
    if not progress:
        return []
    return [*family("llmhub_batches", "gauge", "Batches, by status",
                    {("status",): {(k,): v for k, v in progress["statuses"].items()}}),
            "# HELP llmhub_batch_lines_running Batch lines running now",
            "# TYPE llmhub_batch_lines_running gauge",
            f"llmhub_batch_lines_running {progress['lines_running']}",
            "# HELP llmhub_batch_lines_pending Batch lines waiting to run",
            "# TYPE llmhub_batch_lines_pending gauge",
            f"llmhub_batch_lines_pending {progress['lines_pending']}",
            *family("llmhub_batch_lines_total", "counter",
                    "Batch lines ended since the hub started, by outcome",
                    {("outcome",): {(k,): progress[f"lines_{k}"]
                                    for k in ("completed", "failed", "requeued")}})]


STATES = ("healthy", "loading", "busy", "down", "auth")
TARGET_SERIES = (   # (metric, type, help, the target field it reads)
    ("llmhub_target_in_flight", "gauge", "Runs in flight on a target", "in_flight"),
    ("llmhub_target_capacity", "gauge", "A target's slots (0: not known)", "capacity"),
    ("llmhub_target_requests_total", "counter", "Runs sent to a target", "requests"),
    ("llmhub_target_errors_total", "counter", "Runs a target failed", "errors"),
    ("llmhub_target_affinity_hits_total", "counter",
     "Runs routed to a target because their thread was last served there", "affinity_hits"),
)


def upstream_lines(upstreams: Sequence[dict]) -> list[str]:
    """Each upstream's health state, queue and cooldowns, and its targets' counters
    (routing.Router.view)."""
    states = {(u["name"], state): int(u["state"] == state) for u in upstreams
              for state in STATES}
    out = [*family("llmhub_upstream_state", "gauge",
                   "An upstream's health state (1 for the state it is in)",
                   {("upstream", "state"): states}),
           *family("llmhub_upstream_queued", "gauge", "Runs waiting for an upstream's slot",
                   {("upstream",): {(u["name"],): u["queued"] for u in upstreams}}),
           *family("llmhub_upstream_cooldowns_total", "counter",
                   "Times an upstream's circuit breaker opened",
                   {("upstream",): {(u["name"],): u["cooldowns"] for u in upstreams}})]
    targets = [(u["name"], t) for u in upstreams for t in u["targets"]]
    for name, kind, help_text, field in TARGET_SERIES:
        out += family(name, kind, help_text, {("upstream", "model"): {
            (upstream, t["model"]): t[field] or 0 for upstream, t in targets}})
    ttft = {(upstream, t["model"]): t["ttft_ms_avg"] / 1000 for upstream, t in targets
            if t["ttft_ms_avg"] is not None}
    return out + family("llmhub_target_time_to_first_token_seconds_avg", "gauge",
                        "A target's mean time from request sent to first token",
                        {("upstream", "model"): ttft})


def family(name: str, kind: str, help_text: str, series: dict) -> list[str]:
    (labels, values), = series.items()
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for key, value in sorted(values.items()):
        pairs = ",".join(f'{label}="{escape(v)}"' for label, v in zip(labels, key))
        out.append(f"{name}{{{pairs}}} {value}")
    return out


def escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
