"""Batches (OpenAI's Batch API) and their lines' results, over the one Database.

Rules:
1. A batch is one row: its owner, status and creation time as columns (what is queried),
   the rest of OpenAI's Batch object as JSON (`record`).
2. A line's result is written once, when the line finishes (`record_line`: INSERT OR
   IGNORE on (batch, line number)), so a line run twice (a restart caught it running)
   still has one result, and the output file, built from these rows in line order at the
   end, has each line once.
3. Once a batch has ended, its output file holds its results: its rows go (`drop_lines`),
   so a result is stored twice only while its batch runs.
"""

import json
from typing import Iterator

from llmhub.store.database import Database, where

__all__ = ["BatchStore", "ACTIVE"]

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")   # work still to do


class BatchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, batch: dict, owner: str) -> None:
        with self.db.write_tx() as tx:
            tx.execute("INSERT INTO batches (id, owner, created_at, status, record) "
                       "VALUES (?, ?, ?, ?, ?)", (batch["id"], owner, batch["created_at"],
                                                  batch["status"], json.dumps(batch)))

    def update(self, batch: dict, expect: str) -> bool:
        """Store the batch if its stored status is still `expect`: a cancel and the worker
        moving the same batch on never overwrite each other. Whether it was stored."""
        with self.db.write_tx() as tx:
            return tx.execute("UPDATE batches SET status = ?, record = ? WHERE id = ? AND "
                              "status = ?", (batch["status"], json.dumps(batch), batch["id"],
                                             expect)).rowcount == 1

    def get(self, batch_id: str) -> tuple[dict, str] | None:
        """(the batch, its owner)."""
        rows = self.db.read("SELECT owner, record FROM batches WHERE id = ?", (batch_id,))
        return (json.loads(rows[0]["record"]), rows[0]["owner"]) if rows else None

    def page(self, owner: str | None, limit: int, after: str | None) -> list[dict]:
        """Newest first (rowid: the order they were made), after the batch `after`; one
        owner's, or everyone's."""
        clause, args = where(("owner = ?", owner),
                             ("rowid < (SELECT rowid FROM batches WHERE id = ?)", after))
        rows = self.db.read(f"SELECT record FROM batches {clause} ORDER BY rowid DESC LIMIT ?",
                            (*args, limit))
        return [json.loads(row["record"]) for row in rows]

    def active(self) -> list[tuple[dict, str]]:
        """Every batch with work to do, oldest first: (the batch, its owner)."""
        rows = self.db.read(f"SELECT owner, record FROM batches WHERE status IN "
                            f"({', '.join('?' * len(ACTIVE))}) ORDER BY rowid",
                            ACTIVE)
        return [(json.loads(row["record"]), row["owner"]) for row in rows]

    def record_line(self, batch_id: str, line: int, ok: bool, result: dict,
                    input_tokens: int, output_tokens: int) -> None:
        with self.db.write_tx() as tx:
            tx.execute("INSERT OR IGNORE INTO batch_lines VALUES (?, ?, ?, ?, ?, ?)",
                       (batch_id, line, int(ok), json.dumps(result, ensure_ascii=False),
                        input_tokens, output_tokens))

    def done_lines(self, batch_id: str) -> set[int]:
        rows = self.db.read("SELECT line FROM batch_lines WHERE batch_id = ?", (batch_id,))
        return {row[0] for row in rows}

    def counts(self, batch_id: str) -> dict:
        """Lines answered and failed so far, and their tokens."""
        row = self.db.read("SELECT COALESCE(SUM(ok), 0), COUNT(*) - COALESCE(SUM(ok), 0), "
                           "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0) "
                           "FROM batch_lines WHERE batch_id = ?", (batch_id,))[0]
        return {"completed": row[0], "failed": row[1], "input_tokens": row[2],
                "output_tokens": row[3]}

    def results(self, batch_id: str, ok: bool, page: int = 500) -> Iterator[str]:
        """The answered (or failed) lines' results as JSON text, in line order, read a
        page at a time: 50,000 embeddings are never in memory at once."""
        last = 0
        while True:
            rows = self.db.read("SELECT line, result FROM batch_lines WHERE batch_id = ? "
                                "AND ok = ? AND line > ? ORDER BY line LIMIT ?",
                                (batch_id, int(ok), last, page))
            if not rows:
                return
            yield from (row[1] for row in rows)
            last = rows[-1][0]

    def drop_lines(self, batch_id: str | None = None) -> None:
        """The results of this ended batch, or of every batch not active (what a crash
        between a batch's end and this left)."""
        with self.db.write_tx() as tx:
            if batch_id is not None:
                tx.execute("DELETE FROM batch_lines WHERE batch_id = ?", (batch_id,))
                return
            tx.execute(f"DELETE FROM batch_lines WHERE batch_id IN (SELECT id FROM batches "
                       f"WHERE status NOT IN ({', '.join('?' * len(ACTIVE))}))", ACTIVE)

    def status_counts(self) -> dict:
        """How many batches are in each status."""
        return {row[0]: row[1] for row in
                self.db.read("SELECT status, COUNT(*) FROM batches GROUP BY status")}
