"""What went through the hub: the request log (`/v1/requests`) and usage (`/v1/usage`).

Every finished run has one record (accounting.py): time, key name, dialect and route,
requested and resolved model, upstream, status, finish reason, time to first token,
duration, tokens (marked when estimated). Key names only: keys never appear. Errors are the
service shape.

A time in the query (`from`, `to`, `before`) is Unix seconds (ASCII digits, one optional
point) or an ISO date, between 1970 and 9999: anything else, 1e999 or 55 digits included, is
a 400 naming the parameter, so no answer can carry an `Infinity` that is not JSON.
`limit` is a whole number in its range, checked before it is converted.
"""

import datetime

from llmhub.dialects.langbase import page_limit
from llmhub.dialects.service import error_body
from llmhub.errors import BadRequest, NotFound
from llmhub.wire import JSONResponse

__all__ = ["TITLE", "error_body", "list_requests", "get_request", "usage"]

TITLE = "Usage and requests"
FILTERS = ("key", "model", "status", "dialect")


def list_requests(request) -> JSONResponse:
    """GET /v1/requests?limit=&before=&key=&model=&status=&dialect=: newest first."""
    query = request.query
    limit = page_limit(query, 50, 500)
    before = moment(query.get("before"), "before")
    match = {name: query[name] for name in FILTERS if query.get(name)}
    rows = request.hub.engine.requests(limit + 1, before, match)
    return JSONResponse({"object": "list", "data": rows[:limit],
                         "has_more": len(rows) > limit})


def get_request(request, run_id: str) -> JSONResponse:
    record = request.hub.engine.request_record(run_id)
    if record is None:
        raise NotFound(f"No record of run {run_id!r} (it may still be running, or be past "
                       "[log] keep_count / keep_days)", code="request_not_found")
    return JSONResponse(record)


def usage(request) -> JSONResponse:
    """GET /v1/usage?group_by=key|model|day|hour&from=&to= (Unix seconds or YYYY-MM-DD,
    UTC); an hour is named as 2026-12-06T04:00Z (the runs page's chart)."""
    query = request.query
    group = query.get("group_by") or "key"
    if group not in ("key", "model", "day", "hour"):
        raise BadRequest("'group_by' must be key, model, day or hour", param="group_by")
    since = moment(query.get("from"), "from") or 0.0
    until = moment(query.get("to"), "to") or float("inf")
    return JSONResponse({"object": "usage", "group_by": group, "from": since or None,
                         "to": until if until != float("inf") else None,
                         "data": request.hub.engine.usage(group, since, until)})


LAST_MOMENT = 253402300800.0    # 10000-01-01T00:00:00Z: the end of what ISO dates can say


def moment(value: str | None, param: str) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value) if value.isascii() and value.replace(".", "", 1).isdigit() \
            else datetime.datetime.fromisoformat(value).replace(
                tzinfo=datetime.timezone.utc).timestamp()
    except (ValueError, OverflowError):
        seconds = None
    if seconds is None or not 0 <= seconds < LAST_MOMENT:
        raise BadRequest(f"'{param}' must be Unix seconds or a date (YYYY-MM-DD) between "
                         "1970 and 9999", param=param)
    return seconds
