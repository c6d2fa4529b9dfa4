"""Threads with their messages and summaries (DESIGN §6), over the one Database.

Rules:
1. Public methods own their transactions; helpers named `_..._tx` run inside one.
2. `messages.normalise_message` is the store's input contract: dialects validate through
   it, so every message in the database has the same shape.
3. Records are neutral: a thread is {id, created_at, metadata}, a message has every stored
   field and its `seq`. Each dialect shapes them for its wire (Langbase's exact fields).
4. Reads cost what they return: pages and turns read by the (thread_id, seq) and
   (thread_id, cum_tokens) indexes, never the whole thread; a resent conversation finds its
   stored prefix by the messages' chain hashes (append_new, chains.py), never by reading
   the thread.
5. A thread's newest messages are kept in memory between turns (_Windows). Appends only
   extend a thread, which a kept window reads past; every write that removes stored
   messages runs in `_removing_tx`, which forgets the windows it may have made stale.

A message's `seq` orders its thread; it is assigned inside the writing transaction, so
concurrent appends to one thread are serialised and none is lost or reordered.
"""

import bisect
import collections
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

from llmhub import ids
from llmhub.context import content_text, message_tokens
from llmhub.errors import BadRequest, Conflict, NotFound
from llmhub.messages import normalise_message
from llmhub.store import chains
from llmhub.store.database import MESSAGE_BYTES, Database, over_bound
from llmhub.wire import json_str

__all__ = ["ThreadStore", "normalise_message", "thread_not_found"]

# begin_turn's check: (history, summary, totals) → raises to refuse the turn
Check = Callable[[list, "dict | None", dict], None]


