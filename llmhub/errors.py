"""One error root for the hub: every error carries its HTTP status and a stable code.

Domain code raises these; server.py turns them into the dialect's JSON error shape in one
function. `param` names the request field at fault, so every 4xx can say which field it was.
"""

__all__ = [
    "HubError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "MethodNotAllowed", "Conflict",
    "Gone", "PayloadTooLarge", "UnsupportedMediaType", "UpstreamError",
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
        return cls(data["message"], status=data["status"], code=data["code"],
                   param=data.get("param"))


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


class UpstreamError(HubError):
    """The model server failed, could not be reached, or refused the request.

    `model_unavailable` marks failures where another model may succeed (connection refused,
    model not loaded or not found, server errors): the engine then tries `[fallbacks]`.
    """

    status, code = 502, "upstream_error"

    def __init__(self, message: str, *, model_unavailable: bool = False, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.model_unavailable = model_unavailable
