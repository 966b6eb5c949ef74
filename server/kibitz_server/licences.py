"""The licence store: licences (as hashes only) and per-month relay metering, behind one small seam.

:class:`LicenceStore` is the whole interface the relay gate and the ``kibitz licence`` commands
use; it is async so a network store (Redis, for several server nodes) fits behind it unchanged.
Two implementations live here: :class:`SqliteLicenceStore` (the default, one file in the server's
state directory, safe for several processes sharing it) and :class:`MemoryLicenceStore` (tests).

Lookups are by the SHA-256 of the presented token, never by the token: how long a lookup takes
depends on the digest, which an attacker cannot steer towards a real licence, so the store's
timing tells nothing about which licences exist. The found record's digest is then compared with
:func:`hmac.compare_digest` all the same.

Metering is one atomic step per credential handed out: "add one to this licence's count for this
month unless it has reached its cap", so two servers (or two requests) can never both take the
last unit of an allowance.
"""

from __future__ import annotations

import hmac
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

from .sqlite_file import SqliteFile

T = TypeVar("T")


def month_of(ts: float) -> str:
    """The metering month of a unix time, UTC: ``"2026-03"``."""
    return time.strftime("%Y-%m", time.gmtime(ts))


@dataclass(frozen=True)
class Licence:
    """One sold licence. ``id`` is its public ``sub``; the token itself is never stored."""

    id: str
    key_hash: bytes
    label: str = ""
    #: Relay credentials this licence (and the rooms it sponsors) may take per month; None = no cap.
    monthly_cap: int | None = None
    created: float = 0.0
    revoked: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True)
class Usage:
    """Relay credentials metered to one licence in one month."""

    licence_id: str
    month: str
    credentials: int


class LicenceStore(Protocol):
    async def add(self, licence: Licence) -> None:
        """Store a new licence; ``ValueError`` if its id or hash is already there."""

    async def by_hash(self, key_hash: bytes) -> Licence | None:
        """The licence whose token hashes to ``key_hash`` (revoked ones too), else None."""

    async def by_id(self, licence_id: str) -> Licence | None: ...

    async def revoke(self, licence_id: str, at: float) -> bool:
        """Mark revoked (its grants stop working at once); False if unknown or already revoked."""

    async def all(self) -> list[Licence]: ...

    async def meter(self, licence_id: str, month: str, cap: int | None) -> int | None:
        """Atomically count one credential: the new count, or None (nothing counted) at the cap."""

    async def usage(self, month: str | None = None) -> list[Usage]:
        """Counts per licence and month (one month, or all), sorted by month then id."""

    async def close(self) -> None: ...


def check_licence(found: Licence | None, presented_hash: bytes) -> tuple[Licence | None, str]:
    """The active licence matching ``presented_hash``, or ``(None, reason)``; constant-time compare."""
    stored = found.key_hash if found is not None else bytes(len(presented_hash))
    same = hmac.compare_digest(stored, presented_hash)
    if found is None or not same:
        return None, "the licence is not known here"
    if not found.active:
        return None, "the licence has been revoked"
    return found, ""


