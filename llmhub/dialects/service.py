"""Service endpoints shared by every client: /, /health, /config, and runs by id.

Errors here, and for paths no route has, use the hub's generic shape:
`{"error": {"message", "code", "status", "param"}}`.
"""

import time

from llmhub.config import redacted
from llmhub.wire import JSONResponse

__all__ = ["error_body", "index", "health", "show_config", "get_run", "cancel_run"]


def error_body(error) -> dict:
    return {"error": {"message": error.message, "code": error.code, "status": error.status,
                      "param": error.param}}


def index(request) -> JSONResponse:
    from llmhub.routes import ROUTES   # the table imports this module
    hub = request.hub
    return JSONResponse({
        "name": "llmhub", "version": hub.version, "status": "ok",
        "upstreams": [{"name": u.name, **u.provider} for u in hub.upstreams.values()],
        "endpoints": [{"method": r.method, "path": r.pattern, "summary": r.summary}
                      for r in ROUTES],
    })


def health(request) -> JSONResponse:
    """200 even when the upstream is down: the hub itself is up, and says what is not."""
    hub = request.hub
    upstreams = hub.engine.probe_all()
    database = hub.store.health()
    healthy = database["status"] == "ok" and all(u["reachable"] for u in upstreams)
    return JSONResponse({
        "status": "ok" if healthy else "degraded",
        "time": utc_now(),
        "version": hub.version,
        "uptime_seconds": round(time.time() - hub.started, 1),
        "upstreams": upstreams,
        "database": database,
        "active_runs": len(hub.registry.live()),
    })


def show_config(request) -> JSONResponse:
    return JSONResponse(redacted(request.hub.config))


def get_run(request, run_id: str) -> JSONResponse:
    return JSONResponse({"id": run_id, "status": request.hub.registry.status(run_id)})


def cancel_run(request, run_id: str) -> JSONResponse:
    return JSONResponse({"id": run_id, "status": request.hub.registry.cancel(run_id)})


def utc_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
