"""The SQLite database under every store: connections, transactions, migrations, upkeep.

The stores (threads.py, responses.py, requests.py) each hold one Database and own their
tables' SQL; everything about SQLite itself is here.

Rules:
1. Public store methods own their transactions; helpers named `_..._tx` run inside one.
2. Every writing transaction starts with BEGIN IMMEDIATE (`write_tx`, the one way to
   write): a deferred transaction that upgrades to a write ignores busy_timeout and fails
   at once with "database is locked".
3. Connections are opened with isolation_level=None (no hidden BEGIN) and checked out of a
   small pool per operation, so handler threads, which come and go with connections, never
   leave a connection behind.
4. Migrations are an append-only list of named functions. The name is the identity: never
   edit, reorder or rename a shipped one. Each runs in the same transaction as its record.
5. sqlite3 errors leave as StorageError (503, or 507 when the disk is full), so every caller
   answers a clear status in its dialect's shape.
6. A row's end that the database refuses (disk full, read-only) is held in memory, the
   failed end its caller gives (`if_fails`), laid over the row on every read (`with_held`)
   and written by `retry_held` when the disk is back; at most `held_most`, the oldest past
   it counted.
7. Retention sweeps (retention.py) walk each table's `_swept` index, once per
   `[retention] sweep_interval_seconds`, never the rows' text.
"""

import collections
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from llmhub.context import message_tokens
from llmhub.errors import HubError
from llmhub.store import chains
from llmhub.wire import json_str

__all__ = ["Database", "StorageError", "MIGRATIONS", "MESSAGE_BYTES", "prune_tx", "over_bound",
           "where"]

log = logging.getLogger("llmhub.store")


# --- migrations ------------------------------------------------------------------------------

def _create_threads_and_messages(conn: sqlite3.Connection) -> None:
    # content, tool_calls, attachments and metadata hold JSON text: content may be a string,
    # null (a tool-call turn) or a list of parts, and must come back as exactly that.
    conn.execute("""CREATE TABLE threads (
        id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
        title TEXT)""")
    conn.execute("""CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, name TEXT,
        tool_call_id TEXT, tool_calls TEXT NOT NULL DEFAULT '[]',
        attachments TEXT NOT NULL DEFAULT '[]', metadata TEXT NOT NULL DEFAULT '{}',
        tokens INTEGER, created_at INTEGER NOT NULL, UNIQUE (thread_id, seq))""")


def _create_summaries(conn: sqlite3.Connection) -> None:
    # A summary covers a thread's messages up to and including upto_seq; the newest one is
    # the one in use. Older ones are kept: they cost little and explain what was sent when.
    conn.execute("""CREATE TABLE summaries (
        thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
        upto_seq INTEGER NOT NULL, text TEXT NOT NULL, tokens INTEGER NOT NULL,
        created_at INTEGER NOT NULL, PRIMARY KEY (thread_id, upto_seq))""")


def _create_responses(conn: sqlite3.Connection) -> None:
    # No foreign key to threads: a response outlives the deletion of its thread, as a
    # record of what was answered. `events` is the run's event log, stored once at the end,
    # so a finished response replays with the same event ids a live one had.
    conn.execute("""CREATE TABLE responses (
        id TEXT PRIMARY KEY, thread_id TEXT, model TEXT, provider TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL, output TEXT NOT NULL DEFAULT '', usage TEXT,
        metadata TEXT NOT NULL DEFAULT '{}', context TEXT NOT NULL DEFAULT '{}',
        events TEXT, created_at REAL NOT NULL, finished_at REAL)""")
    conn.execute("CREATE INDEX responses_created ON responses (created_at)")


def _add_thread_activity(conn: sqlite3.Connection) -> None:
    # The web page lists threads by last activity, newest first, a page at a time; every
    # append bumps updated_at. Existing threads start from their newest message's time.
    conn.execute("ALTER TABLE threads ADD COLUMN updated_at REAL")
    conn.execute("UPDATE threads SET updated_at = COALESCE((SELECT MAX(created_at) FROM "
                 "messages WHERE thread_id = threads.id), created_at)")
    conn.execute("CREATE INDEX threads_updated ON threads (updated_at)")


