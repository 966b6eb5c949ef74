"""``--turn-gate licence``: relay credentials only for a licence or a room grant, metered per month.

The tiers of ``GET /api/turn`` (seeds §7):

========== ===================================================================================
premium    a valid licence (``Authorization: Bearer``): relay credentials, metered to it
room       a valid room grant (``X-Kibitz-Grant``) for the ``?room=`` asked about: relay
           credentials, metered to the licence that minted the grant (the room's opener), and
           a renewed ``grant`` that outlives them, for the page's next refresh
capped     the licence or sponsor has used its monthly allowance: no relay
free       anything else (no credential, or a bad one): STUN only (or none)
========== ===================================================================================

A licence is tried first, then a grant (so a guest whose own licence is capped still rides the
opener's). A bad credential never costs the caller more than the relay: the answer is always 200
with the tier and a ``reason`` saying what was wrong. If the store cannot be read the gate fails
closed (tier ``free``, reason says so) and the error is logged, never the credential.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .grants import (
    GRANT_TTL_S,
    ROOM_PATTERN,
    bearer_token,
    licence_hash,
    mint_grant,
    verify_grant,
)
from .licences import LicenceStore, check_licence, month_of
from .turn import TurnRestProvider

log = logging.getLogger("kibitz.server.gate")

GRANT_HEADER = "X-Kibitz-Grant"


class GrantError(Exception):
    """Why ``POST /api/room-grant`` refused: ``status`` (400/401/403) and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LicenceGate:
    """A :class:`~.turn.TurnProvider` that hands the relay only to licences and their room grants."""

    def __init__(
        self,
        relay: TurnRestProvider,
        store: LicenceStore,
        grant_secret: bytes,
        *,
        stun_urls: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(grant_secret) < 32:
            raise ValueError("the room-grant key must be at least 32 bytes")
        bad = [u for u in stun_urls if not u.startswith(("stun:", "stuns:"))]
        if bad:
            raise ValueError(f"STUN URLs must start with stun: or stuns:, got {bad}")
        self.relay = relay
        self.store = store
        self.stun_urls = list(stun_urls)
        self._grant_secret = grant_secret
        self._clock = clock
        #: Answers by tier, and refused credentials by kind (for /metrics).
        self.tiers: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()

    # ------------------------------------------------------------------ GET /api/turn

    async def ice_servers(self, headers: Mapping[str, str], room: str | None = None) -> dict[str, Any]:
        try:
            answer = await self._decide(headers, room)
        except Exception:  # the store failed: fail closed, say so, never 5xx
            log.exception("licence store unavailable; answering tier free")
            self.refusals["store-error"] += 1
            answer = self._without_relay("free", "the licence check is unavailable right now")
        self.tiers[answer["tier"]] += 1
        return answer

    async def _decide(self, headers: Mapping[str, str], room: str | None) -> dict[str, Any]:
        now = self._clock()
        month = month_of(now)
        reasons: list[str] = []
        capped = False

        token, bad = bearer_token(headers.get("Authorization"))
        if bad:
            self.refusals["licence-malformed"] += 1
            reasons.append(bad)
        if token is not None:
            presented = licence_hash(token)
            licence, why = check_licence(await self.store.by_hash(presented), presented)
            if licence is None:
                self.refusals["licence-revoked" if "revoked" in why else "licence-unknown"] += 1
                reasons.append(why)
            elif await self.store.meter(licence.id, month, licence.monthly_cap) is None:
                capped = True
                reasons.append("the licence has used its relay allowance for this month")
            else:
                return self._with_relay("premium", reasons)

        grant = headers.get(GRANT_HEADER)
        if grant is not None and grant.strip():
            check = verify_grant(self._grant_secret, grant, room, now)
            if not check.ok:
                self.refusals[f"grant-{check.refusal}"] += 1
                reasons.append(check.reason)
            else:
                sponsor = await self.store.by_id(str(check.sub))
                if sponsor is None or not sponsor.active:
                    self.refusals["grant-sponsor-revoked"] += 1
                    reasons.append("the licence that sponsors this room is no longer valid")
                elif await self.store.meter(sponsor.id, month, sponsor.monthly_cap) is None:
                    capped = True
                    reasons.append("the room's sponsor has used its relay allowance for this month")
                else:
                    answer = self._with_relay("room", reasons)
                    # Renewed for as long as the page keeps its credentials fresh: a joiner the
                    # invite let in keeps its sponsor for the whole call (revocation and the cap
                    # still end it at the next refresh).
                    answer["grant"], _ = mint_grant(self._grant_secret, str(room), sponsor.id, now,
                                                    int(self.relay.ttl) + GRANT_TTL_S)
                    return answer

        if not reasons:
            reasons.append("this relay needs a licence or a room grant")
        return self._without_relay("capped" if capped else "free", "; ".join(reasons))

    def _with_relay(self, tier: str, reasons: list[str]) -> dict[str, Any]:
        answer = self.relay.mint(tier)
        if reasons:  # e.g. a capped licence, carried by the room's grant instead
            answer["reason"] = "; ".join(reasons)
        return answer

    def _without_relay(self, tier: str, reason: str) -> dict[str, Any]:
        servers = [{"urls": self.stun_urls}] if self.stun_urls else None
        return {"iceServers": servers, "configured": True, "tier": tier, "reason": reason}

    # ------------------------------------------------------------------ POST /api/room-grant

    async def room_grant(self, authorization: str | None, body: object) -> dict[str, Any]:
        """``{grant, exp}`` for the licence in ``authorization`` and ``body["room"]``.

        Raises :class:`GrantError`: 400 for a body without a valid room, 401 without a bearer
        licence, 403 for a licence that is unknown or revoked.
        """
        if not isinstance(body, dict) or not isinstance(body.get("room"), str):
            raise GrantError(400, 'the body must be JSON {"room": "<room>"}')
        room = body["room"]
        if not ROOM_PATTERN.match(room):
            raise GrantError(400, "room must be 1-200 characters of letters, digits, _ . : -")
        token, bad = bearer_token(authorization)
        if token is None:
            raise GrantError(401, bad or "a room grant needs 'Authorization: Bearer <licence>'")
        presented = licence_hash(token)
        licence, why = check_licence(await self.store.by_hash(presented), presented)
        if licence is None:
            self.refusals["grant-mint-refused"] += 1
            raise GrantError(403, why)
        grant, exp = mint_grant(self._grant_secret, room, licence.id, self._clock(), GRANT_TTL_S)
        return {"grant": grant, "exp": exp}

    def render_metrics(self) -> str:
        lines = [
            "# HELP kibitz_turn_answers_total /api/turn answers, by tier.",
            "# TYPE kibitz_turn_answers_total counter",
        ]
        lines += [f'kibitz_turn_answers_total{{tier="{t}"}} {n}' for t, n in sorted(self.tiers.items())]
        lines += [
            "# HELP kibitz_turn_refusals_total Licences and grants refused, by reason.",
            "# TYPE kibitz_turn_refusals_total counter",
        ]
        lines += [f'kibitz_turn_refusals_total{{reason="{r}"}} {n}' for r, n in sorted(self.refusals.items())]
        return "\n".join(lines) + "\n"
