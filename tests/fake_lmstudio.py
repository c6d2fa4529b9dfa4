"""A scriptable fake of LM Studio, standard library only, for tests and benchmarks.

Speaks `/v1/models`, `/v1/chat/completions` (streaming and not, with usage when asked),
`/api/v1/models`, `/api/v1/models/load` and `/api/v1/models/unload`; with `llama = True`
also llama.cpp's `/health` and `/props` (`total_slots`). A path given a `Relay` in
`relays` (rerank, audio, images…) answers as scripted there, the request's raw bytes kept
in `Received.raw`; a path given none answers as LM Studio does any unknown route.
`kill()` drops every connection at once, as a box that loses power; `revive()` serves
again on the same port. Each chat request takes the next `Script` from `enqueue()` (or
`default`), records what it received, and notes whether the client aborted: while a script
holds, the fake watches its socket for the client closing.

    fake = FakeLMStudio().start()
    fake.enqueue(Script(chunks=["Hel", "lo"], hold_first=release))
    ...
    assert fake.aborted.wait(2)      # the hub closed the upstream connection
"""

import json
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


def readable(sock, timeout: float) -> bool:
    """poll(), not select(): select() fails past fd 1024, and the fake holds thousands."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


@dataclass
class Script:
    """How the fake answers one chat completion request."""
    chunks: list = field(default_factory=lambda: ["Hello", " from", " the", " fake", "!"])
    delay: float = 0.0                 # seconds between chunks (token pacing, not sync)
    status: int = 200                  # non-200: answer `error` as JSON with this status
    error: object = None               # the error body's "error" value (string or object)
    headers: dict = field(default_factory=dict)   # sent with an error status (Retry-After)
    json_body: object = None           # answer this JSON (status 200) instead of a stream
    hold_headers: threading.Event | None = None   # wait before sending any response
    hold_first: threading.Event | None = None     # send headers, then wait before chunk 1
    hold_after: int | None = None      # with hold_first: wait after this many chunks instead
    error_event: str | None = None     # after the chunks, send `event: error` with this message
    cut_after: int | None = None       # after this many chunks, close mid-chunk
    garbage: bool = False              # send a non-JSON data line after the chunks
    finish_reason: str = "stop"
    usage: bool = True                 # send a usage chunk when stream_options asks for it
    raw_chunks: list | None = None     # full chunk dicts to send instead of text chunks
    # a request for model "fake-chunks-N" gets N text chunks (the benchmark uses it: the
    # hub passes a model name through, and refuses unknown body fields)
    done: bool = True                  # end with data: [DONE]
    drop_connection: bool = False      # close the connection after answering, unannounced
    unbatched: bool = False            # write chunk by chunk, so TCP pushback blocks the fake
    raw_body: bytes | None = None      # send these bytes as the body's one chunk, then end
    reasoning: list | None = None      # reasoning pieces streamed before the text chunks
    reasoning_field: str = "reasoning_content"   # LM Studio's name; some servers: reasoning
    tool_calls: list | None = None     # [{id, name, arguments}]: streamed in pieces after
                                       # the text; the finish reason becomes tool_calls
    usage_extra: dict = field(default_factory=dict)   # merged into usage (prompt_tokens_details)
    final_extra: dict = field(default_factory=dict)   # merged into the finish chunk and the
                                       # usage chunk (llama.cpp's stopping_word, timings)


@dataclass
class Relay:
    """How the fake answers a relayed endpoint (rerank, tokenize, audio, images)."""
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"
    status: int = 200
    chunks: list | None = None         # send these byte strings as chunks instead of `body`
    hold: threading.Event | None = None   # with chunks: wait for it after `hold_after`
    hold_after: int = 1
    length: bool = True                # `body` with Content-Length (False: chunked, one piece)


LLAMA_404 = Relay(status=404, body=json.dumps({"error": {
    "code": 404, "message": "File Not Found", "type": "not_found_error"}}).encode())


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: object
    client_port: int = 0               # tells kept-alive connections apart
    aborted: bool = False
    aborted_at: float | None = None    # time.monotonic() when the abort was seen
    sent_bytes: int = 0                # body bytes written so far (unbatched streams)
    finished: threading.Event = field(default_factory=threading.Event)   # whole body sent
    arrived_at: float = field(default_factory=time.monotonic)   # its body read, parsed
    raw: bytes = b""                   # the body's bytes as they came (relayed requests)


def chat_template(body: dict) -> str:
    """A ChatML-like rendering with its markers as words of their own, so /tokenize counts
    them: "<|im_start|> user one two <|im_end|> … <|im_start|> assistant"."""
    turns = [f"<|im_start|> system tools: {json.dumps(body['tools'])} <|im_end|>"] \
        if body.get("tools") else []
    turns += [f"<|im_start|> {m['role']} {text_of(m.get('content'))} <|im_end|>"
              for m in body["messages"]]
    return " ".join(turns + ["<|im_start|> assistant"])


def text_of(content) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content)
    return content or ""


def is_title_request(body) -> bool:
    """The summary model asked to name a thread (the chat page does after a first reply)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else {}
    return isinstance(first, dict) and str(first.get("content", "")).startswith(
        "Name the conversation")


