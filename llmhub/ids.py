"""Random ids from os.urandom, drawn in bulk.

Every run needs an unguessable id, and os.urandom is a syscall that releases the GIL: under
load, each release is a context switch. Drawing 4 KiB at a time makes that one syscall per
few hundred ids, with the same CSPRNG bytes.
"""

import os
import threading
import uuid

__all__ = ["random_bytes", "uuid4"]

_BATCH = 4096
_lock = threading.Lock()
_pool = b""


def random_bytes(count: int) -> bytes:
    global _pool
    with _lock:
        if len(_pool) < count:
            _pool = os.urandom(max(_BATCH, count))
        taken, _pool = _pool[:count], _pool[count:]
    return taken


def uuid4() -> uuid.UUID:
    return uuid.UUID(bytes=random_bytes(16), version=4)
