"""The SQLite store: threads and their messages (DESIGN §6).

Rules:
1. Public methods own their transactions; helpers named `_..._tx` run inside one.
2. Every writing transaction starts with BEGIN IMMEDIATE: a deferred transaction that
   upgrades to a write ignores busy_timeout and fails at once with "database is locked".
3. Connections are opened with isolation_level=None (no hidden BEGIN) and checked out of a
   small pool per operation, so handler threads, which come and go with connections, never
   leave a connection behind.
4. Migrations are an append-only list of named functions. The name is the identity: never
   edit, reorder or rename a shipped one. Each runs in the same transaction as its record.
5. `messages.normalise_message` is the store's input contract: dialects validate through
   it, so every message in the database has the same shape.
6. Records are neutral: a thread is {id, created_at, metadata}, a message has every stored
   field and its `seq`. Each dialect shapes them for its wire (Langbase's exact fields).

7. A response's end that the store refuses (disk full, read-only) is held in memory, the
   failed end its caller gives (`if_fails`), laid over the row on every read and written by
   `retry_held` when the disk is back; at most `held_most`, the oldest past it counted.
8. Reads cost what they return: pages and turns read by the (thread_id, seq) and
   (thread_id, cum_tokens) indexes, never the whole thread; a resent conversation finds its
   stored prefix by the messages' chain hashes (append_new), never by reading the thread.
   Retention sweeps (retention.py) walk each table's `_swept` index, once per
   `[retention] sweep_interval_seconds`, never the rows' text.
9. A large value is never bound whole: a /v1/responses input holding a long string is
   written as ~1 MiB pieces (api_response_input), its row's `input` left ''.

A message's `seq` orders its thread; it is assigned inside the writing transaction, so
concurrent appends to one thread are serialised and none is lost or reordered.
"""

import bisect
import collections
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

from llmhub import ids
from llmhub.context import content_text, message_tokens
from llmhub.errors import BadRequest, Conflict, HubError, NotFound
from llmhub.messages import normalise_message
from llmhub.store import chains
from llmhub.wire import is_large, json_str, json_stream

__all__ = ["Store", "StorageError", "MIGRATIONS", "normalise_message", "thread_not_found"]

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
    # README "Sharing one hub" says how to hand them to a key.
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
    # look-ups when the client rewrote its history (Store.append_new).
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
]


# --- the store -------------------------------------------------------------------------------

