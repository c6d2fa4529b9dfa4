"""streaming.Pump without a socket: a run's events through a renderer into a list."""

import threading

import pytest

from llmhub.engine.runs import Registry
from llmhub.errors import HubError, UpstreamError
from llmhub.events import TextDelta
from llmhub.http.streaming import Pump
from llmhub.wire import StreamRenderer


class Writer:
    def __init__(self) -> None:
        self.started, self.gone = False, False
        self.parts: list[tuple[str, bytes]] = []

    def start(self, data: bytes) -> None:
        self.started = True
        self.parts.append(("start", data))

    def send(self, data: bytes) -> None:
        assert data, "an empty piece would end a chunked body"
        self.parts.append(("send", data))

    def end(self) -> None:
        self.parts.append(("end", b""))

    def client_gone(self) -> bool:
        return self.gone


class Text(StreamRenderer):
    def render(self, event) -> bytes:
        if event.kind == "delta":
            return event.text.encode()
        return b"." if event.kind == "done" else b""

    def ping(self) -> bytes:
        return b"p"


def started_run():
    run = Registry().create()
    run.start("m", {})
    return run


def test_events_are_written_in_order_then_the_end():
    run, writer = started_run(), Writer()
    run.emit(TextDelta("Hel"))
    run.emit(TextDelta("lo"))
    run.finish("complete", finish_reason="stop")
    Pump(run, Text(), writer, ping_every=10).pump()
    body = b"".join(data for _, data in writer.parts)
    assert writer.parts[0][0] == "start" and writer.parts[-1] == ("end", b"")
    assert body == b"Hello."


def test_a_silent_run_gets_pings_and_a_leaving_client_is_noticed():
    run, writer = started_run(), Writer()
    pinged = threading.Event()

    class Counting(Text):
        def ping(self):
            if len(writer.parts) >= 2:
                writer.gone = True          # the client leaves after two pings
                pinged.set()
            return b"p"

    with pytest.raises(ConnectionResetError):
        Pump(run, Counting(), writer, ping_every=0.01).pump()
    assert pinged.is_set() and [kind for kind, _ in writer.parts[:2]] == ["start", "send"]
    run.cancel()


def test_an_error_before_anything_went_out_is_raised_for_a_real_status():
    run, writer = Registry().create(), Writer()
    run.finish("fail", error=UpstreamError("model not loaded", status=404,
                                           code="model_not_found"))
    with pytest.raises(HubError) as raised:
        Pump(run, Text(), writer, ping_every=10).pump()
    assert raised.value.status == 404 and not writer.parts


def test_an_eager_renderer_opens_before_the_first_event():
    class Eager(Text):
        eager = True

        def opening(self, run):
            return b"meta;"

    run, writer = started_run(), Writer()
    run.finish("complete")
    Pump(run, Eager(), writer, ping_every=10).pump()
    assert writer.parts[0] == ("start", b"meta;") and writer.parts[-1] == ("end", b"")