def _add_running_tokens(conn: sqlite3.Connection) -> None:
    # Each message carries its thread's estimated tokens up to and including itself, so the
    # window a budget holds, and the tokens not yet summarised, are index look-ups rather
    # than a scan of the whole thread: a run's start stays flat however long the thread is.
    conn.execute("ALTER TABLE messages ADD COLUMN cum_tokens INTEGER")
    rows = conn.execute("SELECT id, thread_id, content FROM messages ORDER BY thread_id, seq")
    updates, thread, running = [], None, 0
    for row in rows:
        if row["thread_id"] != thread:
            thread, running = row["thread_id"], 0
        running += message_tokens({"content": json.loads(row["content"])})
        updates.append((running, row["id"]))
    conn.executemany("UPDATE messages SET cum_tokens = ? WHERE id = ?", updates)
    conn.execute("CREATE INDEX messages_running ON messages (thread_id, cum_tokens)")


def _add_reasoning(conn: sqlite3.Connection) -> None:
    # The model's reasoning, kept with its answer: another dialect may show it, and
    # [context] replay_reasoning may send it back. NULL for every message before this.
    conn.execute("ALTER TABLE messages ADD COLUMN reasoning TEXT")


def _create_api_responses(conn: sqlite3.Connection) -> None:
    # OpenAI's Responses API (/v1/responses), apart from the seed's /responses table: each
    # row keeps its own input items and output items, and the id of the response it
    # continues, so a chain is rebuilt by walking previous_id (two children may share a
    # parent: a chain branches). `request` keeps what the response object echoes.
    conn.execute("""CREATE TABLE api_responses (
        id TEXT PRIMARY KEY, created_at REAL NOT NULL, status TEXT NOT NULL,
        previous_id TEXT, conversation_id TEXT, model TEXT,
        request TEXT NOT NULL DEFAULT '{}', input TEXT NOT NULL DEFAULT '[]',
        output TEXT NOT NULL DEFAULT '[]', usage TEXT, error TEXT, events TEXT,
        finished_at REAL)""")
    conn.execute("CREATE INDEX api_responses_created ON api_responses (created_at)")


def _create_requests(conn: sqlite3.Connection) -> None:
    # The request log: one row per finished run, written in batches (accounting.py), kept
    # by count and age. Key names only: a key itself is never stored.
    conn.execute("""CREATE TABLE requests (
        run_id TEXT PRIMARY KEY, at REAL NOT NULL, key TEXT NOT NULL, route TEXT,
        dialect TEXT, requested_model TEXT, model TEXT, upstream TEXT, status TEXT NOT NULL,
        finish_reason TEXT, ttft_ms REAL, duration_ms REAL, input_tokens INTEGER,
        output_tokens INTEGER, estimated INTEGER NOT NULL DEFAULT 0, error_code TEXT)""")
    conn.execute("CREATE INDEX requests_at ON requests (at)")


def _add_request_bodies(conn: sqlite3.Connection) -> None:
    # With [log] capture_bodies: the run's request and response, redacted and cut short.
    conn.execute("ALTER TABLE requests ADD COLUMN request_body TEXT")
    conn.execute("ALTER TABLE requests ADD COLUMN response_body TEXT")


def _add_request_target(conn: sqlite3.Connection) -> None:
    # Which configured upstream served the run (a pool spreads one model over several).
    conn.execute("ALTER TABLE requests ADD COLUMN target TEXT")


