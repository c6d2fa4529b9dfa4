"""The request log: one record per finished run, its captured bodies, and usage read from
it, over the one Database.

Rules:
1. Records come in batches (engine/accounting.py RequestLog); each is written alone inside
   the batch's transaction, so one the database refuses for what it holds is reported and
   the rest are kept, while a refusal of the database's own (a full disk) fails the batch.
2. Key names only: a key itself is never stored.
"""

import sqlite3

from llmhub.store.database import Database

__all__ = ["RequestStore", "REQUEST_FIELDS"]


class RequestStore:
    """The request log's records, their captured bodies, and usage summed from them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert_requests(self, rows: list[dict], keep_count: int,
                        keep_seconds: float) -> list[tuple[str | None, str]]:
        """Store each record; the (run id, error) of those refused for what they hold. One
        bad record must not take its batch down with it, so each goes in alone: a value
        SQLite cannot bind fails before the statement runs, and a refused statement is
        undone by itself (SQLite statements are atomic), leaving the transaction intact."""
        sql = (f"INSERT OR REPLACE INTO requests ({', '.join(REQUEST_FIELDS)}, bytes) "
               f"VALUES ({', '.join('?' * len(REQUEST_FIELDS))}, 200)")
        refused = []
        with self.db.write_tx() as tx:
            for row in rows:
                try:
                    tx.execute(sql, tuple(row[f] for f in REQUEST_FIELDS))
                except RECORD_ERRORS as exc:
                    refused.append((row.get("run_id"), f"{type(exc).__name__}: {exc}"))
            self.db.prune_added(tx, "requests", keep_count, keep_seconds, len(rows))
        return refused

    def add_request_bodies(self, bodies: list[tuple]) -> None:
        """(run id, request body, response body) each, onto records already written."""
        with self.db.write_tx() as tx:
            tx.executemany("UPDATE requests SET request_body = ?, response_body = ?, "
                           "bytes = ? WHERE run_id = ?",
                           [(req, resp, len(req or "") + len(resp or "") + 200, run_id)
                            for run_id, req, resp in bodies])

    def list_requests(self, limit: int, before: float | None, match: dict) -> list[dict]:
        """Newest first; `match` narrows by exact key, model, status or dialect."""
        where = ["at < ?"] + [f"{name} = ?" for name in match]
        rows = self.db.read(f"SELECT * FROM requests WHERE {' AND '.join(where)} "
                            "ORDER BY at DESC LIMIT ?",
                            (before if before is not None else float("inf"), *match.values(),
                             limit))
        return [_request(row) for row in rows]

    def get_request(self, run_id: str) -> dict | None:
        """One record, with its bodies when they were captured."""
        rows = self.db.read("SELECT * FROM requests WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        return dict(_request(rows[0]), request_body=rows[0]["request_body"],
                    response_body=rows[0]["response_body"])

    def usage(self, group: str, since: float, until: float,
              key: str | None = None) -> list[dict]:
        """Runs, tokens, errors and cancels per key, model, UTC day or UTC hour; with each
        group's time to first token p50; `key`: that key's runs only."""
        column = {"key": "key", "model": "model", "day": "date(at, 'unixepoch')",
                  "hour": "strftime('%Y-%m-%dT%H:00Z', at, 'unixepoch')"}[group]
        mine = "" if key is None else "AND key = ? "
        rows = self.db.read(
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
