"""The relay, as a member sees it: ``/api/turn`` with a licence or a room grant, fresh credentials
before they expire, "hide my IP" (relay only) failing closed, and "opener pays" invite links.

Written once for every backend: the page (Pyodide) and the agent (CPython) hand in how to make
an HTTP request (:data:`Fetch`) and apply what comes back to their transport. Nothing here
imports ``js`` or a socket.

The contract (seeds §7; server side in ``kibitz.server.gate``):

* ``GET <turn base>api/turn?room=<normalised room>`` with ``Authorization: Bearer <licence>``
  and/or ``X-Kibitz-Grant: <grant>`` answers ``{iceServers, configured, tier, ttl?, reason?,
  grant?}``. ``tier`` is ``open``, ``premium`` or ``room`` with relay credentials, ``free`` or
  ``capped`` without (STUN at most). A room-tier answer carries a renewed ``grant`` that outlives
  the credentials, so a joiner admitted by an invite keeps its sponsor for the whole call.
* ``POST <turn base>api/room-grant {room}`` with the licence mints the grant an invite carries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

from kibitz.backends.rtc_api import IceServer
from kibitz.ids import normalize_room

log = logging.getLogger(__name__)

Fetch = Callable[[str, str, Mapping[str, str], "str | None"], Awaitable[tuple[int, str]]]
"""``fetch(method, url, headers, body) -> (status, text)``; raises ``OSError``/``ValueError``
(or anything else) when there is no answer. The caller bounds it with a timeout."""

FETCH_TIMEOUT_S = 5.0
REFRESH_AT = 0.75
"""Fresh credentials are fetched at 3/4 of their life, counted from the fetch."""
RETRY_S = 60.0
"""A refresh that got no answer is tried again after at most this long."""
MIN_WAIT_S = 1.0
#: URL parameters that carry a grant (the original's ``?grant=`` and its short ``?k=``).
GRANT_PARAMS = ("grant", "k")
GRANT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class RelaySettings:
    """What a member tells ``/api/turn``: where it is, who pays, and whether it hides its IP."""

    base: str
    """The server whose ``/api/turn`` to ask (the widget's own, or ``turnHost``), ending in ``/``."""
    room: str
    licence: str | None = None
    grant: str | None = None
    relay_only: bool = False

    def __post_init__(self) -> None:
        if not self.base.endswith("/"):
            object.__setattr__(self, "base", self.base + "/")

    @property
    def room_slug(self) -> str:
        """The room as the server sees it in grants: normalised (``[a-z0-9-]``, ≤ 40 chars)."""
        return normalize_room(self.room)

    def turn_request(self) -> tuple[str, dict[str, str]]:
        url = f"{self.base}api/turn?{urlencode({'room': self.room_slug})}"
        headers: dict[str, str] = {}
        if self.licence:
            headers["Authorization"] = f"Bearer {self.licence}"
        if self.grant:
            headers["X-Kibitz-Grant"] = self.grant
        return url, headers


@dataclass(frozen=True)
class IceAnswer:
    """One answer of ``/api/turn`` (or why there was none: ``error``)."""

    servers: tuple[IceServer, ...] = ()
    ttl: float | None = None
    tier: str | None = None
    reason: str | None = None
    configured: bool = False
    grant: str | None = None
    error: str | None = None
    at: float = 0.0
    """When it was fetched (the keeper's clock): expiry is counted from here."""

    @property
    def has_relay(self) -> bool:
        """Whether any server is a TURN relay (``turn:``/``turns:``) with credentials."""
        return any(
            any(str(u).startswith(("turn:", "turns:")) for u in _urls(s)) and s.get("username") is not None
            for s in self.servers
        )


def _urls(server: Mapping[str, Any]) -> list[Any]:
    urls = server.get("urls")
    return list(urls) if isinstance(urls, list | tuple) else [urls]


def parse_turn_answer(status: int, text: str, at: float = 0.0) -> IceAnswer:
    """Read an ``/api/turn`` answer; anything unusable becomes an answer with ``error`` set."""
    if status != 200:
        return IceAnswer(error=f"/api/turn answered HTTP {status}", at=at)
    try:
        body = json.loads(text)
    except ValueError:
        return IceAnswer(error="/api/turn answered something that is not JSON", at=at)
    if not isinstance(body, dict):
        return IceAnswer(error="/api/turn answered something that is not an object", at=at)
    raw = body.get("iceServers")
    servers = tuple(
        cast(IceServer, s) for s in (raw if isinstance(raw, list) else ())
        if isinstance(s, dict) and s.get("urls") and all(isinstance(u, str) for u in _urls(s))
    )
    ttl = body.get("ttl")
    tier = body.get("tier")
    reason = body.get("reason")
    grant = body.get("grant")
    return IceAnswer(
        servers=servers,
        ttl=float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0 else None,
        tier=tier if isinstance(tier, str) else None,
        reason=reason if isinstance(reason, str) else None,
        configured=body.get("configured") is True,
        grant=grant if isinstance(grant, str) and grant else None,
        at=at,
    )


def relay_refusal(settings: RelaySettings, answer: IceAnswer) -> str | None:
    """Why a relay-only member must stay out (None: it may connect). Fail closed: relay only
    without relay credentials means no connection at all, never a direct fallback."""
    if not settings.relay_only or answer.has_relay:
        return None
    if answer.error:
        why = f"the relay could not be asked ({answer.error})"
    elif not answer.configured:
        why = "this server has no relay"
    elif answer.tier in ("free", "capped"):
        why = f"the relay refused (tier {answer.tier}: {answer.reason or 'no reason given'})"
    else:
        why = "the relay gave no credentials"
    return f"Hide my IP is on, so this call connects only through a relay, but {why}."


async def ask_turn(settings: RelaySettings, fetch: Fetch, *, timeout: float = FETCH_TIMEOUT_S,
                   clock: Callable[[], float] = time.monotonic) -> IceAnswer:
    """One ``GET /api/turn``; never raises (a failure is an answer with ``error``)."""
    url, headers = settings.turn_request()
    at = clock()
    try:
        status, text = await asyncio.wait_for(fetch("GET", url, headers, None), timeout)
    except TimeoutError:
        return IceAnswer(error=f"no answer within {timeout:g} s", at=at)
    except Exception as exc:
        return IceAnswer(error=f"{type(exc).__name__}: {exc}", at=at)
    return parse_turn_answer(status, text, at)


class RelayKeeper:
    """Asks ``/api/turn`` once, then again at 3/4 of the credentials' life, for as long as it runs.

    ``apply(answer)`` gets every usable answer (the first too): the backend hands the servers to
    the connections it makes from then on (live ones keep theirs: the relay checks the expiry
    only when an allocation is made). A room-tier answer's renewed grant replaces the one used.
    A refresh that gets no answer keeps the current servers and is tried again within a minute.
    """

    def __init__(
        self,
        settings: RelaySettings,
        fetch: Fetch,
        apply: Callable[[IceAnswer], None],
        *,
        timeout: float = FETCH_TIMEOUT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._fetch = fetch
        self._apply = apply
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.answer: IceAnswer | None = None
        self.fetches = 0
        self.closed = False

    async def ask(self) -> IceAnswer:
        """Ask now; a usable answer is applied (and a renewed grant adopted)."""
        self.fetches += 1
        answer = await ask_turn(self.settings, self._fetch, timeout=self._timeout, clock=self._clock)
        if answer.error is None and not self.closed:
            if answer.grant:
                self.settings = replace(self.settings, grant=answer.grant)
            self.answer = answer
            self._apply(answer)
        elif answer.error is not None:
            log.warning("no ICE servers from %s: %s", self.settings.base, answer.error)
        return answer

    def next_wait(self, last: IceAnswer) -> float | None:
        """Seconds until the next ask after ``last`` (None: nothing expires, no need to ask again)."""
        if last.error is not None:
            held = self.answer.ttl if self.answer is not None and self.answer.ttl else RETRY_S
            return max(MIN_WAIT_S, min(held, RETRY_S))
        if last.ttl is None:
            return None
        due = last.at + last.ttl * REFRESH_AT
        return max(MIN_WAIT_S, due - self._clock())

    async def run(self, first: IceAnswer) -> None:
        """Keep the credentials fresh after ``first`` until :meth:`close`."""
        last = first
        while not self.closed:
            wait = self.next_wait(last)
            if wait is None:
                return
            await self._sleep(wait)
            if self.closed:
                return
            last = await self.ask()

    def close(self) -> None:
        self.closed = True


async def mint_room_grant(settings: RelaySettings, fetch: Fetch, *,
                          timeout: float = FETCH_TIMEOUT_S) -> tuple[str, int]:
    """``POST /api/room-grant`` with this member's licence: ``(grant, exp)`` for its room.

    Raises ``PermissionError`` without a licence or when the server refuses (its reason in the
    message), ``ConnectionError`` when the server cannot be asked.
    """
    if not settings.licence:
        raise PermissionError("only a member with a licence (licenseKey) can sponsor a room")
    url = f"{settings.base}api/room-grant"
    headers = {"Authorization": f"Bearer {settings.licence}", "Content-Type": "application/json"}
    try:
        status, text = await asyncio.wait_for(
            fetch("POST", url, headers, json.dumps({"room": settings.room_slug})), timeout)
    except Exception as exc:
        raise ConnectionError(f"{url} could not be asked: {exc or type(exc).__name__}") from exc
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status == 200 and isinstance(body, dict) and isinstance(body.get("grant"), str) \
            and isinstance(body.get("exp"), int):
        return body["grant"], body["exp"]
    reason = body.get("error") if isinstance(body, dict) else None
    raise PermissionError(f"{url} refused the grant (HTTP {status}): {reason or 'no reason given'}")


def strip_grant(url: str) -> tuple[str, str | None]:
    """``url`` without its grant parameters (in the query, or in a query inside the fragment as in
    ``#room?g=…``), and the grant found (``grant`` wins over ``k``). Only values shaped like a
    grant count (a host page's own ``?k=`` stays); every other parameter is kept byte for byte."""
    parts = urlsplit(url)
    found: dict[str, str] = {}

    def clean(query: str) -> str:
        kept = []
        for segment in query.split("&"):
            key, _, value = segment.partition("=")
            if unquote_plus(key) in GRANT_PARAMS and GRANT_SHAPE.match(unquote_plus(value)):
                found.setdefault(unquote_plus(key), unquote_plus(value))
            elif segment:
                kept.append(segment)
        return "&".join(kept)

    query = clean(parts.query)
    fragment = parts.fragment
    if "?" in fragment:
        head, _, frag_query = fragment.partition("?")
        frag_query = clean(frag_query)
        fragment = f"{head}?{frag_query}" if frag_query else head
    grant = found.get("grant") or found.get("k") or None
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment)), grant


def invite_link(page_url: str, grant: str | None) -> str:
    """The page's address as an invite: any grant it carried removed, ``grant`` (if any) added as
    ``?grant=`` in the query, where the original puts it (``/?grant=…#room``)."""
    clean, _ = strip_grant(page_url)
    if not grant:
        return clean
    parts = urlsplit(clean)
    query = f"{parts.query}&grant={quote(grant)}" if parts.query else f"grant={quote(grant)}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