def _add_owners(conn: sqlite3.Connection) -> None:
    # Every stored thing belongs to the key that made it (its name; `local` without keys).
    # Rows from before keys were owners belong to `local`: an admin key sees them, and
    # docs/sharing.md says how to hand them to a key.
    for table in ("threads", "responses", "api_responses"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'")
    conn.execute("CREATE INDEX threads_owner ON threads (owner, updated_at)")
    conn.execute("CREATE INDEX requests_key ON requests (key, at)")


def _add_row_sizes(conn: sqlite3.Connection) -> None:
    # The retention sweep's size bounds read what each row weighs, newest first, at every
    # tick. Summing length() over the rows read every message and stored input in full (a
    # 15 MiB image included) each time; a `bytes` column kept by each write, in an index
    # that also holds the sweep's order (and a response's status: live ones are never
    # swept), makes that pass an index-only scan. The index led by created_at serves the
    # age bound too. Existing rows are weighed once, here.
    conn.execute("ALTER TABLE threads ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0")
    conn.execute(f"UPDATE threads SET bytes = (SELECT COALESCE(SUM({MESSAGE_BYTES}), 0) "
                 "FROM messages m WHERE m.thread_id = threads.id)")
    conn.execute("CREATE INDEX threads_swept ON threads (updated_at, id, bytes)")
    for table, at in SWEPT.items():
        conn.execute(f"ALTER TABLE {table} ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"UPDATE {table} SET bytes = {ROW_BYTES[table]}")
        conn.execute(f"CREATE INDEX {table}_swept ON {table} ({at}, status, bytes)")


def _add_turn_chains(conn: sqlite3.Connection) -> None:
    # A client that resends its whole conversation each turn (the Messages API with
    # [anthropic] store) has only what follows the longest stored prefix appended. Finding
    # that prefix by reading the stored thread cost every turn the whole thread. Each
    # message now carries a hash of its thread's turns up to and including itself
    # (chains.py), so the prefix is found by the newest message's chain, or a few index
    # look-ups when the client rewrote its history (ThreadStore.append_new).
    conn.execute("ALTER TABLE messages ADD COLUMN chain INTEGER")
    rows = conn.execute("SELECT id, thread_id, role, content, tool_call_id, tool_calls "
                        "FROM messages ORDER BY thread_id, seq")
    updates, thread, chain = [], None, None
    for row in rows:
        if row["thread_id"] != thread:
            thread, chain = row["thread_id"], None
        chain = chains.chain(chain, chains.stored_turn(row))
        updates.append((chain, row["id"]))
    conn.executemany("UPDATE messages SET chain = ? WHERE id = ?", updates)
    conn.execute("CREATE INDEX messages_chain ON messages (thread_id, chain)")


def _create_input_pieces(conn: sqlite3.Connection) -> None:
    # A /v1/responses input holding a large string (a 15 MiB screenshot as base64) was one
    # JSON text bound to the INSERT: Python held the text, SQLite copied the bound value
    # and built the row from it, so the store alone held the body three times over.
    # Such an input is written as UTF-8 pieces of about 1 MiB instead, each made, bound and
    # let go in turn (wire.json_stream), its row's `input` left '' to say so. Small inputs
    # stay in the column as before.
    conn.execute("""CREATE TABLE api_response_input (
        response_id TEXT NOT NULL REFERENCES api_responses(id) ON DELETE CASCADE,
        part INTEGER NOT NULL, piece BLOB NOT NULL, PRIMARY KEY (response_id, part))""")


def _create_files_and_batches(conn: sqlite3.Connection) -> None:
    # OpenAI's Files and Batch APIs (store/files.py, store/batches.py). A file's bytes are
    # in the files folder beside the database; its row says whose it is and what it is.
    # A batch line's result is one row, written once as the line finishes (INSERT OR
    # IGNORE on its number): a restart runs only the lines without one.
    conn.execute("""CREATE TABLE files (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL,
        purpose TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL)""")
    conn.execute("CREATE INDEX files_owner ON files (owner, created_at)")
    conn.execute("""CREATE TABLE batches (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL,
        status TEXT NOT NULL, record TEXT NOT NULL)""")
    conn.execute("CREATE INDEX batches_owner ON batches (owner, created_at)")
    conn.execute("""CREATE TABLE batch_lines (
        batch_id TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        line INTEGER NOT NULL, ok INTEGER NOT NULL, result TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, line))""")


MIGRATIONS = [
    ("create_threads_and_messages", _create_threads_and_messages),
    ("create_summaries", _create_summaries),
    ("create_responses", _create_responses),
    ("add_thread_activity", _add_thread_activity),
    ("add_running_tokens", _add_running_tokens),
    ("add_reasoning", _add_reasoning),
    ("create_api_responses", _create_api_responses),
    ("create_requests", _create_requests),
    ("add_request_bodies", _add_request_bodies),
    ("add_request_target", _add_request_target),
    ("add_owners", _add_owners),
    ("add_row_sizes", _add_row_sizes),
    ("add_turn_chains", _add_turn_chains),
    ("create_input_pieces", _create_input_pieces),
    ("create_files_and_batches", _create_files_and_batches),
]


# --- the database ----------------------------------------------------------------------------

class Database:
    """One SQLite file: its pooled connections, transactions, migrations and upkeep."""

    busy_timeout_ms = 5000   # the sqlite3 default, set explicitly so it is visible
    pool_size = 8            # idle connections kept; more are opened on demand and closed
    pragmas: tuple = ()      # more PRAGMAs for each new connection (tests: query_only)
    held_most = 10_000       # failed ends held in memory for a disk to come back (_hold)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._closed = False
        self.write_error: dict | None = None   # the last failed write, until one succeeds
        self._held: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
        self._held_lock = threading.Lock()
        self.held_dropped = 0                  # held ends pushed out by newer ones, never stored
        self._added: collections.Counter[str] = collections.Counter()   # since a count prune
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def _migrate(self) -> None:
        """Apply each migration not yet recorded, each in its own write transaction."""
        with self.connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")   # persists in the file; outside any tx
            conn.execute("CREATE TABLE IF NOT EXISTS migrations "
                         "(name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        for name, migrate in MIGRATIONS:
            with self.write_tx() as tx:
                if not tx.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                    migrate(tx)
                    tx.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))

    # -- connections and transactions --------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout_ms / 1000)
        conn.row_factory = sqlite3.Row
        # LIKE folds ASCII only; a search for "мир" must find "Мир" too
        conn.create_function("folded", 1, _folded, deterministic=True)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute("PRAGMA foreign_keys=ON")      # per connection, off by default
        conn.execute("PRAGMA synchronous=NORMAL")   # with WAL: a crash loses no commit
        for pragma in self.pragmas:
            conn.execute(pragma)
        return conn

    def reopen(self) -> None:
        """Close the idle pooled connections: the next ones are opened afresh."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection. sqlite3 errors leave as StorageError (503, or 507 when the
        disk is full), so every caller answers a clear status in its dialect's shape; a
        connection still inside a transaction afterwards is closed, never pooled."""
        if self._closed:
            # a keep-alive client (the web page polling threads) can still be answered
            # between closing the store and the process ending
            raise HubError("The hub is shutting down", status=503, code="shutting_down")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            try:
                conn = self._open()
            except sqlite3.Error as exc:
                raise storage_error(exc) from None
        try:
            yield conn
        except sqlite3.Error as exc:
            raise storage_error(exc) from None
        finally:
            if self._closed or self._idle.qsize() >= self.pool_size or _in_transaction(conn):
                conn.close()
            else:
                self._idle.put(conn)

    @contextlib.contextmanager
    def write_tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception.

        A COMMIT can fail (a full disk fails the WAL write): the transaction is then rolled
        back, and if even that fails the connection is dropped rather than pooled, so no
        later write lands inside a transaction that never ends. The failure is remembered
        for /health until a write succeeds."""
        with self.connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, StorageError) as exc:
                self.write_error = {"error": str(exc), "at": time.time()}
                raise
            self.write_error = None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view across several queries."""
        with self.connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def read(self, sql: str, args=()) -> list[sqlite3.Row]:
        """The rows of one query, on a pooled connection."""
        with self.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        """Refuse every later operation (503) and close the idle connections."""
        self._closed = True
        self.reopen()

    # -- a row's end, held while the database refuses it ------------------------------------
    def finish_row(self, table: str, row_id: str, fields: dict, as_json: tuple,
                   if_fails: Callable[[HubError], dict] | None = None) -> None:
        """Write a row's end (the fields in `as_json` as JSON). If the database refuses,
        `if_fails(error)` gives the end to hold in memory instead (the failed one): reads
        show it at once (`with_held`), and `retry_held` writes it when the disk is back."""
        encoded = _encoded(fields, as_json)
        try:
            with self.write_tx() as tx:
                _update_tx(tx, table, row_id, encoded)
        except StorageError as exc:
            if if_fails is not None:
                self._hold(table, row_id, _encoded(if_fails(exc), as_json))
            raise

    def _hold(self, table: str, row_id: str, encoded: dict) -> None:
        with self._held_lock:
            self._held[table, row_id] = encoded
            while len(self._held) > self.held_most:
                (table, row_id), _ = self._held.popitem(last=False)
                self.held_dropped += 1
                log.error("%s %s: its end was never stored (more than %d held)", table,
                          row_id, self.held_most)

    def with_held(self, table: str, row: sqlite3.Row) -> dict:
        """A stored row with the end held in memory for it, if any, laid over it."""
        with self._held_lock:
            held = self._held.get((table, row["id"]))
        return {**dict(row), **held} if held else dict(row)

    def held_count(self) -> int:
        with self._held_lock:
            return len(self._held)

    def retry_held(self) -> int:
        """Write the held ends the database refused before; how many are still held. Stops
        at the first refusal (the disk is still full)."""
        with self._held_lock:
            pending = list(self._held.items())
        for (table, row_id), encoded in pending:
            try:
                with self.write_tx() as tx:
                    _update_tx(tx, table, row_id, encoded)
            except HubError:
                break
            with self._held_lock:
                if self._held.get((table, row_id)) is encoded:
                    del self._held[table, row_id]
        return len(self._held)

    # -- retention (retention.py sweeps) and health ------------------------------------------
    def prune_added(self, tx: sqlite3.Connection, table: str, keep_count: int,
                    keep_seconds: float, added: int = 1) -> None:
        """Within the transaction that added `added` rows to `table`: rows past the age bound
        go at once; rows past the newest `keep_count` go once COUNT_SLACK of it have been
        added since the last such prune. That prune skips keep_count index entries to find
        the oldest (SQLite's OFFSET is a walk): 50 µs at 1,000 stored responses and 250 at
        10,000 log records, paid by every stored response when it ran on each insert. The
        count is then at most keep_count + keep_count // COUNT_SLACK (exact below 32), and the
        sweep trims it exactly. Write transactions run one at a time, so the counter needs
        no lock of its own."""
        prune_old_tx(tx, table, keep_seconds)
        self._added[table] += added
        if self._added[table] >= max(1, keep_count // COUNT_SLACK):
            self._added[table] = 0
            prune_count_tx(tx, table, keep_count)

    def sweep_table(self, table: str, keep_count: int, keep_seconds: float,
                    max_bytes: float) -> int:
        """Delete a log table's finished rows past its count and age bounds (as its inserts
        prune: the sweep also covers a table nothing is added to) and past `max_bytes` (0:
        no bound), oldest first; how many went. A response still queued or in progress (a
        long background one) is never swept, though it counts towards the bounds: its run
        would have nowhere to land. Every pass reads the `{table}_swept` index only."""
        with self.write_tx() as tx:
            removed = prune_tx(tx, table, keep_count, keep_seconds)
            if max_bytes:
                at, live = SWEPT[table], LIVE[table]
                sizes = tx.execute(f"SELECT rowid, bytes, {live} FROM {table} "
                                   f"ORDER BY {at} DESC")
                over = over_bound(sizes, max_bytes)
                tx.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(i,) for i in over])
                removed += len(over)
        return removed

    def size(self) -> dict:
        """The database's bytes on disk (with its WAL) and rows per table."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        rows = {table: self.read(f"SELECT COUNT(*) FROM {table}")[0][0]
                for table in ("threads", "messages", "summaries", "responses",
                              "api_responses", "requests")}
        return {"bytes": sum(f.stat().st_size for f in files if f.exists()), "rows": rows}

    def health(self) -> dict:
        """What /health says of the database; the file's path stays out (no key guards it)."""
        try:
            count = len(self.read("SELECT name FROM migrations"))
        except HubError as exc:
            return {"status": "error", "error": exc.message}
        if self.write_error is not None:
            return {"status": "error", "migrations": count,
                    "error": f"the last write failed: {self.write_error['error']}",
                    "failed_at": self.write_error["at"]}
        return {"status": "ok", "migrations": count, **self._size_or_error()}

    def _size_or_error(self) -> dict:
        try:
            return self.size()
        except (HubError, OSError) as exc:
            return {"size_error": str(exc)}