class ThreadStore:
    """Threads, their messages and summaries; a thread's newest messages kept in memory."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._windows = _Windows()

    @contextlib.contextmanager
    def _removing_tx(self, thread_id: str | None) -> Iterator[sqlite3.Connection]:
        """A write transaction that removes stored messages of `thread_id` (None: of any
        thread). If it changed anything, the windows kept for them are forgotten once it
        has ended (after the COMMIT): the one way a kept window is made stale, so the one
        place it is forgotten."""
        changed = False
        try:
            with self.db.write_tx() as tx:
                before = tx.total_changes
                try:
                    yield tx
                finally:
                    changed = tx.total_changes != before
        finally:
            if changed:
                self._windows.forget(thread_id)

    # -- threads -----------------------------------------------------------------------------
    def create_thread(self, thread_id: str | None = None, metadata: dict | None = None,
                      messages: list | None = None, owner: str = "local") -> dict:
        with self.db.write_tx() as tx:
            thread = self._create_thread_tx(tx, thread_id, metadata or {}, owner)
            self._append_tx(tx, thread["id"], messages or [])
        return thread

    def list_threads(self, limit: int = 50, before: float | None = None,
                     search: str | None = None, owner: str | None = None) -> list[dict]:
        """Threads by last activity, newest first; `before` pages on from an updated_at;
        `search` keeps those whose title or any message holds it (case-insensitive);
        `owner` keeps one key's (None: everyone's)."""
        where = "updated_at < ?"
        args: list[object] = [before if before is not None else float("inf")]
        if owner is not None:
            where, args = "owner = ? AND " + where, [owner, *args]
        if search:
            pattern = "%" + search.casefold().replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_") + "%"
            where += (" AND (folded(title) LIKE ? ESCAPE '\\' OR id IN (SELECT thread_id "
                      "FROM messages WHERE folded(content) LIKE ? ESCAPE '\\'))")
            args += [pattern, pattern]
        rows = self.db.read(f"SELECT * FROM threads WHERE {where} ORDER BY updated_at DESC "
                            "LIMIT ?", (*args, limit))
        return [dict(_thread(row), title=row["title"], updated_at=row["updated_at"])
                for row in rows]

    def set_title(self, thread_id: str, title: str) -> None:
        with self.db.write_tx() as tx:
            if tx.execute("UPDATE threads SET title = ? WHERE id = ?",
                          (title, thread_id)).rowcount == 0:
                raise thread_not_found(thread_id)

    def thread_owner(self, thread_id: str) -> str | None:
        """Whose thread it is; None for an unknown one."""
        rows = self.db.read("SELECT owner FROM threads WHERE id = ?", (thread_id,))
        return rows[0][0] if rows else None

    def get_thread(self, thread_id: str) -> dict:
        rows = self.db.read("SELECT * FROM threads WHERE id = ?", (thread_id,))
        if not rows:
            raise thread_not_found(thread_id)
        return _thread(rows[0])

    def update_thread(self, thread_id: str, metadata: dict) -> dict:
        """Merge `metadata` into the thread's (keys given replace, others stay)."""
        with self.db.write_tx() as tx:
            row = tx.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                raise thread_not_found(thread_id)
            merged = {**json.loads(row["metadata"]), **metadata}
            tx.execute("UPDATE threads SET metadata = ? WHERE id = ?",
                       (json_str(merged), thread_id))
        return dict(_thread(row), metadata=merged)

    def delete_thread(self, thread_id: str) -> None:
        # its window goes too (_removing_tx): an id may be used again for a new thread
        with self._removing_tx(thread_id) as tx:
            if tx.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount == 0:
                raise thread_not_found(thread_id)   # messages go with it: ON DELETE CASCADE

    # -- messages ----------------------------------------------------------------------------
    def append_messages(self, thread_id: str, messages: list) -> list[dict]:
        with self.db.write_tx() as tx:
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
        with self.db.write_tx() as tx:
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
                      after: str | None = None,
                      newest_first: bool = False) -> tuple[list[dict], bool]:
        """Oldest first, at most `limit`, after the message with id `after`; and whether more
        follow. Newest first, "after" is "older than": a long chat's last page, then the
        ones before it. Reads in one transaction, so the thread cannot vanish in between."""
        sign, order = ("<", "DESC") if newest_first else (">", "ASC")
        with self.db.snapshot() as conn:
            self._require_thread_tx(conn, thread_id)
            start = self._seq_of(conn, thread_id, after) if after else \
                (1 << 62) if newest_first else 0
            rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = ? "
                                f"AND seq {sign} ? ORDER BY seq {order} LIMIT ?",
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
        with self.db.snapshot() as conn:
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

    def begin_turn(self, thread_id: str | None, messages: list, check: Check | None = None,
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
            with self.db.write_tx() as tx:
                thread_id = self._create_thread_tx(tx, None, {}, owner)["id"]
                if check is not None:
                    check([], None, {"messages": 0, "tokens": 0})
                self._append_tx(tx, thread_id, messages)
            return thread_id
        for _ in range(2):
            with self.db.snapshot() as conn:
                last, plan = self._plan_turn(conn, thread_id, budget)
            if check is not None:
                check(*plan)
            with self.db.write_tx() as tx:
                if self._tail_tx(tx, thread_id)[0] == last:   # nothing came in between
                    self._append_tx(tx, thread_id, messages)
                    return thread_id
        with self.db.write_tx() as tx:      # moved twice: plan where nothing can move
            _, plan = self._plan_turn(tx, thread_id, budget)
            if check is not None:
                check(*plan)
            self._append_tx(tx, thread_id, messages)
        return thread_id

    def turn_plan(self, thread_id: str, budget: int | None = None) -> tuple:
        """(history, summary, totals) as a turn on the thread would read them now:
        begin_turn's read (the summary and the messages after it, with a `budget` only
        the newest that could fit), with nothing written."""
        with self.db.snapshot() as conn:
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
        costs the new messages, not the whole window (_removing_tx forgets the window)."""
        kept, epoch = self._windows.get(thread_id)
        if kept and kept[0]["seq"] <= start:
            known = kept + self._rows_from_tx(conn, "thread_id = ? AND seq > ?",
                                              (thread_id, kept[-1]["seq"]))
        else:
            known = self._rows_from_tx(conn, "thread_id = ? AND seq >= ?", (thread_id, start))
        self._windows.keep(thread_id, known, epoch)
        return known[bisect.bisect_left([r["seq"] for r in known], start):]

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
        with self.db.write_tx() as tx:
            return self._append_tx(tx, thread_id, [message], tokens)[0]

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Remove one message; later messages' running token counts drop by its share."""
        with self._removing_tx(thread_id) as tx:
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

    # -- summaries ---------------------------------------------------------------------------
    def summary_source(self, thread_id: str, oldest: int,
                       newest: int) -> tuple[dict | None, list[dict], list[dict]]:
        """(latest summary, the oldest messages after it within `oldest` tokens, the newest
        within `newest` tokens): a summary pass reads a budget, never the whole backlog."""
        with self.db.snapshot() as conn:
            summary = self._summary_tx(conn, thread_id)
            after = summary["upto_seq"] if summary else 0
            running = self._tail_tx(conn, thread_id)[1]
            return (summary, self._oldest_tx(conn, thread_id, after, oldest),
                    self._newest_tx(conn, thread_id, after, running, newest))

    def save_summary(self, thread_id: str, upto_seq: int, text: str, tokens: int) -> None:
        with self.db.write_tx() as tx:
            tx.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?)",
                       (thread_id, upto_seq, text, tokens, int(time.time())))

    def _summary_tx(self, tx, thread_id: str) -> dict | None:
        row = tx.execute("SELECT upto_seq, text, tokens FROM summaries WHERE thread_id = ? "
                         "ORDER BY upto_seq DESC LIMIT 1", (thread_id,)).fetchone()
        return dict(row) if row else None

    # -- retention (retention.py sweeps) ---------------------------------------------------
    def sweep_threads(self, keep_seconds: float, max_bytes: float, busy: set) -> int:
        """Delete threads untouched for `keep_seconds`, then the least recently active past
        `max_bytes` of messages (0: no bound); never one in `busy`. How many went. Both
        passes read the threads_swept index alone (a thread's `bytes` is kept by its
        writes), never the messages."""
        gone = []
        with self._removing_tx(None) as tx:
            if keep_seconds:
                gone += [row[0] for row in tx.execute(
                    "SELECT id FROM threads WHERE updated_at < ?", (time.time() - keep_seconds,))
                    if row[0] not in busy]
            if max_bytes:
                sizes = tx.execute("SELECT id, bytes, 0 FROM threads ORDER BY updated_at DESC")
                gone += [i for i in over_bound(sizes, max_bytes) if i not in busy]
            gone = list(dict.fromkeys(gone))
            tx.executemany("DELETE FROM threads WHERE id = ?", [(i,) for i in gone])
        return len(gone)

    # -- inside a transaction ----------------------------------------------------------------
    def _create_thread_tx(self, tx, thread_id: str | None, metadata: dict,
                          owner: str) -> dict:
        thread_id = thread_id or str(ids.uuid4())
        created = int(time.time())
        try:
            tx.execute("INSERT INTO threads (id, created_at, metadata, updated_at, owner) "
                       "VALUES (?, ?, ?, ?, ?)", (thread_id, created, json_str(metadata),
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
            texts = (json_str(row["content"]), json_str(row["tool_calls"]),
                     json_str(row["attachments"]), json_str(row["metadata"]), row["reasoning"])
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


class _Windows:
    """The newest messages of the threads last read, as they were read (_window_tx).

    Stored messages never change, so a kept window is good until a write removes messages
    (`forget`, called by _removing_tx alone). Each forget bumps the epoch: a read that
    began before a forget keeps nothing of what it read, which may be stale."""
    threads_most = 16        # threads whose newest messages are kept in memory,
    rows_most = 2048         # … at most this many each

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0

    def get(self, thread_id: str) -> tuple[list | None, int]:
        """The thread's kept window (None if none) and the epoch to hand back to `keep`."""
        with self._lock:
            return self._kept.get(thread_id), self._epoch

    def keep(self, thread_id: str, rows: list, epoch: int) -> None:
        """Keep the newest of `rows`, read at `epoch`, unless a forget came in between."""
        with self._lock:
            if epoch != self._epoch:
                return
            self._kept[thread_id] = rows[-self.rows_most:]
            self._kept.move_to_end(thread_id)
            while len(self._kept) > self.threads_most:
                self._kept.popitem(last=False)

    def forget(self, thread_id: str | None) -> None:
        """Drop the thread's window (every thread's with None)."""
        with self._lock:
            if thread_id is None:
                self._kept.clear()
            else:
                self._kept.pop(thread_id, None)
            self._epoch += 1


def _title(messages: list) -> str | None:
    """A thread's title: the start of its first user message with text."""
    for message in messages:
        text = " ".join(content_text(message["content"]).split())
        if message["role"] == "user" and text:
            return text if len(text) <= 60 else text[:59].rstrip() + "…"
    return None


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


def thread_not_found(thread_id: str) -> NotFound:
    """The one answer for a thread that does not exist or is another key's."""
    return NotFound(f"Thread {thread_id!r} not found", param="threadId")
