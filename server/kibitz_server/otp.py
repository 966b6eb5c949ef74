"""The email-code store: pending sign-in codes (as salted hashes only) and the rate limits, behind one
small async seam so a network store (Redis, for several server nodes) fits behind it unchanged.

:class:`OtpStore` is the whole interface ``/api/email/*`` uses. Two implementations live here:
:class:`SqliteOtpStore` (the default, ``<state-dir>/email-otp.sqlite3``, safe for several processes
sharing it) and :class:`MemoryOtpStore` (tests, single process). Every step that must not race is
one atomic store operation: "count one try of this ticket unless it is locked or gone" and "count
one request for this key unless it reached its limit in the window".

A code never reaches the store: only ``sha256hex(salt + ":" + code)`` with a fresh 16-byte salt.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

from .sqlite_file import SqliteFile

T = TypeVar("T")


@dataclass(frozen=True)
class OtpRecord:
    """One code waiting to be typed in."""

    code_hash: str
    salt: str
    email: str
    room: str
    nonce: str
    exp: float
    attempts: int = 0


class OtpStore(Protocol):
    async def put(self, ticket: str, record: OtpRecord) -> None: ...

    async def attempt(self, ticket: str, now: float, max_attempts: int) -> OtpRecord | None:
        """Atomically count one try of ``ticket`` and return the record with the new count (which
        stops growing at ``max_attempts + 1``: a count above ``max_attempts`` means locked); None when
        unknown or expired (an expired one is deleted)."""

    async def delete(self, ticket: str) -> None: ...

    async def hit(self, key: str, now: float, window: float, limit: int) -> float | None:
        """Count one request for ``key`` in a fixed window; None when allowed, else the seconds until
        the window ends (nothing counted)."""

    async def close(self) -> None: ...


class MemoryOtpStore:
    """In-process store; nothing survives a restart (a pending code is then simply gone)."""

    def __init__(self) -> None:
        self._otp: dict[str, OtpRecord] = {}
        self._hits: dict[str, tuple[float, int]] = {}

    async def put(self, ticket: str, record: OtpRecord) -> None:
        self._prune(record.exp - 600)
        self._otp[ticket] = record

    async def attempt(self, ticket: str, now: float, max_attempts: int) -> OtpRecord | None:
        found = self._otp.get(ticket)
        if found is None:
            return None
        if found.exp <= now:
            del self._otp[ticket]
            return None
        if found.attempts > max_attempts:
            return found
        found = replace(found, attempts=found.attempts + 1)
        self._otp[ticket] = found
        return found

    async def delete(self, ticket: str) -> None:
        self._otp.pop(ticket, None)

    async def hit(self, key: str, now: float, window: float, limit: int) -> float | None:
        start, count = self._hits.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        if count >= limit:
            return start + window - now
        self._hits[key] = (start, count + 1)
        return None

    def _prune(self, now: float) -> None:
        if len(self._otp) > 10000:
            for ticket, rec in list(self._otp.items()):
                if rec.exp <= now:
                    del self._otp[ticket]

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS otp (
    ticket TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    salt TEXT NOT NULL,
    email TEXT NOT NULL,
    room TEXT NOT NULL,
    nonce TEXT NOT NULL,
    exp REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS otp_exp ON otp (exp);
CREATE TABLE IF NOT EXISTS hits (
    key TEXT PRIMARY KEY,
    start REAL NOT NULL,
    count INTEGER NOT NULL
);
"""

_COLS = "code_hash, salt, email, room, nonce, exp, attempts"


class SqliteOtpStore:
    """Codes and rate-limit windows in one SQLite file (WAL; several processes may share it), on one
    private worker thread (:class:`~.sqlite_file.SqliteFile`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, _SCHEMA, thread_name="kibitz-otp")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    @staticmethod
    def _record(row: tuple[object, ...]) -> OtpRecord:
        code_hash, salt, email, room, nonce, exp, attempts = row
        return OtpRecord(str(code_hash), str(salt), str(email), str(room), str(nonce),
                         float(exp), int(attempts))  # type: ignore[arg-type,call-overload]

    async def put(self, ticket: str, record: OtpRecord) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM otp WHERE exp <= ?", (record.exp - 600,))
            db.execute(f"INSERT INTO otp (ticket, {_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (ticket, record.code_hash, record.salt, record.email, record.room, record.nonce,
                        record.exp, record.attempts))

        await self._run(run)

    async def attempt(self, ticket: str, now: float, max_attempts: int) -> OtpRecord | None:
        def run(db: sqlite3.Connection) -> OtpRecord | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(f"SELECT {_COLS} FROM otp WHERE ticket = ?", (ticket,)).fetchone()
                if row is None:
                    return None
                record = self._record(row)
                if record.exp <= now:
                    db.execute("DELETE FROM otp WHERE ticket = ?", (ticket,))
                    return None
                if record.attempts > max_attempts:
                    return record
                db.execute("UPDATE otp SET attempts = attempts + 1 WHERE ticket = ?", (ticket,))
                return replace(record, attempts=record.attempts + 1)
            finally:
                db.execute("COMMIT")

        return await self._run(run)

    async def delete(self, ticket: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM otp WHERE ticket = ?", (ticket,)))

    async def hit(self, key: str, now: float, window: float, limit: int) -> float | None:
        def run(db: sqlite3.Connection) -> float | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT start, count FROM hits WHERE key = ?", (key,)).fetchone()
                start, count = (float(row[0]), int(row[1])) if row else (now, 0)
                if now - start >= window:
                    start, count = now, 0
                if count >= limit:
                    return start + window - now
                db.execute("INSERT INTO hits (key, start, count) VALUES (?, ?, ?) ON CONFLICT (key) "
                           "DO UPDATE SET start = excluded.start, count = excluded.count",
                           (key, start, count + 1))
                if count == 0:
                    db.execute("DELETE FROM hits WHERE start < ?", (now - 2 * window,))
                return None
            finally:
                db.execute("COMMIT")

        return await self._run(run)

    async def close(self) -> None:
        await self._file.close()


__all__ = ["MemoryOtpStore", "OtpRecord", "OtpStore", "SqliteOtpStore"]
