"""Stored responses: the seed's `/responses` records and OpenAI's `/v1/responses` with
their chains, over the one Database.

Rules:
1. A response's row is written when its run starts (status in_progress, pruned to the
   retention bounds in the same transaction) and its end when the run ends, through
   Database.finish_row: an end the database refuses is held in memory and laid over the
   row on every read here, until `Database.retry_held` writes it.
2. A large value is never bound whole: a /v1/responses input holding a long string is
   written as ~1 MiB pieces (api_response_input), its row's `input` left ''.
3. A response outlives its thread (no foreign key): it is a record of what was answered.
"""

import json
import time
from collections.abc import Callable

from llmhub.errors import HubError
from llmhub.store.database import Database
from llmhub.wire import is_large, json_stream, json_str

__all__ = ["ResponseStore", "INTERRUPTED"]

# what a refused end becomes instead (Database.finish_row)
IfFails = Callable[[HubError], dict] | None


class ResponseStore:
    """The seed's /responses records and OpenAI's /v1/responses, with their chains."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the seed's responses (/responses) ------------------------------------------------------
    def create_response(self, record: dict, keep_count: int, keep_seconds: float) -> None:
        """Insert a response (status in_progress) and prune beyond the retention bounds."""
        with self.db.write_tx() as tx:
            metadata, context = json_str(record["metadata"]), json_str(record["context"])
            tx.execute("INSERT INTO responses (id, thread_id, model, provider, status, "
                       "metadata, context, created_at, owner, bytes) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record["id"], record["thread_id"], record["model"],
                        json_str(record["provider"]), record["status"], metadata, context,
                        record["created_at"], record.get("owner", "local"),
                        len(metadata) + len(context)))
            self.db.prune_added(tx, "responses", keep_count, keep_seconds)

    def finish_response(self, response_id: str, if_fails: IfFails = None, **fields) -> None:
        """Record a response's end: status, output, usage, model, provider, context, events
        (`if_fails`: Database.finish_row's)."""
        self.db.finish_row("responses", response_id, fields,
                           ("usage", "provider", "context", "events"), if_fails)

    def get_response(self, response_id: str) -> dict | None:
        rows = self.db.read("SELECT * FROM responses WHERE id = ?", (response_id,))
        if not rows:
            return None
        row = self.db.with_held("responses", rows[0])
        for key in ("provider", "usage", "metadata", "context", "events"):
            row[key] = json.loads(row[key]) if row[key] is not None else None
        return row

    def oldest_response_time(self) -> float | None:
        rows = self.db.read("SELECT MIN(created_at) FROM responses")
        return rows[0][0] if rows else None

    def fail_interrupted_responses(self) -> int:
        """At startup: responses a previous process left in progress can never finish."""
        with self.db.write_tx() as tx:
            return tx.execute("UPDATE responses SET status = 'failed', finished_at = ?, "
                              "events = COALESCE(events, ?) WHERE status = 'in_progress'",
                              (time.time(), json_str([["error", {"status": 500, **INTERRUPTED}],
                                                      ["done", {"status": "failed"}]]))
                              ).rowcount

    # -- OpenAI Responses (/v1/responses) ------------------------------------------------------
    def create_api_response(self, record: dict, keep_count: int, keep_seconds: float) -> None:
        """Insert a running response and prune beyond the retention bounds. An input with a
        large string is written in pieces (api_response_input), never as one text."""
        request, large = json_str(record["request"]), is_large(record["input"])
        given = "" if large else json_str(record["input"])
        with self.db.write_tx() as tx:
            tx.execute("INSERT INTO api_responses (id, created_at, status, previous_id, "
                       "conversation_id, model, request, input, owner, bytes) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (record["id"], record["created_at"], record["status"],
                        record["previous_id"], record["conversation_id"], record["model"],
                        request, given, record.get("owner", "local"),
                        len(request) + len(given) + 2))
            if large:
                self._write_pieces_tx(tx, record["id"], record["input"])
            self.db.prune_added(tx, "api_responses", keep_count, keep_seconds)

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

    def finish_api_response(self, response_id: str, if_fails: IfFails = None,
                            **fields) -> None:
        """Record the end: status, model, output, usage, error, events (`if_fails`:
        Database.finish_row's)."""
        self.db.finish_row("api_responses", response_id, fields,
                           ("output", "usage", "error", "events"), if_fails)

    def get_api_response(self, response_id: str) -> dict | None:
        with self.db.snapshot() as conn:
            row = conn.execute("SELECT * FROM api_responses WHERE id = ?",
                               (response_id,)).fetchone()
            if row is None:
                return None
            record = self.db.with_held("api_responses", row)
            if record["input"] == "":      # written in pieces (_write_pieces_tx)
                record["input"] = b"".join(piece for (piece,) in conn.execute(
                    "SELECT piece FROM api_response_input WHERE response_id = ? ORDER BY part",
                    (response_id,)))
        return _api_response(record)

    def api_response_chain(self, response_id: str, most: int = 10_000) -> list[dict] | None:
        """The response and every one it continues, oldest first; None if it is unknown.
        A link that has expired ends the chain there."""
        chain: list[dict] = []
        seen, current = set(), response_id
        while current and current not in seen and len(chain) < most:
            record = self.get_api_response(current)
            if record is None:
                break
            seen.add(current)
            chain.append(record)
            current = record["previous_id"]
        return chain[::-1] if chain else None

    def delete_api_response(self, response_id: str) -> bool:
        with self.db.write_tx() as tx:
            return tx.execute("DELETE FROM api_responses WHERE id = ?",
                              (response_id,)).rowcount > 0

    def fail_interrupted_api_responses(self) -> int:
        """At startup: responses a previous process left running failed, and say why."""
        with self.db.write_tx() as tx:
            return tx.execute("UPDATE api_responses SET status = 'failed', finished_at = ?, "
                              "error = COALESCE(error, ?) "
                              "WHERE status IN ('queued', 'in_progress')",
                              (time.time(), json_str(INTERRUPTED))).rowcount


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