def _update_tx(tx: sqlite3.Connection, table: str, row_id: str, encoded: dict) -> None:
    # a row's end adds its output and events to its weight (ROW_BYTES, near enough:
    # the few short fields an end also sets count too, the '[]' it replaces still does)
    weight = sum(len(v) for v in encoded.values() if isinstance(v, str))
    tx.execute(f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in encoded)}, "
               "bytes = bytes + ? WHERE id = ?", (*encoded.values(), weight, row_id))


def _encoded(fields: dict, as_json: tuple) -> dict:
    encoded = {k: json_str(v) if k in as_json else v for k, v in fields.items()}
    encoded["finished_at"] = time.time()
    return encoded


def where(*conditions: tuple[str, object]) -> tuple[str, tuple]:
    """A WHERE clause and its arguments from (condition, argument) pairs, leaving out each
    whose argument is None (no filter there): ("owner = ?", None) keeps every owner."""
    kept = [(sql, arg) for sql, arg in conditions if arg is not None]
    clause = "WHERE " + " AND ".join(sql for sql, _ in kept) if kept else ""
    return clause, tuple(arg for _, arg in kept)


def prune_tx(tx: sqlite3.Connection, table: str, keep_count: int, keep_seconds: float) -> int:
    """Finished rows older than the retention, or past the newest `keep_count`, go; how
    many. Two statements, not one with OR: each walks the `{table}_swept` index alone."""
    return prune_old_tx(tx, table, keep_seconds) + prune_count_tx(tx, table, keep_count)


