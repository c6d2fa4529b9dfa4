"""streaming.Pump without a socket: a run's events through a renderer into a list."""

import threading

import pytest

from llmhub.engine.runs import Registry
from llmhub.errors import HubError, UpstreamError
from llmhub.events import TextDelta
from llmhub.http.streaming import Pinger, Pump
from llmhub.waiting import delivering
from llmhub.wire import StreamRenderer


class Writer:
    def __init__(self) -> None:
        self.started, self.gone, self.full = False, False, False
        self.parts: list[tuple[str, bytes]] = []

    def start(self, data: bytes) -> None:
        self.started = True
        self.parts.append(("start", data))

    def send(self, data: bytes) -> None:
        assert data, "an empty piece would end a chunked body"
        self.parts.append(("send", data))

    def end(self, data: bytes = b"") -> None:
        self.parts.append(("end", data))

    def client_gone(self) -> bool:
        return self.gone

    def writable(self) -> bool:
        return not self.full


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
    assert writer.parts == [("start", b"meta;"), ("end", b".")]   # the last piece ends it


# --- driven: the run's driver writes between reads (Pump.flush), the pinger pings -------------

def driven(renderer=None, writer=None):
    run = Registry().create()
    writer = writer or Writer()
    pump = Pump(run, renderer or Text(), writer, ping_every=10,
                reader=run.follow(0, driving=True))
    pump.open()
    run.start("m", {})
    return run, writer, pump


def test_a_flush_writes_what_one_read_brought_in_one_piece_and_leaves_the_end_to_pump():
    run, writer, pump = driven()
    run.emit(TextDelta("Hel"))
    run.emit(TextDelta("lo"))
    pump.flush()
    assert writer.parts == [("start", b"Hello")]
    pump.flush()                                    # nothing new: nothing written
    run.emit(TextDelta("!"))
    run.finish("complete", finish_reason="stop")    # the closing events: not flush's
    pump.flush()
    assert writer.parts == [("start", b"Hello"), ("send", b"!")]
    pump.pump()
    assert writer.parts[-1] == ("end", b".")       # the last piece and the end: one write


def test_a_driven_reader_never_holds_its_own_writer_back():
    run, writer, pump = driven()
    run.log.buffer_limit = 10
    for _ in range(100):                            # far past the buffer, nobody reading:
        assert run.emit(TextDelta("xxxxxxxx"))      # a follower would block here
    pump.flush()
    assert writer.parts == [("start", b"xxxxxxxx" * 100)]
    run.cancel()


def test_a_failed_write_cancels_the_run_and_pump_says_the_client_went():
    class Gone(Writer):
        def send(self, data):
            raise BrokenPipeError
    run, writer, pump = driven(writer=Gone())
    run.emit(TextDelta("a"))
    pump.flush()                                    # starts the stream
    run.emit(TextDelta("b"))
    pump.flush()                                    # never raises into the driver …
    assert run.status == "cancelled" and run.cancel_reason == "client_gone"
    with pytest.raises(ConnectionResetError):       # … the server hears of it after
        pump.pump()


def test_a_renderer_bug_in_a_flush_fails_the_run_and_is_raised_after():
    class Broken(Text):
        def render(self, event):
            raise RuntimeError("bug")
    run, writer, pump = driven(Broken())
    run.emit(TextDelta("a"))
    pump.flush()
    assert run.status == "failed"
    with pytest.raises(RuntimeError):
        pump.pump()


def test_the_pinger_pings_only_when_due_writable_and_not_writing():
    run, writer, pump = driven()
    pump.pinging = True                             # as Pinger.add does
    pump.keep_pinging(pump.next_ping - 1)           # not due
    writer.full = True
    pump.keep_pinging(pump.next_ping)               # due, but a write could block
    assert writer.parts == []
    writer.full = False
    with pump._lock:                                # the driver is writing
        pump.keep_pinging(pump.next_ping)
    assert writer.parts == []
    pump.keep_pinging(pump.next_ping)
    assert writer.parts == [("start", b"p")]
    run.cancel()


def test_a_tick_that_took_a_pump_before_it_left_the_pinger_writes_nothing():
    # A tick copies the pinger's pumps, then pings each: one discarded in between has
    # ended its stream, and its connection may already carry the next reply.
    run, writer, pump = driven()
    pinger = Pinger(ping_every=10)
    pinger.add(pump)
    pinger.discard(pump)
    pump.keep_pinging(pump.next_ping)               # the late tick
    assert writer.parts == []
    run.cancel()


def test_a_driven_streams_first_token_is_delivered_the_moment_it_is_made():
    # The rest of the read it came in (a burst after the prefill) waits for the next
    # delivery; the first token, which the client is waiting on, does not.
    run, writer, pump = driven()
    with delivering(pump.flush):
        run.emit(TextDelta(""))                     # no text yet: not a token
        assert writer.parts == []
        run.emit(TextDelta("Hel"))
        assert writer.parts == [("start", b"Hel")]
        run.emit(TextDelta("lo"))                   # the rest: at the next wait
        assert writer.parts == [("start", b"Hel")]
    run.cancel()
