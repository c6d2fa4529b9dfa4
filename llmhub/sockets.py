"""Socket readiness checks that hold up at scale and on every platform.

`select.select()` refuses file descriptors at or above FD_SETSIZE (1024 on Linux): a hub
holding a thousand streams has such descriptors, and a check that treats that error as
"the client left" cancels healthy streams. `poll()` has no such limit; Windows has no poll,
and its select() has no descriptor-number limit.
"""

import select
import socket

__all__ = ["readable", "peer_closed"]


def readable(sock: socket.socket, timeout: float = 0.0) -> bool:
    """True if a read would not block (data, EOF or an error is waiting)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def peer_closed(sock: socket.socket) -> bool:
    """True once the other side has closed: readable, with nothing to read."""
    try:
        return readable(sock) and sock.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionError, OSError):
        return True