def prune_old_tx(tx: sqlite3.Connection, table: str, keep_seconds: float) -> int:
    return tx.execute(f"DELETE FROM {table} WHERE {SWEPT[table]} < ? AND NOT ({LIVE[table]})",
                      (time.time() - keep_seconds,)).rowcount


def prune_count_tx(tx: sqlite3.Connection, table: str, keep_count: int) -> int:
    return tx.execute(
        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY "
        f"{SWEPT[table]} DESC LIMIT -1 OFFSET ?) AND NOT ({LIVE[table]})",
        (keep_count,)).rowcount


COUNT_SLACK = 16   # an insert prunes by count once keep_count // 16 rows came since the last


# The tables the sweep bounds by count, age and size, with their time column; and what
# makes a row live (never swept: a running response's end must have its row to land in).
SWEPT = {"responses": "created_at", "api_responses": "created_at", "requests": "at"}
LIVE = {"responses": "status IN ('queued', 'in_progress')",
        "api_responses": "status IN ('queued', 'in_progress')", "requests": "0"}


# What a row weighs, for the size bounds: its text columns (SQLite's own pages add a
# little; the file's size is in /health).
MESSAGE_BYTES = ("length(m.content) + length(m.tool_calls) + length(m.attachments) + "
                 "length(m.metadata) + COALESCE(length(m.reasoning), 0)")
