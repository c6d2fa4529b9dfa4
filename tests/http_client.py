"""Small HTTP helpers for tests: exact bytes in, parsed status/headers/body out."""

import http.client
import json
import socket
from urllib.parse import urlsplit


def connect(url: str, timeout: float = 10) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def call(url: str, method: str, path: str, body=None, headers=None, timeout: float = 10):
    """One request; returns (status, headers, parsed JSON or raw bytes)."""
    conn = connect(url, timeout)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if payload is not None else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, response.headers, parsed
    finally:
        conn.close()


def sse_events(response) -> list[tuple[str | None, str]]:
    """Read a whole SSE response into (event, data) pairs; comments are skipped."""
    events, event, data = [], None, []
    for raw in response.read().decode("utf-8").split("\n"):
        line = raw.rstrip("\r")
        if not line:
            if data:
                events.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    return events


def open_stream(url: str, path: str, body: dict, headers=None, timeout: float = 10):
    """Send a request and return (connection, response) with the body still unread."""
    conn = connect(url, timeout)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})
    return conn, conn.getresponse()


def raw_exchange(url: str, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes on one connection; return everything until the server closes or idles."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