class FakeLMStudio:
    def __init__(self) -> None:
        self.default = Script()
        self.title = Script(chunks=["A", " fine", " title"])   # answers title requests,
                                                               # never taking a queued script
        self.models = ["qwen2.5-7b-instruct", "qwen3-vl-4b-instruct"]
        self.loaded = {"qwen2.5-7b-instruct": ["qwen2.5-7b-instruct"]}
        self.native = "v1"            # "v1" (0.4+), "v0" (older: no /api/v1), "none"
        self.tokenizer = False        # answer POST /tokenize as llama.cpp's server does
        self.template = True          # with tokenizer: POST /apply-template too (404 if not)
        self.load_hold: threading.Event | None = None   # a slow load waits for this
        self.load_error: tuple | None = None            # (status, body) to answer a load
        self.parallel: dict = {}      # model → loaded_instances[].config.parallel
        self.contexts: dict = {}      # instance → the context length it was loaded with
        self.fit_context: int | None = None   # a load asked for more gets this (auto-fit)
        self.llama = False            # answer /health and /props as llama-server does
        self.no_embeddings = False    # /v1/embeddings: llama-server's 501 without --embeddings
        self.needs_loaded = False     # chat for a model with no loaded instance: LM Studio's
                                      # 400 "No models loaded"
        self.catalog: dict = {}       # key → size: what POST /api/v1/models/download finds;
                                      # the first status poll says it is completed
        self.slots = 1                # llama-server's total_slots
        self.health_status = 200      # /health's status (503: "Loading model")
        self.embedding_dims = 0       # embeddings: vectors this long (0: the 3-float toy)
        self.embedding_usage: dict | None = None   # embeddings' usage (None: LM Studio's 0s)
        self.in_flight = 0            # chat requests being answered now
        self.most_in_flight = 0
        self.served = 0               # chat requests answered to their end
        self.relays: dict = {}        # path → Relay: endpoints served as scripted there
        self.requests: list[Received] = []
        self.aborted = threading.Event()
        self.closed = threading.Event()   # set each time the fake has closed a connection
        self.received = threading.Condition()
        self._scripts: list[Script] = []
        self._lock = threading.Lock()
        self.server = _Server(self)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> "FakeLMStudio":
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kill(self) -> None:
        """Stop at once: refuse new connections and cut every open one, mid-stream."""
        self.stop()
        for conn in list(self.server.open):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def revive(self) -> None:
        """Serve again on the same port (a box that came back)."""
        port = self.server.server_address[1]
        self.server = _Server(self, port)
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def enqueue(self, *scripts: Script) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    def next_script(self) -> Script:
        with self._lock:
            return self._scripts.pop(0) if self._scripts else self.default

    def load_requests(self) -> list[Received]:
        """LM Studio's model loads (POST /api/v1/models/load), in order."""
        return [r for r in self.requests if r.path == "/api/v1/models/load"]

    def chat_requests(self) -> list[Received]:
        """Chat requests, but for the chat page's requests for a thread title."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")
                and not is_title_request(r.body)]

    def title_requests(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")
                and is_title_request(r.body)]

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        with self.received:
            return self.received.wait_for(lambda: len(self.chat_requests()) >= count, timeout)

    def record(self, received: Received) -> None:
        with self.received:
            self.requests.append(received)
            self.received.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, fake: FakeLMStudio, port: int = 0) -> None:
        self.fake = fake
        self.open: set = set()           # connections being served (kill() cuts them)
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request_thread(self, request, client_address) -> None:
        self.open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.open.discard(request)
            self.fake.closed.set()

    def handle_error(self, request, client_address) -> None:
        pass   # aborted clients are the point of this fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    # -- routing -----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record(None)
        fake = self.server.fake
        if self.path == "/__fake/aborts":     # for the stop-latency benchmark
            return self._json(200, [r.aborted_at for r in fake.requests if r.aborted])
        if self.path == "/__fake/arrivals":   # for the threads benchmark: when each chat came
            return self._json(200, [r.arrived_at for r in fake.chat_requests()])
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "organization_owner"}
                for m in fake.models]})
        if self.path == "/api/v0/models" and fake.native in ("v1", "v0"):
            return self._json(200, {"object": "list", "data": self._v0_rows(fake)})
        if self.path == "/api/v1/models" and fake.native == "v1":
            return self._json(200, {"models": [
                {"type": "vlm" if "vl" in m else "llm", "key": m,
                 "loaded_instances": [{"id": i, "config": self._instance_config(fake, m, i)}
                                      for i in fake.loaded.get(m, [])],
                 "max_context_length": 32768, "architecture": "qwen2",
                 "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
                 "params_string": "7B", "size_bytes": 4_683_073_536, "format": "gguf",
                 "capabilities": {"vision": "vl" in m, "trained_for_tool_use": True}}
                for m in fake.models]})
        if self.path.startswith("/api/v1/models/download/status/job_"):
            key = unquote(self.path.rsplit("/job_", 1)[1])
            fake.models.append(key)
            return self._json(200, {"job_id": f"job_{key}", "status": "completed",
                                    "total_size_bytes": fake.catalog[key],
                                    "downloaded_bytes": fake.catalog[key]})
        if self.path == "/health" and fake.llama:
            if fake.health_status != 200:
                return self._json(fake.health_status, {"error": {
                    "code": 503, "message": "Loading model", "type": "unavailable_error"}})
            return self._json(200, {"status": "ok"})
        if self.path == "/props" and fake.llama:
            return self._json(200, {"total_slots": fake.slots,
                                    "default_generation_settings": {"n_ctx": 4096}})
        self._json(200, {"error": f"Unexpected endpoint or method. (GET {self.path})"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        fake = self.server.fake
        if self.path in fake.relays:
            return self._relay(fake.relays[self.path], raw)
        body = json.loads(raw or b"null")
        received = self._record(body)
        if self.path == "/v1/chat/completions":
            if fake.needs_loaded and not fake.loaded.get(body.get("model")):
                return self._json(400, {"error": "No models loaded. Please load a model in "
                                                 "the developer page or use the 'lms load' "
                                                 "command."})
            script = fake.title if is_title_request(body) else fake.next_script()
            return self._chat(body, script, received)
        if self.path == "/v1/completions":
            return self._text_completion(body, fake.next_script(), received)
        if self.path == "/v1/embeddings" and fake.no_embeddings:
            return self._json(501, {"error": {"code": 501, "type": "not_supported_error",
                                              "message": "This server does not support "
                                                         "embeddings. Start it with "
                                                         "`--embeddings`"}})
        if self.path == "/v1/embeddings":             # LM Studio: floats, usage always 0
            return self._json(200, self._embeddings(fake, body))
        if self.path == "/tokenize" and fake.tokenizer:     # llama.cpp's server has one
            return self._json(200, {"tokens": list(range(len(body["content"].split())))})
        if self.path == "/apply-template" and fake.tokenizer:
            if not fake.template:                            # an older llama-server
                return self._json(404, {"error": {"code": 404, "message": "File Not Found",
                                                  "type": "not_found_error"}})
            return self._json(200, {"prompt": chat_template(body)})
        if self.path.startswith("/api/v1/") and fake.native != "v1":
            return self._json(200, {"error": f"Unexpected endpoint or method. "
                                             f"(POST {self.path})"})
        if self.path == "/api/v1/models/load":
            return self._load(fake, body)
        if self.path == "/api/v1/models/download":
            if body["model"] not in fake.catalog:
                return self._json(404, {"error": {"type": "model_not_found", "message":
                                                  f"Model {body['model']} not found in the "
                                                  "catalog"}})
            return self._json(200, {"job_id": f"job_{body['model']}", "status": "downloading",
                                    "total_size_bytes": fake.catalog[body["model"]],
                                    "downloaded_bytes": 0})
        if self.path == "/api/v1/models/unload":
            for instances in fake.loaded.values():
                if body["instance_id"] in instances:
                    instances.remove(body["instance_id"])
                    return self._json(200, {"instance_id": body["instance_id"]})
            return self._json(404, {"error": {"message": "instance not found"}})
        self._json(200, {"error": f"Unexpected endpoint or method. (POST {self.path})"})

    def _relay(self, relay: Relay, raw: bytes) -> None:
        """A relayed endpoint: the raw request kept, the scripted answer sent."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None                               # multipart, say
        received = Received(self.command, self.path, dict(self.headers), body,
                            self.client_address[1], raw=raw)
        self.server.fake.record(received)
        self._batch, self._received = None, received
        self.send_response(relay.status)
        self.send_header("Content-Type", relay.content_type)
        if relay.chunks is None and relay.length:
            self.send_header("Content-Length", str(len(relay.body)))
            self.end_headers()
            self.wfile.write(relay.body)
            received.finished.set()
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i, piece in enumerate(relay.chunks or [relay.body]):
                if relay.hold is not None and i == relay.hold_after and \
                        not self._hold(relay.hold):
                    return self._aborted(received)
                self._send(piece)
            self._write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return self._aborted(received)
        received.finished.set()

    @staticmethod
    def _embeddings(fake: FakeLMStudio, body: dict) -> dict:
        items = body["input"] if isinstance(body["input"], list) else [body["input"]]
        def vector(item) -> list:
            if fake.embedding_dims:     # full-precision floats, as a real model's are
                return [(i % 97 - 48) / 7919 for i in range(fake.embedding_dims)]
            return [len(str(item)) / 10, 0.5, -0.25]
        return {"object": "list", "model": body.get("model"), "data": [
            {"object": "embedding", "index": i, "embedding": vector(item)}
            for i, item in enumerate(items)],
            "usage": fake.embedding_usage or {"prompt_tokens": 0, "total_tokens": 0}}

    def _load(self, fake: FakeLMStudio, body: dict) -> None:
        if fake.load_hold is not None:
            fake.load_hold.wait(30)
        if fake.load_error is not None:
            return self._json(*fake.load_error)
        key = body["model"]
        if key not in fake.models:
            return self._json(404, {"error": {"message": f"Model {key} not found",
                                              "type": "model_not_found"}})
        instances = fake.loaded.setdefault(key, [])
        instance = key if not instances else f"{key}:{len(instances) + 1}"   # always new
        instances.append(instance)
        asked = body.get("context_length")
        if asked:
            fake.contexts[instance] = min(asked, fake.fit_context or asked)
        reply = {"type": "llm", "instance_id": instance, "load_time_seconds": 0.01,
                 "status": "loaded"}
        if body.get("echo_load_config"):
            reply["load_config"] = self._instance_config(fake, key, instance)
        self._json(200, reply)

    @staticmethod
    def _instance_config(fake: FakeLMStudio, model: str, instance: str) -> dict:
        config = {"context_length": fake.contexts.get(instance, 4096)}
        if model in fake.parallel:
            config["parallel"] = fake.parallel[model]
        return config

    def _v0_rows(self, fake: FakeLMStudio) -> list:
        """v0 lists each loaded instance as its own row, and unloaded models once."""
        rows = []
        for model in fake.models:
            kind = "vlm" if "vl" in model else "llm"
            for instance in fake.loaded.get(model, []):
                rows.append({"id": instance, "object": "model", "type": kind,
                             "state": "loaded", "loaded_context_length": 4096,
                             "max_context_length": 32768})
            if not fake.loaded.get(model):
                rows.append({"id": model, "object": "model", "type": kind,
                             "state": "not-loaded", "max_context_length": 32768})
        return rows

    def _record(self, body) -> Received:
        received = Received(self.command, self.path, dict(self.headers), body,
                            self.client_address[1])
        self.server.fake.record(received)
        return received

    # -- chat --------------------------------------------------------------------------------
    def _chat(self, body: dict, script: Script, received: Received) -> None:
        fake = self.server.fake
        with fake._lock:
            fake.in_flight += 1
            fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
        try:
            self._answer(body, script, received)
            with fake._lock:
                fake.served += 1
        finally:
            with fake._lock:
                fake.in_flight -= 1

    def _answer(self, body: dict, script: Script, received: Received) -> None:
        try:
            if script.hold_headers and not self._hold(script.hold_headers):
                return self._aborted(received)
            if script.status != 200:
                return self._json(script.status, {"error": script.error}, script.headers)
            if script.json_body is not None:
                return self._json(200, script.json_body)
            if not body.get("stream"):
                return self._json(200, self._completion(body, script))
            self._stream(body, script, received)
        except (BrokenPipeError, ConnectionResetError):
            self._aborted(received)

    def _stream(self, body: dict, script: Script, received: Received) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # Nothing paced or held: the whole stream in one write, as TCP would coalesce a
        # full-speed stream anyway (and the benchmarks measure the hub, not this fake).
        self._batch = [] if not (script.delay or script.hold_first or script.hold_headers
                                 or script.cut_after is not None or script.unbatched) else None
        self._received = received
        if script.raw_body is not None:
            self._send(script.raw_body)
            self._write(b"0\r\n\r\n", last=True)
            return
        hold_at = (script.hold_after or 0) if script.hold_first else None
        asked = re.fullmatch(r"fake-chunks-(\d+)", str(body.get("model")))
        texts = [" tok"] * int(asked.group(1)) if asked else script.chunks
        chunks = script.raw_chunks or self._scripted(body, script, texts)
        for index in range(1, body.get("n") or 1):   # more choices: the same, in capitals
            chunks += [self._chunk(body, {"content": c.upper()}, index=index) for c in texts]
            chunks.append(self._chunk(body, {}, script.finish_reason, index=index))
        for i, chunk in enumerate(chunks):
            if i == hold_at and not self._hold(script.hold_first):
                return self._aborted(received)
            if script.cut_after is not None and i == script.cut_after:
                self.wfile.write(b"40\r\ndata: {\"id\":")   # a chunk that never ends
                self.close_connection = True
                return
            if i and script.delay:
                time.sleep(script.delay)
            self._send(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if hold_at is not None and hold_at >= len(chunks) and not self._hold(script.hold_first):
            return self._aborted(received)
        if script.garbage:
            self._send(b"data: this is not json\n\n")
        if script.error_event:
            payload = {"error": {"message": script.error_event}, "message": script.error_event}
            self._send(b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n")
        else:
            if not script.raw_chunks:
                finish = "tool_calls" if script.tool_calls else script.finish_reason
                self._send(b"data: " + json.dumps(dict(self._chunk(
                    body, {}, finish), **script.final_extra)).encode() + b"\n\n")
            if script.usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = dict(self._chunk(body, {}), choices=[], usage=self._usage(body, script),
                             **script.final_extra)
                self._send(b"data: " + json.dumps(usage).encode() + b"\n\n")
            if script.done:
                # [DONE] and the terminator in one write: the hub closes right after [DONE]
                self._write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n", last=True)
                self.close_connection = script.drop_connection
                received.finished.set()
                return
        self._write(b"0\r\n\r\n", last=True)
        received.finished.set()

    def _send(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write(self, data: bytes, last: bool = False) -> None:
        if self._batch is None:
            self.wfile.write(data)
            self._received.sent_bytes += len(data)
            return
        self._batch.append(data)
        if last:
            self.wfile.write(b"".join(self._batch))

    def _hold(self, release: threading.Event) -> bool:
        """Wait for `release`; False the moment the client closes its connection."""
        pause = 0.005           # quick at first, then backing off: thousands may be held
        while not release.is_set():
            if readable(self.connection, pause) and \
                    self.connection.recv(1, socket.MSG_PEEK) == b"":
                return False
            pause = min(pause * 2, 0.2)
        return True

    def _aborted(self, received: Received) -> None:
        received.aborted_at = time.monotonic()
        received.aborted = True
        self.close_connection = True
        self.server.fake.aborted.set()

    def _text_completion(self, body: dict, script: Script, received: Received) -> None:
        """Legacy /v1/completions, streamed: text chunks (with legacy logprobs when asked),
        the finish, the usage."""
        chunks = [{"id": "cmpl-fake", "object": "text_completion", "created": 1700000000,
                   "model": body.get("model"),
                   "choices": [{"text": text, "index": 0, "finish_reason": None,
                                "logprobs": {"tokens": [text], "token_logprobs": [-0.5],
                                             "top_logprobs": [{text: -0.5}],
                                             "text_offset": [i]}
                                if body.get("logprobs") else None}]}
                  for i, text in enumerate(script.chunks)]
        chunks.append(dict(chunks[0], choices=[{"text": "", "index": 0, "logprobs": None,
                                                "finish_reason": script.finish_reason}]))
        chunks.append(dict(chunks[0], choices=[], usage=self._usage(
            {"messages": [{"content": body.get("prompt")}]}, script)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.close_connection = True          # the body is read until the connection closes
        frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
        hold_at = (script.hold_after or 0) if script.hold_first else None
        if hold_at:                           # the first chunks, then the hold
            self.wfile.write(b"".join(frames[:hold_at]))
        if script.hold_first and not self._hold(script.hold_first):
            return self._aborted(received)
        self.wfile.write(b"".join(frames[hold_at or 0:]) + b"data: [DONE]\n\n")

    def _scripted(self, body: dict, script: Script, texts: list) -> list:
        """The chunks of a scripted answer: reasoning, text, then tool call pieces, the
        first delta carrying the role."""
        deltas = [{script.reasoning_field: r} for r in script.reasoning or ()]
        deltas += [{"content": c} for c in texts]
        first_text = len(deltas) - len(texts)
        for index, call in enumerate(script.tool_calls or ()):
            arguments = call["arguments"]
            half = len(arguments) // 2
            deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                           "function": {"name": call["name"],
                                                        "arguments": arguments[:half]}}]})
            deltas.append({"tool_calls": [{"index": index,
                                           "function": {"arguments": arguments[half:]}}]})
        if deltas:
            deltas[0] = {"role": "assistant", **deltas[0]}
        chunks = [self._chunk(body, delta) for delta in deltas]
        if body.get("logprobs"):                       # llama-server sends them per token
            for chunk, text in zip(chunks[first_text:], texts):
                chunk["choices"][0]["logprobs"] = {"content": [
                    {"token": text, "logprob": -0.5, "bytes": list(text.encode()),
                     "top_logprobs": []}]}
        return chunks

    def _chunk(self, body: dict, delta: dict, finish_reason=None, index: int = 0,
               logprobs=None) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body.get("model"), "system_fingerprint": body.get("model"),
                "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                             "finish_reason": finish_reason}]}

    def _usage(self, body: dict, script: Script) -> dict:
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        completion = len(script.chunks)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion, **script.usage_extra}

    def _completion(self, body: dict, script: Script) -> dict:
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
                "model": body.get("model"),
                "choices": [{"index": 0, "logprobs": None, "finish_reason": script.finish_reason,
                             "message": {"role": "assistant", "content": "".join(script.chunks)}}],
                "usage": self._usage(body, script)}

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    # Standalone, for the benchmarks: prints its base URL, serves until killed.
    # --hold-after N: every stream holds after N chunks until its client goes away.
    import sys
    fake = FakeLMStudio().start()
    if "--hold-after" in sys.argv:
        fake.default = Script(hold_first=threading.Event(),
                              hold_after=int(sys.argv[sys.argv.index("--hold-after") + 1]))
    print(fake.url, flush=True)
    threading.Event().wait()