ROW_BYTES = {
    "responses": "length(output) + length(metadata) + length(context) + "
                 "COALESCE(length(events), 0) + COALESCE(length(usage), 0)",
    "api_responses": "length(request) + length(input) + length(output) + "
                     "COALESCE(length(events), 0) + COALESCE(length(error), 0)",
    "requests": "COALESCE(length(request_body), 0) + COALESCE(length(response_body), 0) + 200",
}


def over_bound(sizes, max_bytes: float) -> list:
    """The ids of (id, bytes, live) rows, newest first, that come after `max_bytes` in all;
    a live row weighs in but is never one of them."""
    total, over = 0, []
    for row_id, size, live in sizes:
        total += size or 0
        if total > max_bytes and not live:
            over.append(row_id)
    return over


def _folded(text):
    return text.casefold() if isinstance(text, str) else text


class StorageError(HubError):
    """The database refused a read or a write: the disk is full, the file read-only, …"""
    status, code = 503, "storage_failed"


def storage_error(exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.IntegrityError):   # a bug, not the disk: keep it loud
        raise exc
    text = str(exc)
    if "full" in text.lower():
        return StorageError(f"The database is full ({text}): the reply cannot be stored",
                            status=507, code="storage_full")
    return StorageError(f"The database failed: {text}")


def _in_transaction(conn: sqlite3.Connection) -> bool:
    try:
        return conn.in_transaction
    except sqlite3.Error:
        return True
