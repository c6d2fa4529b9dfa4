"""Uploaded files (OpenAI's Files API) and the files batches write: bytes in a folder beside
the database, one row each in `files` saying whose it is and what it is.

Rules:
1. The bytes are written to a temporary name and renamed into place before the row is
   inserted, so a row always has its whole file; a crash between the two leaves a stray
   temporary file, never a row without bytes.
2. Deleting removes the row first, then the bytes: a crash between leaves bytes no row
   names, which nothing reads.
3. The store does not check owners or limits: the engine (engine/batches.py) does.
"""

import contextlib
import os
from pathlib import Path
from typing import Generator, Iterable

from llmhub.errors import HubError
from llmhub.store.database import Database, where

__all__ = ["FileStore", "files_folder"]

FIELDS = ("id", "owner", "filename", "purpose", "bytes", "created_at")
PIECE = 64 * 1024       # a download is read and sent this much at a time


def files_folder(db_path: str | Path) -> Path:
    """Where a database's files live: `<db name>-files` beside it."""
    path = Path(db_path)
    return path.with_name(path.stem + "-files")


class FileStore:
    def __init__(self, db: Database, folder: Path) -> None:
        self.db = db
        self.folder = folder

    def _path(self, file_id: str) -> Path:
        return self.folder / file_id

    def put(self, record: dict, pieces: Iterable[bytes]) -> dict:
        """Keep the bytes of `pieces`, written one at a time (a batch's output need not be
        held whole), under `record["id"]`, replacing a file of that id (a batch's output
        written again after a restart: its id is the batch's); `bytes` is set to their
        length."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._path(record["id"])
        temporary = final.with_name(final.name + ".part")
        try:
            with temporary.open("wb") as out:
                record["bytes"] = sum(out.write(piece) for piece in pieces)
            os.replace(temporary, final)
        except OSError as exc:
            raise HubError(f"Could not write the file: {exc.strerror or exc}",
                           status=507 if exc.errno == 28 else 503,
                           code="storage_error") from None
        with self.db.write_tx() as tx:
            tx.execute(f"INSERT OR REPLACE INTO files ({', '.join(FIELDS)}) "
                       f"VALUES ({', '.join('?' * len(FIELDS))})",
                       tuple(record[f] for f in FIELDS))
        return record

    def get(self, file_id: str) -> dict | None:
        rows = self.db.read("SELECT rowid AS seq, * FROM files WHERE id = ?", (file_id,))
        return dict(rows[0]) if rows else None

    def content(self, file_id: str) -> bytes:
        try:
            return self._path(file_id).read_bytes()
        except OSError as exc:
            raise HubError(f"The file's bytes could not be read: {exc.strerror or exc}",
                           status=503, code="storage_error") from None

    def reader(self, file_id: str) -> tuple[int, Generator[bytes, None, None]]:
        """(its size, its bytes a PIECE at a time): a 200 MB output file is never in memory
        whole. The file is open until the pieces are read or closed."""
        try:
            handle = self._path(file_id).open("rb")
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise HubError(f"The file's bytes could not be read: {exc.strerror or exc}",
                           status=503, code="storage_error") from None
        return size, pieces(handle)

    def page(self, owner: str | None, purpose: str | None, limit: int, after: dict | None,
             newest_first: bool) -> list[dict]:
        """Up to `limit` files in the order they were made (rowid), after the `after`
        file's place; one owner's, or everyone's for None."""
        clause, args = where(("owner = ?", owner), ("purpose = ?", purpose),
                             ("rowid < ?" if newest_first else "rowid > ?",
                              after["seq"] if after is not None else None))
        order = "DESC" if newest_first else "ASC"
        rows = self.db.read(f"SELECT rowid AS seq, * FROM files {clause} "
                            f"ORDER BY rowid {order} LIMIT ?", (*args, limit))
        return [dict(row) for row in rows]

    def total_bytes(self) -> int:
        return self.db.read("SELECT COALESCE(SUM(bytes), 0) FROM files")[0][0]

    def delete(self, file_id: str) -> bool:
        with self.db.write_tx() as tx:
            gone = tx.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount
        with contextlib.suppress(OSError):
            self._path(file_id).unlink()
        return bool(gone)


def pieces(handle) -> Generator[bytes, None, None]:
    with handle:
        while piece := handle.read(PIECE):
            yield piece
