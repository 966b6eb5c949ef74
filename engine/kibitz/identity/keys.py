"""The issuers' key sets, fetched through a seam and cached: sans-I/O like the rest of the engine.

:class:`KeyDirectory` never opens a socket. It asks the backend's :data:`Fetch` (the agent's HTTP
client, the page's ``fetch``, a dict in tests) for a URL and is told the answer later. For an OpenID
Connect issuer it reads ``{issuer}/.well-known/openid-configuration`` first, checks that the document
names the same issuer (a discovery document cannot redirect trust elsewhere), then fetches its
``jwks_uri``; the email provider's key set is at a fixed URL.

Keys are kept for an hour, then fetched again in the background (the old set stays usable until the
new one arrives). A token with an unknown ``kid`` asks for an early refresh, at most once every 30 s
per issuer, so a flood of bad tokens cannot make us hammer an issuer. When keys arrive,
``on_keys`` fires so whoever held a token waiting for them can check it again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kibitz.identity.jwt import parse_jwks
from kibitz.identity.rsa import RsaPublicKey

log = logging.getLogger(__name__)

Done = Callable[[int, bytes], None]
Fetch = Callable[[str, Done], None]
"""``fetch(url, done)``: GET ``url`` and call ``done(status, body)`` once, later (status 0: the
request failed). Never raises; never calls ``done`` from inside ``fetch``."""

REFRESH_S = 3600.0
RETRY_S = 30.0
MAX_DOC_BYTES = 256 * 1024


class KeySource(Protocol):
    @property
    def issuer(self) -> str: ...

    @property
    def jwks_url(self) -> str | None: ...

    @property
    def discovery_url(self) -> str: ...


@dataclass
class _Entry:
    keys: dict[str, RsaPublicKey] | None = None
    fetched: float = -1e18
    asked: float = -1e18
    busy: bool = False


class KeyDirectory:
    def __init__(self, fetch: Fetch | None, now: Callable[[], float],
                 on_keys: Callable[[], None] | None = None) -> None:
        self._fetch = fetch
        self._now = now
        self.on_keys = on_keys
        self._entries: dict[str, _Entry] = {}
        self.stats: Counter[str] = Counter()

    def _entry(self, source: KeySource) -> _Entry:
        return self._entries.setdefault(source.issuer, _Entry())

    def keys_of(self, source: KeySource) -> dict[str, RsaPublicKey] | None:
        """The issuer's keys if we have them (fetching them, or fresh ones, in the background)."""
        entry = self._entry(source)
        if entry.keys is None or self._now() - entry.fetched > REFRESH_S:
            self._start(source, entry)
        return entry.keys

    def refresh(self, source: KeySource) -> None:
        """A token named a key we do not have: fetch the set again (at most every 30 s)."""
        entry = self._entry(source)
        if self._now() - entry.asked >= RETRY_S:
            self._start(source, entry)

    def put(self, source: KeySource, keys: dict[str, RsaPublicKey]) -> None:
        """Keys known without fetching (tests, or keys a host pinned)."""
        entry = self._entry(source)
        entry.keys, entry.fetched = dict(keys), self._now()

    def _start(self, source: KeySource, entry: _Entry) -> None:
        if entry.busy or self._fetch is None:
            return
        if self._now() - entry.asked < RETRY_S and entry.keys is None and entry.asked > -1e17:
            return
        entry.busy, entry.asked = True, self._now()
        self.stats["fetch"] += 1
        jwks_url = source.jwks_url
        if jwks_url is not None:
            self._get(jwks_url, lambda doc: self._got_jwks(source, entry, doc), entry)
            return

        def discovered(doc: object) -> None:
            if not isinstance(doc, dict) or doc.get("issuer", "").rstrip("/") != source.issuer:
                self._failed(entry, "discovery document names another issuer")
                return
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                self._failed(entry, "discovery document has no jwks_uri")
                return
            self._get(uri, lambda jwks: self._got_jwks(source, entry, jwks), entry)

        self._get(source.discovery_url, discovered, entry)

    def _get(self, url: str, then: Callable[[object], None], entry: _Entry) -> None:
        assert self._fetch is not None

        def done(status: int, body: bytes) -> None:
            if status != 200 or len(body) > MAX_DOC_BYTES:
                self._failed(entry, f"GET {url} answered {status}")
                return
            try:
                doc = json.loads(body)
            except ValueError:
                self._failed(entry, f"GET {url} answered something that is not JSON")
                return
            then(doc)

        try:
            self._fetch(url, done)
        except Exception:
            log.exception("key fetch for %s failed", url)
            self._failed(entry, "fetch raised")

    def _got_jwks(self, source: KeySource, entry: _Entry, doc: object) -> None:
        try:
            keys = parse_jwks(doc)
        except ValueError as exc:
            self._failed(entry, str(exc))
            return
        entry.busy = False
        entry.keys, entry.fetched = keys, self._now()
        self.stats["loaded"] += 1
        if self.on_keys is not None:
            try:
                self.on_keys()
            except Exception:
                log.exception("on_keys callback failed")

    def _failed(self, entry: _Entry, why: str) -> None:
        entry.busy = False
        self.stats["error"] += 1
        log.warning("identity keys: %s", why)


__all__ = ["REFRESH_S", "RETRY_S", "Done", "Fetch", "KeyDirectory", "KeySource"]