class MemoryLicenceStore:
    """In-process store for tests and single-process experiments; nothing survives a restart."""

    def __init__(self) -> None:
        self._by_id: dict[str, Licence] = {}
        self._by_hash: dict[bytes, str] = {}
        self._usage: dict[tuple[str, str], int] = {}

    async def add(self, licence: Licence) -> None:
        if licence.id in self._by_id or licence.key_hash in self._by_hash:
            raise ValueError(f"licence {licence.id} already exists")
        self._by_id[licence.id] = licence
        self._by_hash[licence.key_hash] = licence.id

    async def by_hash(self, key_hash: bytes) -> Licence | None:
        found = self._by_hash.get(key_hash)
        return self._by_id[found] if found is not None else None

    async def by_id(self, licence_id: str) -> Licence | None:
        return self._by_id.get(licence_id)

    async def revoke(self, licence_id: str, at: float) -> bool:
        found = self._by_id.get(licence_id)
        if found is None or not found.active:
            return False
        self._by_id[licence_id] = replace(found, revoked=at)
        return True

    async def all(self) -> list[Licence]:
        return sorted(self._by_id.values(), key=lambda lic: (lic.created, lic.id))

    async def meter(self, licence_id: str, month: str, cap: int | None) -> int | None:
        # No await between the read and the write: atomic on the event loop.
        count = self._usage.get((licence_id, month), 0)
        if cap is not None and count >= cap:
            return None
        self._usage[(licence_id, month)] = count + 1
        return count + 1

    async def usage(self, month: str | None = None) -> list[Usage]:
        rows = [Usage(lid, m, n) for (lid, m), n in self._usage.items() if month in (None, m)]
        return sorted(rows, key=lambda u: (u.month, u.licence_id))

    async def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS licences (
    id TEXT PRIMARY KEY,
    key_hash BLOB NOT NULL UNIQUE,
    label TEXT NOT NULL DEFAULT '',
    monthly_cap INTEGER,
    created REAL NOT NULL,
    revoked REAL
);
CREATE TABLE IF NOT EXISTS usage (
    licence_id TEXT NOT NULL,
    month TEXT NOT NULL,
    credentials INTEGER NOT NULL,
    PRIMARY KEY (licence_id, month)
);
"""

_METER = """
INSERT INTO usage (licence_id, month, credentials) VALUES (?, ?, 1)
ON CONFLICT (licence_id, month) DO UPDATE SET credentials = credentials + 1
    WHERE ?3 IS NULL OR credentials < ?3
RETURNING credentials
"""


class SqliteLicenceStore:
    """Licences and usage in one SQLite file (WAL; several processes may share it), on one private
    worker thread (:class:`~.sqlite_file.SqliteFile`): the metering step is atomic across processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = SqliteFile(self.path, _SCHEMA, thread_name="kibitz-licences")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

    @staticmethod
    def _row(row: tuple[object, ...] | None) -> Licence | None:
        if row is None:
            return None
        lid, key_hash, label, cap, created, revoked = row
        return Licence(
            str(lid), bytes(key_hash), str(label),  # type: ignore[call-overload]
            None if cap is None else int(cap),  # type: ignore[call-overload]
            float(created), None if revoked is None else float(revoked),  # type: ignore[arg-type]
        )

    async def add(self, licence: Licence) -> None:
        def run(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO licences (id, key_hash, label, monthly_cap, created, revoked) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (licence.id, licence.key_hash, licence.label, licence.monthly_cap, licence.created,
                     licence.revoked),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"licence {licence.id} already exists") from exc

        await self._run(run)

    _COLS = "SELECT id, key_hash, label, monthly_cap, created, revoked FROM licences"

    async def by_hash(self, key_hash: bytes) -> Licence | None:
        return await self._run(
            lambda db: self._row(db.execute(f"{self._COLS} WHERE key_hash = ?", (key_hash,)).fetchone())
        )

    async def by_id(self, licence_id: str) -> Licence | None:
        return await self._run(
            lambda db: self._row(db.execute(f"{self._COLS} WHERE id = ?", (licence_id,)).fetchone())
        )

    async def revoke(self, licence_id: str, at: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE licences SET revoked = ? WHERE id = ? AND revoked IS NULL", (at, licence_id)
            )
            return cur.rowcount == 1

        return await self._run(run)

    async def all(self) -> list[Licence]:
        def run(db: sqlite3.Connection) -> list[Licence]:
            rows = db.execute(f"{self._COLS} ORDER BY created, id").fetchall()
            return [lic for lic in map(self._row, rows) if lic is not None]

        return await self._run(run)

    async def meter(self, licence_id: str, month: str, cap: int | None) -> int | None:
        if cap is not None and cap <= 0:
            return None

        def run(db: sqlite3.Connection) -> int | None:
            row = db.execute(_METER, (licence_id, month, cap)).fetchone()
            return None if row is None else int(row[0])

        return await self._run(run)

    async def usage(self, month: str | None = None) -> list[Usage]:
        def run(db: sqlite3.Connection) -> list[Usage]:
            rows = db.execute(
                "SELECT licence_id, month, credentials FROM usage WHERE ? IS NULL OR month = ? "
                "ORDER BY month, licence_id",
                (month, month),
            ).fetchall()
            return [Usage(str(a), str(b), int(c)) for a, b, c in rows]

        return await self._run(run)

    async def close(self) -> None:
        await self._file.close()
