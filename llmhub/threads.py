"""The SQLite store: threads, messages, summaries, responses (DESIGN §6).

Rules:
1. Only `write_tx()` writes, and it starts with BEGIN IMMEDIATE: a deferred transaction that
   upgrades to a write ignores busy_timeout and fails at once with "database is locked".
2. Connections are per thread (`threading.local`), opened with isolation_level=None so the
   driver issues no hidden BEGIN; `close()` closes every one of them.
3. Migrations are an append-only list of named functions. The name is the identity: never
   edit, reorder or rename a shipped one. Each runs in the same transaction as its record.
"""

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["Store", "MIGRATIONS"]


def _create_threads_and_messages(conn: sqlite3.Connection) -> None:
    # seq orders a thread's messages; created_at alone collides within a millisecond.
    conn.execute("""CREATE TABLE threads (
        id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
        title TEXT)""")
    conn.execute("""CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT, name TEXT,
        tool_call_id TEXT, tool_calls TEXT, attachments TEXT, metadata TEXT,
        tokens INTEGER, created_at INTEGER NOT NULL, UNIQUE (thread_id, seq))""")


MIGRATIONS = [
    ("create_threads_and_messages", _create_threads_and_messages),
]


class Store:
    busy_timeout_ms = 5000   # the sqlite3 default, set explicitly so it is visible

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connection()
        conn.execute("PRAGMA journal_mode=WAL")   # persists in the file; outside any tx
        self._migrate(conn)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the store is closed")
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self.busy_timeout_ms / 1000)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            conn.execute("PRAGMA foreign_keys=ON")      # per connection, off by default
            conn.execute("PRAGMA synchronous=NORMAL")   # durable across crashes with WAL
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def write_tx(self):
        """A write transaction: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def applied_migrations(self) -> list[str]:
        rows = self.connection().execute("SELECT name FROM migrations ORDER BY applied_at, name")
        return [row["name"] for row in rows]

    def health(self) -> dict:
        try:
            self.connection().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return {"status": "error", "path": str(self.path), "error": str(exc)}
        return {"status": "ok", "path": str(self.path),
                "migrations": len(self.applied_migrations())}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                     "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        for name, migrate in MIGRATIONS:
            with self.write_tx() as tx:
                if tx.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    continue
                migrate(tx)
                tx.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                           (name, time.time()))
