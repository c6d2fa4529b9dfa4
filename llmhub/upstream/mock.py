"""The built-in mock upstream (`kind = mock`, `--upstream mock`): the seed SSE server.

Like the Langbase-compatible seed server, it answers with one of a few sample responses,
broken into words and punctuation, sent as `min_chunks`..`max_chunks` text events with
`chunk_delay_seconds` between them, then its finish and usage. A request `seed`
makes the choice repeatable. No network is involved; abort() stops it at once.
"""

import hashlib
import json
import random
import re
import threading
from typing import Iterator

from llmhub.config import MockConfig, ModelsConfig, UpstreamConfig
from llmhub.context import estimate_input, estimate_messages, estimate_tokens
from llmhub.errors import UpstreamError
from llmhub.events import Finish, TextDelta, Usage
from llmhub.upstream.exchange import Aborted
from llmhub.upstream.gate import Gate
from llmhub.waiting import waiting

__all__ = ["Mock", "SAMPLE_RESPONSES", "split_words"]

SAMPLE_RESPONSES = [
    "Hello there! I am a mock model served by llmhub, so you can try every endpoint "
    "without a model server.",
    "Streaming works: each word and punctuation mark arrives as its own piece, just as a "
    "real model would send them.",
    "Local models are great for privacy, speed, and experimenting without limits.",
    "Привет! Это тестовый ответ: он нужен, чтобы проверить потоковую передачу.",
    "Here is a short answer. It has two sentences, and it ends with a period.",
]
NAMED = ("default", "regular", "vision", "summary")   # the [models] that name a model
_WORDS = re.compile(r"\s*[\w'-]+|\s*[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words (with their leading space) and punctuation marks, in order."""
    return _WORDS.findall(text)


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1, 4) for b in digest[:8]]


def group(pieces: list[str], count: int) -> list[str]:
    """`count` consecutive groups of pieces, as even as possible, nothing dropped."""
    count = max(1, min(count, len(pieces)))
    size, extra = divmod(len(pieces), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(pieces[start:end]))
        start = end
    return out


class Mock:
    kind = "mock"
    label = "mock upstream"
    base_url = "mock://llmhub"
    relays = False           # no endpoints beyond chat and embeddings

    def __init__(self, config: UpstreamConfig, mock: MockConfig, models: ModelsConfig) -> None:
        self.config = config
        self.name = config.name
        self.mock = mock
        named = [getattr(models, k) for k in NAMED]
        self.models = list(dict.fromkeys(["mock-model"] + [m for m in named if m]))
        self.vision = models.vision
        # What LM Studio would have: every model downloaded, mock-model loaded.
        self.catalog: dict[str, list[str]] = {m: [] for m in self.models}
        self.catalog["mock-model"] = ["mock-model"]
        self._lock = threading.Lock()
        self.gate = Gate(config.max_concurrent, config.max_queued)

    @property
    def provider(self) -> dict:
        return {"name": self.kind, "base_url": self.base_url}

    def chat(self, body: dict, api_key: str | None = None,
             extra_headers: dict | None = None) -> "MockCall":
        return MockCall(self, body)

    complete = chat          # a legacy completion gets a sample answer too

    def embeddings(self, body: dict) -> dict:
        """A repeatable 8-number vector per input, from its hash: enough to try RAG code."""
        given = body.get("input")
        items = given if isinstance(given, list) and not all(isinstance(i, int) for i in given) \
            else [given]
        data = [{"object": "embedding", "index": i, "embedding": vector(json.dumps(item))}
                for i, item in enumerate(items)]
        return {"object": "list", "data": data, "model": body.get("model") or "mock-model",
                "usage": {"prompt_tokens": 0, "total_tokens": 0}}

    def list_models(self) -> list[dict]:
        return [{"id": m, "object": "model", "created": 0, "owned_by": "llmhub-mock"}
                for m in dict.fromkeys(self.models)]

    def probe(self, timeout: float = 0) -> dict:
        return {"reachable": True, "latency_ms": 0.0}

    def check(self, timeout: float = 0) -> dict:
        with self._lock:
            return {"models": list(self.catalog), "slots": {},
                    "loaded": {key for key, instances in self.catalog.items() if instances}}

    # -- model management, in memory, with LM Studio's `key:2` habit ---------------------------
    def native_models(self) -> tuple[list[dict], str]:
        with self._lock:
            return [{"key": key, "type": "vlm" if key == self.vision else "llm",
                     "vision": key == self.vision, "loaded": bool(instances),
                     "instances": list(instances), "context_length": 4096 if instances
                     else None, "parallel": None, "max_context_length": 32768}
                    for key, instances in self.catalog.items()], "mock"

    def load(self, key: str, context_length: int | None, timeout: float) -> dict:
        with self._lock:
            if key not in self.catalog:
                raise UpstreamError("Model not found", status=404, code="model_not_found")
            instances = self.catalog[key]
            instance = key if not instances else f"{key}:{len(instances) + 1}"
            instances.append(instance)
        return {"type": "llm", "instance_id": instance, "load_time_seconds": 0.0,
                "status": "loaded"}

    def unload(self, instance_id: str) -> None:
        with self._lock:
            for instances in self.catalog.values():
                if instance_id in instances:
                    instances.remove(instance_id)
                    return
        raise UpstreamError(f"No instance {instance_id!r}", status=404, code="not_found")


class MockCall:
    def __init__(self, upstream: Mock, body: dict) -> None:
        self.upstream, self.body = upstream, body
        self._aborted = threading.Event()
        self._rng = random.Random(body.get("seed"))

    def open(self) -> None:
        if self._aborted.is_set():
            raise Aborted("aborted")

    def events(self) -> Iterator:
        settings = self.upstream.mock
        text = self._rng.choice(SAMPLE_RESPONSES)
        count = self._rng.randint(settings.min_chunks, settings.max_chunks)
        for i, piece in enumerate(group(split_words(text), count)):
            if i:
                waiting()              # as a real upstream's read would: the last piece goes out
                if self._aborted.wait(settings.chunk_delay_seconds):
                    raise Aborted("aborted")
            yield TextDelta(piece)
        yield Finish("stop", self.body.get("model") or "mock-model", "llmhub-mock")
        messages = self.body.get("messages")
        prompt = estimate_messages(messages) if messages else \
            estimate_input(self.body.get("prompt"))
        yield Usage(prompt, estimate_tokens(text))

    def abort(self) -> None:
        self._aborted.set()

    def close(self) -> None:
        pass
