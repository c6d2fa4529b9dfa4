"""A fake of Anthropic's Messages API (streaming), standard library only, for tests.

Answers POST /v1/messages/count_tokens with `counted` input tokens, and POST /v1/messages with the real event sequence (message_start, content_block_*,
ping, message_delta, message_stop), or with `error` as an HTTP error; records what it got.
Each request takes the next reply from `replies` (a list of content blocks: text, thinking
with its signature, tool_use with its input), else one text block of `texts`. Text and
thinking stream in `texts`-sized pieces; a tool's input streams as input_json_delta
fragments, as Anthropic cuts it.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeAnthropic:
    def __init__(self) -> None:
        self.texts = ["Hi", " there", "!"]
        self.replies: list[list[dict]] = []    # content blocks, one list per request
        self.error: tuple | None = None        # (status, body)
        self.usage = {"input_tokens": 12, "output_tokens": 1}   # message_start's
        self.ending: tuple | None = None       # (stop_reason, stop_sequence) to end with
        self.counted = 321                     # what /v1/messages/count_tokens says
        self.raw_stream: str | None = None     # a reply's SSE body exactly as given (garbage)
        self.requests: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self

    def start(self) -> "FakeAnthropic":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, "application/json", json.dumps({"data": [{"id": "claude-fake"}]}))

    def do_POST(self) -> None:
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if fake.error:
            return self._send(fake.error[0], "application/json", json.dumps(fake.error[1]))
        if self.path.endswith("/count_tokens"):
            return self._send(200, "application/json",
                              json.dumps({"input_tokens": fake.counted}))
        if fake.raw_stream is not None:
            return self._send(200, "text/event-stream", fake.raw_stream)
        blocks = fake.replies.pop(0) if fake.replies else \
            [{"type": "text", "text": "".join(fake.texts)}]
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
            "usage": fake.usage}}), ("ping", {"type": "ping"})]
        for index, block in enumerate(blocks):
            events += block_events(index, block, fake.texts)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        stop, sequence = fake.ending or (stop, None)
        events += [("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop, "stop_sequence": sequence},
                                      "usage": {"output_tokens": len(fake.texts)}}),
                   ("message_stop", {"type": "message_stop"})]
        self._send(200, "text/event-stream", "".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events))

    def _send(self, status: int, content_type: str, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def block_events(index: int, block: dict, texts: list) -> list:
    kind = block["type"]
    start = {"text": {"type": "text", "text": ""},
             "thinking": {"type": "thinking", "thinking": ""},
             "tool_use": {"type": "tool_use", "id": block.get("id"), "name": block.get("name"),
                          "input": {}}}[kind]
    events = [("content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": start})]
    if kind == "tool_use":
        text = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": text[i:i + 7]}
                  for i in range(0, len(text), 7)]
    else:
        text = block[kind]
        deltas = [{"type": f"{kind}_delta", kind: piece} for piece in pieces(text, texts)]
        if kind == "thinking":
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
    events += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                        "delta": delta}) for delta in deltas]
    return events + [("content_block_stop", {"type": "content_block_stop", "index": index})]


def pieces(text: str, texts: list) -> list:
    """The text cut where `texts` cuts "".join(texts), else in one piece."""
    return list(texts) if "".join(texts) == text else [text]
