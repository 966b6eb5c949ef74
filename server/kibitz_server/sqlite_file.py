"""One SQLite file of server state (licences, email codes) worked on off the event loop.

Every statement runs on one private worker thread with its own connection, so the event loop never
waits on the disk and statements never interleave within a process; across processes SQLite's own
locking (WAL, a 15 s busy timeout: a loaded disk makes writers queue, which must not fail a
request) keeps each store's read-modify-write steps atomic. The file is
made private to the server's user (0600 in a 0700 directory): it holds hashes that must not leak.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSY_S = 15.0
"""How long a statement waits for another process's write to finish before it fails."""


class SqliteFile:
    """A lazily opened SQLite file with ``schema`` applied, used only from its own thread."""

    def __init__(self, path: Path, schema: str, *, thread_name: str) -> None:
        self.path = Path(path)
        self._schema = schema
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            db = sqlite3.connect(self.path, timeout=BUSY_S, isolation_level=None)
            if fresh:
                with contextlib.suppress(OSError):
                    self.path.chmod(0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA busy_timeout={int(BUSY_S * 1000)}")
            db.executescript(self._schema)
            self._db = db
        return self._db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the file's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    async def close(self) -> None:
        def run() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, run)
        self._pool.shutdown(wait=False)


__all__ = ["SqliteFile"]
