"""Secrets never reach a client, a log line or the database (DESIGN §10).

Model servers echo the key they refused, in a status error or inside a stream's error frame,
and an upstream URL may carry `user:password@`. Every error a run carries passes through
`redact_error` once, in `Run.finish`, before any dialect renders it or the store keeps it;
every error a request answers with passes through it in the server's one error funnel; and
every upstream URL shown anywhere is `public_url`.
"""

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact", "redact_error", "public_url", "config_secrets", "MASK"]

MASK = "***"
MIN_SECRET = 4       # shorter strings are too common to replace without mangling text


def redact(text: str, secrets) -> str:
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_error(error, secrets):
    """The same error with every secret masked in its message and in an upstream error's
    `detail` (None stays None)."""
    if error is not None and secrets:
        message = redact(error.message, secrets)
        if message != error.message:
            error.message = message
            error.args = (message,)
        if getattr(error, "detail", None):
            error.detail = redact(error.detail, secrets)
    return error


def public_url(url: str) -> str:
    """A URL as it may be shown: credentials replaced by the mask."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def url_secrets(url: str) -> tuple:
    parts = urlsplit(url)
    return (parts.password,) if parts.password else ()


def config_secrets(config) -> tuple:
    """Every secret the configuration holds: hub keys, upstream keys, URL credentials."""
    found = list(config.server["api_keys"])
    for upstream in config.upstreams:
        found += [upstream.api_key, *url_secrets(upstream.base_url)]
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))