class Store:
    busy_timeout_ms = 5000   # the sqlite3 default, set explicitly so it is visible
    pool_size = 8            # idle connections kept; more are opened on demand and closed
    pragmas: tuple = ()      # more PRAGMAs for each new connection (tests: query_only)
    held_most = 10_000       # failed ends held in memory for a disk to come back (_hold)
    windows_kept = 16        # threads whose newest messages are kept in memory (_window_tx),
    window_rows = 2048       # … at most this many each

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._closed = False
        self._windows: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._windows_lock = threading.Lock()
        self._window_epoch = 0               # bumped by every delete
        self.write_error: dict | None = None   # the last failed write, until one succeeds
        self._held: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
        self._held_lock = threading.Lock()
        self.held_dropped = 0                  # held ends pushed out by newer ones, never stored
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as conn:
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
    def _connection(self):
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
    def write_tx(self):
        """A write transaction: BEGIN IMMEDIATE, COMMIT, or ROLLBACK on any exception.

        A COMMIT can fail (a full disk fails the WAL write): the transaction is then rolled
        back, and if even that fails the connection is dropped rather than pooled, so no
        later write lands inside a transaction that never ends. The failure is remembered
        for /health until a write succeeds."""
        with self._connection() as conn:
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

    def _read(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        self._closed = True
        self.reopen()

    # -- threads -----------------------------------------------------------------------------
    def create_thread(self, thread_id: str | None = None, metadata: dict | None = None,
                      messages: list | None = None, owner: str = "local") -> dict:
        with self.write_tx() as tx:
            thread = self._create_thread_tx(tx, thread_id, metadata or {}, owner)
            self._append_tx(tx, thread["id"], messages or [])
        return thread

    def list_threads(self, limit: int = 50, before: float | None = None,
                     search: str | None = None, owner: str | None = None) -> list[dict]:
        """Threads by last activity, newest first; `before` pages on from an updated_at;
        `search` keeps those whose title or any message holds it (case-insensitive);
        `owner` keeps one key's (None: everyone's)."""
        where, args = "updated_at < ?", [before if before is not None else float("inf")]
        if owner is not None:
            where, args = "owner = ? AND " + where, [owner, *args]
        if search:
            pattern = "%" + search.casefold().replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_") + "%"
            where += (" AND (folded(title) LIKE ? ESCAPE '\\' OR id IN (SELECT thread_id "
                      "FROM messages WHERE folded(content) LIKE ? ESCAPE '\\'))")
            args += [pattern, pattern]
        rows = self._read(f"SELECT * FROM threads WHERE {where} ORDER BY updated_at DESC "
                          "LIMIT ?", (*args, limit))
        return [dict(_thread(row), title=row["title"], updated_at=row["updated_at"])
                for row in rows]

    def set_title(self, thread_id: str, title: str) -> None:
        with self.write_tx() as tx:
            if tx.execute("UPDATE threads SET title = ? WHERE id = ?",
                          (title, thread_id)).rowcount == 0:
                raise thread_not_found(thread_id)

    def thread_owner(self, thread_id: str) -> str | None:
        """Whose thread it is; None for an unknown one."""
        rows = self._read("SELECT owner FROM threads WHERE id = ?", (thread_id,))
        return rows[0][0] if rows else None

    def get_thread(self, thread_id: str) -> dict:
        rows = self._read("SELECT * FROM threads WHERE id = ?", (thread_id,))
        if not rows:
            raise thread_not_found(thread_id)
        return _thread(rows[0])

    def update_thread(self, thread_id: str, metadata: dict) -> dict:
        """Merge `metadata` into the thread's (keys given replace, others stay)."""
        with self.write_tx() as tx:
            row = tx.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                raise thread_not_found(thread_id)
            merged = {**json.loads(row["metadata"]), **metadata}
            tx.execute("UPDATE threads SET metadata = ? WHERE id = ?",
                       (_json(merged), thread_id))
        return dict(_thread(row), metadata=merged)

    def delete_thread(self, thread_id: str) -> None:
        with self.write_tx() as tx:
            if tx.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount == 0:
                raise thread_not_found(thread_id)   # messages go with it: ON DELETE CASCADE
        self._forget_window(thread_id)       # an id may be used again for a new thread

    # -- messages ----------------------------------------------------------------------------
    def append_messages(self, thread_id: str, messages: list) -> list[dict]:
        with self.write_tx() as tx:
            self._require_thread_tx(tx, thread_id)
            return self._append_tx(tx, thread_id, messages)

    def append_new(self, thread_id: str, conversation: list, owner: str = "local") -> int:
        """Keep a conversation that its client resends whole each turn: create the thread
        if need be, and append what follows the longest stored prefix; how many were new.
        A client that rewrote its history (compacted it) appends from where they part.
        Another owner's thread of that id is as good as none: 404, nothing written.

        The stored thread is never read: each message's `chain` hashes the turns up to it,
        so the newest message's chain says whether the thread is a prefix of the
        conversation (the usual turn), and else a search over the conversation's chains
        finds where they part, one index look-up a step."""
        hashes = list(chains.chains(None, conversation))
        with self.write_tx() as tx:
            tx.execute("INSERT OR IGNORE INTO threads (id, created_at, metadata, updated_at, "
                       "owner) VALUES (?, ?, '{}', ?, ?)",
                       (thread_id, int(time.time()), time.time(), owner))
            if tx.execute("SELECT owner FROM threads WHERE id = ?",
                          (thread_id,)).fetchone()[0] != owner:
                raise thread_not_found(thread_id)
            same = self._shared_prefix_tx(tx, thread_id, hashes)
            self._append_tx(tx, thread_id, conversation[same:])
            return len(conversation) - same

    @staticmethod
    def _shared_prefix_tx(tx, thread_id: str, hashes: list[int]) -> int:
        """How many of the conversation's first turns the stored thread begins with, given
        the conversation's chains: a stored message with chain c has exactly the turns
        that give c before it, so 'the thread holds chains[i - 1]' is true up to the
        prefix's length and false after it."""
        tail = tx.execute("SELECT chain FROM messages WHERE thread_id = ? ORDER BY seq DESC "
                          "LIMIT 1", (thread_id,)).fetchone()
        if tail is None:
            return 0
        at = {chain: i for i, chain in enumerate(hashes)}.get(tail[0])
        if at is not None:                   # the whole thread is a prefix: the usual turn
            return at + 1
        low, high = 0, len(hashes)           # holds(low), not holds(high + 1)
        while low < high:
            middle = (low + high + 1) // 2
            if tx.execute("SELECT 1 FROM messages WHERE thread_id = ? AND chain = ? LIMIT 1",
                          (thread_id, hashes[middle - 1])).fetchone():
                low = middle
            else:
                high = middle - 1
        return low

    def list_messages(self, thread_id: str) -> list[dict]:
        """Every message of a thread, oldest first (for code, not for a client reply)."""
        return self.page_messages(thread_id)[0]

    def page_messages(self, thread_id: str, limit: int | None = None,
                      after: str | None = None) -> tuple[list[dict], bool]:
        """Oldest first, at most `limit`, after the message with id `after`; and whether more
        follow. Reads in one transaction, so the thread cannot vanish in between."""
        with self._snapshot() as conn:
            self._require_thread_tx(conn, thread_id)
            start = self._seq_of(conn, thread_id, after) if after else 0
            rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? "
                                "AND seq > ? ORDER BY seq LIMIT ?",
                                (thread_id, start, -1 if limit is None else limit + 1)).fetchall()
        more = limit is not None and len(rows) > limit
        return [_message(row) for row in rows[:limit]], more

    def messages_from(self, thread_id: str, anchor: str | None, count: int,
                      newest_first: bool = False) -> list[dict] | None:
        """At most `count` messages in order (oldest or newest first), from the message with
        id `anchor` on, itself included (None: from the thread's start, or its end); None if
        the thread has no such message. Reads `count` rows by the (thread_id, seq) index,
        however long the thread: a page of a conversation costs the page."""
        sign, order = (("<=", "DESC") if newest_first else (">=", "ASC"))
        with self._snapshot() as conn:
            self._require_thread_tx(conn, thread_id)
            if anchor is None:
                start = (1 << 62) if newest_first else 0
            else:
                row = conn.execute("SELECT seq FROM messages WHERE thread_id = ? AND id = ?",
                                   (thread_id, anchor)).fetchone()
                if row is None:
                    return None
                start = row[0]
            rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? "
                                f"AND seq {sign} ? ORDER BY seq {order} LIMIT ?",
                                (thread_id, start, count)).fetchall()
        return [_message(row) for row in rows]

    @staticmethod
    def _seq_of(conn, thread_id: str, message_id: str) -> int:
        row = conn.execute("SELECT seq FROM messages WHERE thread_id = ? AND id = ?",
                           (thread_id, message_id)).fetchone()
        if row is None:
            raise BadRequest(f"'after' names no message of thread {thread_id!r}", param="after")
        return row["seq"]

    def begin_turn(self, thread_id: str | None, messages: list, check=None,
                   budget: int | None = None, owner: str = "local") -> str:
        """Store a turn's input (and its thread, if new); return the thread id.

        No thread id: a new thread is created, `owner`'s. An unknown id is a 404, not a new
        thread: a typo must not silently start an empty conversation. Only messages after the
        summary are read, and with a `budget` only the newest that could fit it (each
        carries its `seq`). `check(history, summary, totals)` may raise to refuse the turn
        before anything is written; `totals` counts every unsummarised message and
        estimates their tokens.

        The history is read in a read transaction, outside the write lock, so other writers
        never wait for it; the write then checks that the thread has not moved meanwhile,
        and reads again if it has (the last try reads inside the write).
        """
        if thread_id is None:
            with self.write_tx() as tx:
                thread_id = self._create_thread_tx(tx, None, {}, owner)["id"]
                if check is not None:
                    check([], None, {"messages": 0, "tokens": 0})
                self._append_tx(tx, thread_id, messages)
            return thread_id
        for _ in range(2):
            with self._snapshot() as conn:
                last, plan = self._plan_turn(conn, thread_id, budget)
            if check is not None:
                check(*plan)
            with self.write_tx() as tx:
                if self._tail_tx(tx, thread_id)[0] == last:   # nothing came in between
                    self._append_tx(tx, thread_id, messages)
                    return thread_id
        with self.write_tx() as tx:      # moved twice: plan where nothing can move
            _, plan = self._plan_turn(tx, thread_id, budget)
            if check is not None:
                check(*plan)
            self._append_tx(tx, thread_id, messages)
        return thread_id

    def turn_plan(self, thread_id: str, budget: int | None = None) -> tuple:
        """(history, summary, totals) as a turn on the thread would read them now:
        begin_turn's read (the summary and the messages after it, with a `budget` only
        the newest that could fit), with nothing written."""
        with self._snapshot() as conn:
            return self._plan_turn(conn, thread_id, budget)[1]

    def _plan_turn(self, conn, thread_id: str, budget: int | None):
        """(the newest seq, (history, summary, totals)) for a turn on an existing thread."""
        self._require_thread_tx(conn, thread_id)
        summary = self._summary_tx(conn, thread_id)
        after = summary["upto_seq"] if summary else 0
        last, running = self._tail_tx(conn, thread_id)
        before = self._running_at_tx(conn, thread_id, after)
        history = self._newest_tx(conn, thread_id, after, running, budget)
        return last, (history, summary, {"messages": last - after, "tokens": running - before})

    def _newest_tx(self, conn, thread_id: str, after: int, running: int,
                   budget: int | None) -> list[dict]:
        """The messages after seq `after` that the newest `budget` tokens could hold (all of
        them without a budget), oldest first; found by the running-token index."""
        start = after + 1
        if budget is not None:
            first = self._first_past_tx(conn, thread_id, running - budget)
            if first is None:
                return []
            start = max(start, first)
        return self._window_tx(conn, thread_id, start)

    def _window_tx(self, conn, thread_id: str, start: int) -> list[dict]:
        """The thread's messages from seq `start` on. A thread's newest messages are read at
        every turn, and they never change once stored, so the last window read is kept per
        thread and only what came after it is read again: a run's start on a long thread
        costs the new messages, not the whole window (a delete forgets the window)."""
        with self._windows_lock:
            kept, epoch = self._windows.get(thread_id), self._window_epoch
        if kept and kept[0]["seq"] <= start:
            known = kept + self._rows_from_tx(conn, "thread_id = ? AND seq > ?",
                                              (thread_id, kept[-1]["seq"]))
        else:
            known = self._rows_from_tx(conn, "thread_id = ? AND seq >= ?", (thread_id, start))
        rows = known[bisect.bisect_left([r["seq"] for r in known], start):]
        with self._windows_lock:
            if epoch != self._window_epoch:
                return rows               # a delete came in between: keep nothing of it
            self._windows[thread_id] = known[-self.window_rows:]
            self._windows.move_to_end(thread_id)
            while len(self._windows) > self.windows_kept:
                self._windows.popitem(last=False)
        return rows

    def _forget_window(self, thread_id: str) -> None:
        with self._windows_lock:
            self._windows.pop(thread_id, None)
            self._window_epoch += 1

    def _oldest_tx(self, conn, thread_id: str, after: int, budget: int) -> list[dict]:
        """The oldest messages after seq `after` within `budget` tokens, oldest first."""
        ceiling = self._running_at_tx(conn, thread_id, after) + budget
        beyond = self._first_past_tx(conn, thread_id, ceiling)
        return self._rows_from_tx(conn, "thread_id = ? AND seq > ? AND seq < ?",
                                  (thread_id, after, beyond or 1 << 62))

    @staticmethod
    def _first_past_tx(conn, thread_id: str, tokens: int) -> int | None:
        """The seq of the first message whose running count passes `tokens` (an index
        look-up: a range over cum_tokens would be filtered row by row along seq)."""
        row = conn.execute("SELECT seq FROM messages WHERE thread_id = ? AND cum_tokens > ? "
                           "ORDER BY cum_tokens LIMIT 1", (thread_id, tokens)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _rows_from_tx(conn, where: str, args: tuple) -> list[dict]:
        rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {where} ORDER BY seq",
                            args)
        return [_message(row) for row in rows]

    @contextlib.contextmanager
    def _snapshot(self):
        """A read transaction: one consistent view across several queries."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def _tail_tx(tx, thread_id: str, with_chain: bool = False) -> tuple:
        """The thread's newest seq and its running token count (0, 0 when empty); and
        `with_chain`, its chain (None when empty)."""
        row = tx.execute("SELECT seq, cum_tokens, chain FROM messages WHERE thread_id = ? "
                         "ORDER BY seq DESC LIMIT 1", (thread_id,)).fetchone()
        tail = (row[0], row[1] or 0, row[2]) if row else (0, 0, None)
        return tail if with_chain else tail[:2]

    @staticmethod
    def _running_at_tx(tx, thread_id: str, seq: int) -> int:
        if seq <= 0:
            return 0
        row = tx.execute("SELECT cum_tokens FROM messages WHERE thread_id = ? AND seq = ?",
                         (thread_id, seq)).fetchone()
        return (row[0] or 0) if row else 0

    def record_reply(self, thread_id: str, message: dict, tokens: int | None = None) -> dict:
        """Store an assistant reply (complete or partial: its status is in its metadata)."""
        with self.write_tx() as tx:
            return self._append_tx(tx, thread_id, [message], tokens)[0]

    # -- summaries ---------------------------------------------------------------------------
    def summary_source(self, thread_id: str, oldest: int, newest: int):
        """(latest summary, the oldest messages after it within `oldest` tokens, the newest
        within `newest` tokens): a summary pass reads a budget, never the whole backlog."""
        with self._snapshot() as conn:
            summary = self._summary_tx(conn, thread_id)
            after = summary["upto_seq"] if summary else 0
            running = self._tail_tx(conn, thread_id)[1]
            return (summary, self._oldest_tx(conn, thread_id, after, oldest),
                    self._newest_tx(conn, thread_id, after, running, newest))

    def save_summary(self, thread_id: str, upto_seq: int, text: str, tokens: int) -> None:
        with self.write_tx() as tx:
            tx.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?)",
                       (thread_id, upto_seq, text, tokens, int(time.time())))

    def _summary_tx(self, tx, thread_id: str) -> dict | None:
        row = tx.execute("SELECT upto_seq, text, tokens FROM summaries WHERE thread_id = ? "
                         "ORDER BY upto_seq DESC LIMIT 1", (thread_id,)).fetchone()
        return dict(row) if row else None

    # -- responses ---------------------------------------------------------------------------
    def create_response(self, record: dict, keep_count: int, keep_seconds: float) -> None:
        """Insert a response (status in_progress) and prune beyond the retention bounds."""
        with self.write_tx() as tx:
            metadata, context = _json(record["metadata"]), _json(record["context"])
            tx.execute("INSERT INTO responses (id, thread_id, model, provider, status, "
                       "metadata, context, created_at, owner, bytes) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record["id"], record["thread_id"], record["model"],
                        _json(record["provider"]), record["status"], metadata, context,
                        record["created_at"], record.get("owner", "local"),
                        len(metadata) + len(context)))
            _prune_tx(tx, "responses", keep_count, keep_seconds)

    def finish_response(self, response_id: str, if_fails=None, **fields) -> None:
        """Record a response's end: status, output, usage, model, provider, context, events
        (`if_fails`: _finish_row's)."""
        self._finish_row("responses", response_id, fields,
                         ("usage", "provider", "context", "events"), if_fails)

    def _finish_row(self, table: str, row_id: str, fields: dict, as_json: tuple,
                    if_fails=None) -> None:
        """Write a row's end. If the store refuses, `if_fails(error)` gives the end to hold
        in memory instead (the failed one): reads show it at once, and `retry_held` writes
        it when the disk is back."""
        encoded = _encoded(fields, as_json)
        try:
            with self.write_tx() as tx:
                self._update_tx(tx, table, row_id, encoded)
        except StorageError as exc:
            if if_fails is not None:
                self._hold(table, row_id, _encoded(if_fails(exc), as_json))
            raise

    @staticmethod
    def _update_tx(tx, table: str, row_id: str, encoded: dict) -> None:
        # a row's end adds its output and events to its weight (ROW_BYTES, near enough:
        # the few short fields an end also sets count too, the '[]' it replaces still does)
        weight = sum(len(v) for v in encoded.values() if isinstance(v, str))
        tx.execute(f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in encoded)}, "
                   "bytes = bytes + ? WHERE id = ?", (*encoded.values(), weight, row_id))

    # -- ends the store refused, held until it takes them ----------------------------------------
    def _hold(self, table: str, row_id: str, encoded: dict) -> None:
        with self._held_lock:
            self._held[table, row_id] = encoded
            while len(self._held) > self.held_most:
                (table, row_id), _ = self._held.popitem(last=False)
                self.held_dropped += 1
                log.error("%s %s: its end was never stored (more than %d held)", table,
                          row_id, self.held_most)

    def _with_held(self, table: str, row) -> dict:
        """A stored row with the end held in memory for it, if any, laid over it."""
        with self._held_lock:
            held = self._held.get((table, row["id"]))
        return {**dict(row), **held} if held else dict(row)

    def held_count(self) -> int:
        with self._held_lock:
            return len(self._held)

    def retry_held(self) -> int:
        """Write the held ends the store refused before; how many are still held. Stops at
        the first refusal (the disk is still full)."""
        with self._held_lock:
            pending = list(self._held.items())
        for (table, row_id), encoded in pending:
            try:
                with self.write_tx() as tx:
                    self._update_tx(tx, table, row_id, encoded)
            except HubError:
                break
            with self._held_lock:
                if self._held.get((table, row_id)) is encoded:
                    del self._held[table, row_id]
        return len(self._held)

    # -- OpenAI Responses (/v1/responses) ------------------------------------------------------
    def create_api_response(self, record: dict, keep_count: int, keep_seconds: float) -> None:
        """Insert a running response and prune beyond the retention bounds. An input with a
        large string is written in pieces (api_response_input), never as one text."""
        request, large = _json(record["request"]), is_large(record["input"])
        given = "" if large else _json(record["input"])
        with self.write_tx() as tx:
            tx.execute("INSERT INTO api_responses (id, created_at, status, previous_id, "
                       "conversation_id, model, request, input, owner, bytes) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record["id"], record["created_at"], record["status"],
                        record["previous_id"], record["conversation_id"], record["model"],
                        request, given, record.get("owner", "local"),
                        len(request) + len(given) + 2))
            if large:
                self._write_pieces_tx(tx, record["id"], record["input"])
            _prune_tx(tx, "api_responses", keep_count, keep_seconds)

    @staticmethod
    def _write_pieces_tx(tx, response_id: str, value) -> None:
        """`value` as JSON in the response's input pieces, one piece held at a time."""
        weight, part = 0, 0
        for piece in json_stream(value):
            if piece:
                tx.execute("INSERT INTO api_response_input VALUES (?, ?, ?)",
                           (response_id, part, piece))
                weight, part = weight + len(piece), part + 1
        tx.execute("UPDATE api_responses SET bytes = bytes + ? WHERE id = ?",
                   (weight, response_id))

    def finish_api_response(self, response_id: str, if_fails=None, **fields) -> None:
        """Record the end: status, model, output, usage, error, events (`if_fails`:
        _finish_row's)."""
        self._finish_row("api_responses", response_id, fields,
                         ("output", "usage", "error", "events"), if_fails)

    def get_api_response(self, response_id: str) -> dict | None:
        with self._snapshot() as conn:
            row = conn.execute("SELECT * FROM api_responses WHERE id = ?",
                               (response_id,)).fetchone()
            if row is None:
                return None
            record = self._with_held("api_responses", row)
            if record["input"] == "":      # written in pieces (_write_pieces_tx)
                record["input"] = b"".join(piece for (piece,) in conn.execute(
                    "SELECT piece FROM api_response_input WHERE response_id = ? ORDER BY part",
                    (response_id,)))
        return _api_response(record)

    def api_response_chain(self, response_id: str, most: int = 10_000) -> list[dict] | None:
        """The response and every one it continues, oldest first; None if it is unknown.
        A link that has expired ends the chain there."""
        chain, seen, current = [], set(), response_id
        while current and current not in seen and len(chain) < most:
            record = self.get_api_response(current)
            if record is None:
                break
            seen.add(current)
            chain.append(record)
            current = record["previous_id"]
        return chain[::-1] if chain else None

    def delete_api_response(self, response_id: str) -> bool:
        with self.write_tx() as tx:
            return tx.execute("DELETE FROM api_responses WHERE id = ?",
                              (response_id,)).rowcount > 0

    def fail_interrupted_api_responses(self) -> int:
        """At startup: responses a previous process left running failed, and say why."""
        with self.write_tx() as tx:
            return tx.execute("UPDATE api_responses SET status = 'failed', finished_at = ?, "
                              "error = COALESCE(error, ?) "
                              "WHERE status IN ('queued', 'in_progress')",
                              (time.time(), _json(INTERRUPTED))).rowcount

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Remove one message; later messages' running token counts drop by its share."""
        with self.write_tx() as tx:
            row = tx.execute(f"SELECT seq, cum_tokens, {MESSAGE_BYTES} FROM messages m "
                             "WHERE thread_id = ? AND id = ?", (thread_id, message_id)).fetchone()
            if row is None:
                raise NotFound(f"No message {message_id!r} in thread {thread_id!r}",
                               param="item_id")
            before = tx.execute("SELECT cum_tokens FROM messages WHERE thread_id = ? AND "
                                "seq < ? ORDER BY seq DESC LIMIT 1",
                                (thread_id, row[0])).fetchone()
            share = (row[1] or 0) - ((before[0] or 0) if before else 0)
            tx.execute("DELETE FROM messages WHERE thread_id = ? AND id = ?",
                       (thread_id, message_id))
            tx.execute("UPDATE threads SET bytes = MAX(bytes - ?, 0) WHERE id = ?",
                       (row[2], thread_id))
            tx.execute("UPDATE messages SET cum_tokens = cum_tokens - ? WHERE thread_id = ? "
                       "AND seq > ?", (share, thread_id, row[0]))
            self._rechain_tx(tx, thread_id, row[0])
        self._forget_window(thread_id)

    @staticmethod
    def _rechain_tx(tx, thread_id: str, after: int) -> None:
        """Chain again the messages after seq `after`: a delete changed their prefix (a
        delete is rare and explicit; a turn never pays this)."""
        before = tx.execute("SELECT chain FROM messages WHERE thread_id = ? AND seq < ? "
                            "ORDER BY seq DESC LIMIT 1", (thread_id, after)).fetchone()
        chain, updates = before[0] if before else None, []
        for row in tx.execute("SELECT id, role, content, tool_call_id, tool_calls FROM "
                              "messages WHERE thread_id = ? AND seq > ? ORDER BY seq",
                              (thread_id, after)).fetchall():
            chain = chains.chain(chain, chains.stored_turn(row))
            updates.append((chain, row[0]))
        tx.executemany("UPDATE messages SET chain = ? WHERE id = ?", updates)

    # -- the request log ---------------------------------------------------------------------
    def insert_requests(self, rows: list[dict], keep_count: int,
                        keep_seconds: float) -> list[tuple[str, str]]:
        """Store each record; the (run id, error) of those refused for what they hold. One
        bad record must not take its batch down with it, so each goes in alone: a value
        SQLite cannot bind fails before the statement runs, and a refused statement is
        undone by itself (SQLite statements are atomic), leaving the transaction intact."""
        sql = (f"INSERT OR REPLACE INTO requests ({', '.join(REQUEST_FIELDS)}, bytes) "
               f"VALUES ({', '.join('?' * len(REQUEST_FIELDS))}, 200)")
        refused = []
        with self.write_tx() as tx:
            for row in rows:
                try:
                    tx.execute(sql, tuple(row[f] for f in REQUEST_FIELDS))
                except RECORD_ERRORS as exc:
                    refused.append((row.get("run_id"), f"{type(exc).__name__}: {exc}"))
            _prune_tx(tx, "requests", keep_count, keep_seconds)
        return refused

    def add_request_bodies(self, bodies: list[tuple]) -> None:
        """(run id, request body, response body) each, onto records already written."""
        with self.write_tx() as tx:
            tx.executemany("UPDATE requests SET request_body = ?, response_body = ?, "
                           "bytes = ? WHERE run_id = ?",
                           [(req, resp, len(req or "") + len(resp or "") + 200, run_id)
                            for run_id, req, resp in bodies])

    def list_requests(self, limit: int, before: float | None, match: dict) -> list[dict]:
        """Newest first; `match` narrows by exact key, model, status or dialect."""
        where = ["at < ?"] + [f"{name} = ?" for name in match]
        rows = self._read(f"SELECT * FROM requests WHERE {' AND '.join(where)} "
                          "ORDER BY at DESC LIMIT ?",
                          (before if before is not None else float("inf"), *match.values(),
                           limit))
        return [_request(row) for row in rows]

    def get_request(self, run_id: str) -> dict | None:
        """One record, with its bodies when they were captured."""
        rows = self._read("SELECT * FROM requests WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        return dict(_request(rows[0]), request_body=rows[0]["request_body"],
                    response_body=rows[0]["response_body"])

    def usage(self, group: str, since: float, until: float,
              key: str | None = None) -> list[dict]:
        """Runs, tokens, errors and cancels per key, model or UTC day; with each group's
        time to first token p50; `key`: that key's runs only."""
        column = {"key": "key", "model": "model",
                  "day": "date(at, 'unixepoch')"}[group]
        mine = "" if key is None else "AND key = ? "
        rows = self._read(
            f"SELECT {column} AS grp, COUNT(*) AS requests, "
            "COALESCE(SUM(input_tokens), 0) AS input_tokens, "
            "COALESCE(SUM(output_tokens), 0) AS output_tokens, "
            "SUM(estimated) AS estimated, SUM(status = 'failed') AS errors, "
            "SUM(status = 'cancelled') AS cancels, "
            "GROUP_CONCAT(ttft_ms) AS ttfts FROM requests WHERE at >= ? AND at < ? "
            f"{mine}GROUP BY grp ORDER BY grp", (since, until, *(() if key is None else (key,))))
        return [{"group": row["grp"], "requests": row["requests"],
                 "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"],
                 "estimated_requests": row["estimated"], "errors": row["errors"],
                 "cancels": row["cancels"], "ttft_p50_ms": _median(row["ttfts"])}
                for row in rows]

    def get_response(self, response_id: str) -> dict | None:
        rows = self._read("SELECT * FROM responses WHERE id = ?", (response_id,))
        if not rows:
            return None
        row = self._with_held("responses", rows[0])
        for key in ("provider", "usage", "metadata", "context", "events"):
            row[key] = json.loads(row[key]) if row[key] is not None else None
        return row

    def oldest_response_time(self) -> float | None:
        rows = self._read("SELECT MIN(created_at) FROM responses")
        return rows[0][0] if rows else None

    def fail_interrupted_responses(self) -> int:
        """At startup: responses a previous process left in progress can never finish."""
        with self.write_tx() as tx:
            return tx.execute("UPDATE responses SET status = 'failed', finished_at = ?, "
                              "events = COALESCE(events, ?) WHERE status = 'in_progress'",
                              (time.time(), _json([["error", {"status": 500, **INTERRUPTED}],
                                                   ["done", {"status": "failed"}]]))
                              ).rowcount

    # -- retention (retention.py sweeps) ---------------------------------------------------
    def sweep_threads(self, keep_seconds: float, max_bytes: float, busy: set) -> int:
        """Delete threads untouched for `keep_seconds`, then the least recently active past
        `max_bytes` of messages (0: no bound); never one in `busy`. How many went. Both
        passes read the threads_swept index alone (a thread's `bytes` is kept by its
        writes), never the messages."""
        gone = []
        with self.write_tx() as tx:
            if keep_seconds:
                gone += [row[0] for row in tx.execute(
                    "SELECT id FROM threads WHERE updated_at < ?", (time.time() - keep_seconds,))
                    if row[0] not in busy]
            if max_bytes:
                sizes = tx.execute("SELECT id, bytes, 0 FROM threads ORDER BY updated_at DESC")
                gone += [i for i in _past(sizes, max_bytes) if i not in busy]
            gone = list(dict.fromkeys(gone))
            tx.executemany("DELETE FROM threads WHERE id = ?", [(i,) for i in gone])
        if gone:
            with self._windows_lock:
                self._windows.clear()
                self._window_epoch += 1
        return len(gone)

    def sweep_table(self, table: str, keep_count: int, keep_seconds: float,
                    max_bytes: float) -> int:
        """Delete a log table's finished rows past its count and age bounds (as its inserts
        prune: the sweep also covers a table nothing is added to) and past `max_bytes` (0:
        no bound), oldest first; how many went. A response still queued or in progress (a
        long background one) is never swept, though it counts towards the bounds: its run
        would have nowhere to land. Every pass reads the `{table}_swept` index only."""
        with self.write_tx() as tx:
            removed = _prune_tx(tx, table, keep_count, keep_seconds)
            if max_bytes:
                at, live = SWEPT[table], LIVE[table]
                sizes = tx.execute(f"SELECT rowid, bytes, {live} FROM {table} "
                                   f"ORDER BY {at} DESC")
                over = _past(sizes, max_bytes)
                tx.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(i,) for i in over])
                removed += len(over)
        return removed

    def size(self) -> dict:
        """The database's bytes on disk (with its WAL) and rows per table."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        rows = {table: self._read(f"SELECT COUNT(*) FROM {table}")[0][0]
                for table in ("threads", "messages", "summaries", "responses",
                              "api_responses", "requests")}
        return {"bytes": sum(f.stat().st_size for f in files if f.exists()), "rows": rows}

    def health(self) -> dict:
        """What /health says of the database; the file's path stays out (no key guards it)."""
        try:
            count = len(self._read("SELECT name FROM migrations"))
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

    # -- inside a transaction ----------------------------------------------------------------
    def _create_thread_tx(self, tx, thread_id: str | None, metadata: dict,
                          owner: str) -> dict:
        thread_id = thread_id or str(ids.uuid4())
        created = int(time.time())
        try:
            tx.execute("INSERT INTO threads (id, created_at, metadata, updated_at, owner) "
                       "VALUES (?, ?, ?, ?, ?)", (thread_id, created, _json(metadata),
                                                  time.time(), owner))
        except sqlite3.IntegrityError:
            raise Conflict(f"Thread {thread_id!r} already exists", param="threadId") from None
        return {"id": thread_id, "created_at": created, "metadata": metadata}

    def _require_thread_tx(self, tx, thread_id: str) -> None:
        if not tx.execute("SELECT 1 FROM threads WHERE id = ?", (thread_id,)).fetchone():
            raise thread_not_found(thread_id)

    def _append_tx(self, tx, thread_id: str, messages: list, tokens: int | None = None):
        seq, running, chain = self._tail_tx(tx, thread_id, with_chain=True)
        created, out, weight = int(time.time()), [], 0
        for message, chain in zip(messages, chains.chains(chain, messages)):
            seq += 1
            running += message_tokens(message)
            row = {"id": "msg_" + ids.uuid4().hex, "thread_id": thread_id, "seq": seq,
                   "created_at": created, "reasoning": None, **message}
            texts = (_json(row["content"]), _json(row["tool_calls"]),
                     _json(row["attachments"]), _json(row["metadata"]), row["reasoning"])
            weight += sum(len(text) for text in texts if text)   # as MESSAGE_BYTES weighs
            tx.execute(
                "INSERT INTO messages (id, thread_id, seq, role, content, name, tool_call_id,"
                " tool_calls, attachments, metadata, tokens, created_at, cum_tokens, reasoning,"
                " chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row["id"], thread_id, seq, row["role"], texts[0], row["name"],
                 row["tool_call_id"], texts[1], texts[2], texts[3], tokens, created, running,
                 texts[4], chain))
            out.append(row)
        if messages:
            tx.execute("UPDATE threads SET updated_at = ?, title = COALESCE(title, ?), "
                       "bytes = bytes + ? WHERE id = ?",
                       (time.time(), _title(messages), weight, thread_id))
        return out


