"""The stream pump: one run's events, rendered by a dialect, written to one client.

The pump is the only writer of a stream, so pings and events never interleave mid-frame.
It waits on the run's events with a short timeout, and on each quiet tick asks whether the
client is still there and whether a ping is due: that is how a client leaving is noticed
while the upstream is silent (a long prefill). It knows no sockets and no HTTP: it writes
through a `StreamWriter`, which the server implements over a connection and a test over a
list.
"""

import time
from typing import Protocol

from llmhub.errors import error_of

__all__ = ["Pump", "StreamWriter"]


class StreamWriter(Protocol):
    @property
    def started(self) -> bool:             # the headers (and so a 200) have gone out
        ...

    def start(self, data: bytes) -> None:  # the headers, with the first data
        ...

    def send(self, data: bytes) -> None:   # one piece of the body; never empty
        ...

    def end(self) -> None:                 # the body's end, where the framing has one
        ...

    def client_gone(self) -> bool:
        ...


class Pump:
    """Streams `run` from event `cursor` on, as the follower `reader` (Run.follow).

    A run that fails before anything went out raises its error, so the server can still
    answer with a real status; a client that leaves raises ConnectionResetError.
    """

    poll = 0.1       # seconds: how soon a silent run notices its client left, …
    poll_max = 1.0   # … backing off to this while it stays silent: a thousand idle streams
                     # must not wake ten thousand times a second

    def __init__(self, run, renderer, writer: StreamWriter, ping_every: float,
                 cursor: int = 0, reader: int | None = None) -> None:
        self.run, self.renderer, self.writer = run, renderer, writer
        self.ping_every, self.cursor, self.reader = ping_every, cursor, reader

    def pump(self) -> None:
        run, renderer, writer = self.run, self.renderer, self.writer
        quickest = poll = min(self.poll, self.ping_every)
        next_ping = time.monotonic() + self.ping_every   # a steady beat from acceptance on
        if renderer.eager:
            writer.start(renderer.opening(run))
        while True:
            events = run.read(self.cursor, poll, self.reader)
            if events:
                self.cursor += len(events)
                if not writer.started and events[0].kind == "error":
                    raise error_of(events[0])
                self._write(b"".join(renderer.render(event) for event in events))
                if events[-1].kind == "done":
                    writer.end()
                    return
                poll = quickest
            elif writer.client_gone():
                raise ConnectionResetError("client went away")
            else:
                poll = min(poll * 1.5, self.poll_max, self.ping_every)
            if time.monotonic() >= next_ping:
                next_ping = time.monotonic() + self.ping_every
                self._write(renderer.ping())

    def _write(self, data: bytes) -> None:
        if not self.writer.started:
            self.writer.start(data)
        elif data:
            self.writer.send(data)
