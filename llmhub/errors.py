"""One error root for the hub: every error carries its HTTP status and a stable code.

Domain code raises these; server.py turns them into the dialect's JSON error shape in one
function. `param` names the request field at fault, so every 4xx can say which field it was.
"""

import math

__all__ = [
    "HubError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed", "Conflict",
    "Gone", "PayloadTooLarge", "UnsupportedMediaType", "UpgradeRequired", "UpstreamError",
    "error_of",
]


class HubError(Exception):
    """Base of every error that becomes an HTTP response."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def as_dict(self) -> dict:
        """The neutral form that run events and logs carry."""
        return {"status": self.status, "code": self.code, "message": self.message,
                "param": self.param}

    @classmethod
    def from_dict(cls, data: dict) -> "HubError":
        if data.get("details") is not None and cls is HubError:
            return UpstreamError.from_dict(data)
        return cls(data["message"], status=data["status"], code=data["code"],
                   param=data.get("param"), **(data.get("details") or {}))


class BadRequest(HubError):
    status, code = 400, "invalid_request"


class Unauthorized(HubError):
    status, code = 401, "unauthorized"


class Forbidden(HubError):
    status, code = 403, "forbidden"


class NotFound(HubError):
    status, code = 404, "not_found"


class MethodNotAllowed(HubError):
    status, code = 405, "method_not_allowed"


class Conflict(HubError):
    status, code = 409, "conflict"


class Gone(HubError):
    status, code = 410, "gone"


class PayloadTooLarge(HubError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(HubError):
    status, code = 415, "unsupported_media_type"


class UpgradeRequired(HubError):
    """A WebSocket upgrade: 426 is what makes a client (Codex) fall back to HTTP at once."""
    status, code = 426, "upgrade_required"


class UpstreamError(HubError):
    """The model server failed, could not be reached, or refused the request.

    `model_unavailable` marks failures where another model may succeed (connection refused,
    model not loaded or not found, server errors): the engine then tries `[fallbacks]`.
    The structured fields say what the message says, so that no dialect parses it:
    `reason`, a stable word for the cause (unreachable, timeout, no_model_loaded,
    model_not_found, context_length, …); `detail`, the cause in words ("Connection
    refused"); `where`, the upstream's label ("LM Studio"); `upstream_status`, the HTTP
    status the upstream answered with, if it answered. A context overflow also says
    `prompt_tokens` (what was sent) and `context_length` (what fits), as the upstream said
    them or, where it did not, as the engine estimated them.
    """

    status, code = 502, "upstream_error"

    def __init__(self, message: str, *, model_unavailable: bool = False,
                 reason: str | None = None, detail: str | None = None,
                 where: str | None = None, upstream_status: int | None = None,
                 retry_after: float | None = None, prompt_tokens: int | None = None,
                 context_length: int | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.prompt_tokens, self.context_length = prompt_tokens, context_length
        self.model_unavailable = model_unavailable
        self.reason, self.detail, self.where = reason, detail, where
        self.upstream_status = upstream_status
        self.retry_after = retry_after      # seconds the upstream asked for (Retry-After)
        if retry_after is not None:         # carried as a detail, so it survives a run
            self.headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))

    def as_dict(self) -> dict:
        details = {name: getattr(self, name) for name in DETAILS
                   if getattr(self, name) is not None}
        if self.model_unavailable:          # carried so a batch line knows "server down"
            details["model_unavailable"] = True
        return {**super().as_dict(), "details": details or None}


DETAILS = ("reason", "detail", "where", "upstream_status", "retry_after", "prompt_tokens",
           "context_length")


def error_of(event) -> HubError:
    """The error an Error run event (events.Error) carries, as a fresh exception."""
    return HubError.from_dict({"status": event.status, "code": event.code,
                               "message": event.message, "param": event.param,
                               "details": event.details})