# What one request record can fail with for what it holds (a number past SQLite's 64 bits is
# OverflowError; a value of a type it cannot bind, InterfaceError or ProgrammingError); a full
# disk or a lock (OperationalError) is the database's, and fails the batch.
RECORD_ERRORS = (OverflowError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                 sqlite3.IntegrityError, sqlite3.DataError)

REQUEST_FIELDS = ("run_id", "at", "key", "route", "dialect", "requested_model", "model",
                  "upstream", "status", "finish_reason", "ttft_ms", "duration_ms",
                  "input_tokens", "output_tokens", "estimated", "error_code", "target")


def _request(row) -> dict:
    record = {name: row[name] for name in REQUEST_FIELDS}
    record["estimated"] = bool(record["estimated"])
    return record


def _median(joined: str | None) -> float | None:
    values = sorted(float(v) for v in (joined or "").split(",") if v)
    return values[len(values) // 2] if values else None


def _prune_tx(tx, table: str, keep_count: int, keep_seconds: float) -> int:
    """Finished rows older than the retention, or past the newest `keep_count`, go; how
    many. Two statements, not one with OR: each walks the `{table}_swept` index alone."""
    at, finished = SWEPT[table], f"NOT ({LIVE[table]})"
    removed = tx.execute(f"DELETE FROM {table} WHERE {at} < ? AND {finished}",
                         (time.time() - keep_seconds,)).rowcount
    return removed + tx.execute(
        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY {at} DESC "
        f"LIMIT -1 OFFSET ?) AND {finished}", (keep_count,)).rowcount


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


def _past(sizes, max_bytes: float) -> list:
    """The ids of (id, bytes, live) rows, newest first, that come after `max_bytes` in all;
    a live row weighs in but is never one of them."""
    total, over = 0, []
    for row_id, size, live in sizes:
        total += size or 0
        if total > max_bytes and not live:
            over.append(row_id)
    return over


def _encoded(fields: dict, as_json: tuple) -> dict:
    encoded = {k: _json(v) if k in as_json else v for k, v in fields.items()}
    encoded["finished_at"] = time.time()
    return encoded


# A response a previous process left running: its run died with it, and whatever it had
# made was never stored (a write the store refused was held in that process's memory).
INTERRUPTED = {"code": "interrupted",
               "message": "The hub stopped before this response finished; nothing of it "
                          "was stored"}


def _api_response(row) -> dict:
    record = dict(row)
    for key in ("request", "input", "output", "usage", "error", "events"):
        record[key] = json.loads(record[key]) if record[key] is not None else None
    return record


def _folded(text):
    return text.casefold() if isinstance(text, str) else text


def _title(messages: list) -> str | None:
    """A thread's title: the start of its first user message with text."""
    for message in messages:
        text = " ".join(content_text(message["content"]).split())
        if message["role"] == "user" and text:
            return text if len(text) <= 60 else text[:59].rstrip() + "…"
    return None


def _json(value) -> str:
    return json_str(value)     # a stored image is not copied twice on its way in


def _thread(row) -> dict:
    return {"id": row["id"], "created_at": row["created_at"],
            "metadata": json.loads(row["metadata"])}


MESSAGE_COLUMNS = ("id, thread_id, seq, created_at, role, content, tool_call_id, tool_calls, "
                   "name, attachments, metadata, reasoning")


def _message(row) -> dict:
    # A run's start reads its whole window through here: by position, not by name, and
    # plain strings without JSON's machinery (a third of the time of a start on a long thread).
    (message_id, thread_id, seq, created_at, role, content, tool_call_id, tool_calls, name,
     attachments, metadata, reasoning) = row
    return {"id": message_id, "thread_id": thread_id, "seq": seq, "created_at": created_at,
            "role": role, "content": _json_text(content), "tool_call_id": tool_call_id,
            "tool_calls": _json_list(tool_calls), "name": name,
            "attachments": _json_list(attachments),
            "metadata": {} if metadata == "{}" else json.loads(metadata),
            "reasoning": reasoning}


def _json_text(text: str):
    """Stored JSON, read; a string without escapes is its own text between the quotes
    (stored with ensure_ascii=False, so only quotes, backslashes and controls are escaped)."""
    if text[0] == '"' and "\\" not in text:
        return text[1:-1]
    return json.loads(text)


def _json_list(text: str) -> list:
    return [] if text == "[]" else json.loads(text)   # most messages: nothing to decode


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


def thread_not_found(thread_id: str) -> NotFound:
    """The one answer for a thread that does not exist or is another key's."""
    return NotFound(f"Thread {thread_id!r} not found", param="threadId")
