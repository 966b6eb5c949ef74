"""The page's side of verified identity (:mod:`kibitz.identity`): what the sign-in element needs, and
the HTTP seam that loads issuers' keys in the engine's Worker.

The engine decides and checks; the page only draws. ``signInIdentity(el, method)`` asks the engine
for a *sign-in plan* (:func:`sign_in_plan`): which providers this room trusts for that method, and
the nonce that binds a token to this tab's certificate in this room. widget/identity.js then runs
the email code flow against the plan's ``apiBase`` (``/api/email/start|verify``), or an OpenID
Connect sign-in in a popup (authorization code with PKCE; Google: an ID token in the fragment), and
hands the token back with ``provideIdentityToken``, which checks it like any peer would.

Like the rest of the page backends, ``js`` is imported lazily so CPython can import this module.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from kibitz.identity.keys import Done
from kibitz.identity.member import IdentityError
from kibitz.identity.policy import Provider
from kibitz.session import Session

log = logging.getLogger(__name__)

SIGN_IN_METHODS = ("auto", "email", "google", "oidc")

_pending: set[asyncio.Future[Any]] = set()


def sign_in_plan(session: Session, method: str) -> dict[str, Any]:
    """What the page's sign-in element needs for ``method``: ``{method, nonce, room, apiBase}`` for
    ``"email"``, ``{method, nonce, room, issuer, clientId}`` for ``"google"``/``"oidc"`` (the page
    runs the provider's sign-in in a popup), and for ``"auto"`` ``{method: "auto", nonce, room,
    options: [plan, ...]}``, one plan per provider the room trusts, email first. Raises
    :class:`~kibitz.identity.member.IdentityError` when this room trusts no such provider, or
    ``RuntimeError`` while the certificate is not ready."""
    if method not in SIGN_IN_METHODS:
        raise IdentityError("unknown-method", f"sign-in method {method!r}; one of {list(SIGN_IN_METHODS)}")
    config = session.identity.config
    if config is None:
        raise IdentityError("no-providers", "this room verifies no identity (no verifyIdentity option, "
                            "no email/google gate)")
    kinds = {"auto": ("email", "google", "oidc"), "email": ("email",)}.get(method, ("google", "oidc"))
    providers = sorted((p for p in config.providers if p.kind in kinds), key=lambda p: p.kind != "email")
    if not providers:
        raise IdentityError("no-provider", f"this room trusts no {method} sign-in")
    nonce, room = session.identity_nonce(), session.room_name
    options = [_plan_for(p, nonce, room, session) for p in providers]
    if method != "auto":
        return options[0]
    return {"method": "auto", "nonce": nonce, "room": room, "options": options}


def _plan_for(provider: Provider, nonce: str, room: str, session: Session) -> dict[str, Any]:
    plan: dict[str, Any] = {"method": provider.kind, "nonce": nonce, "room": room}
    if provider.kind == "email":
        plan["apiBase"] = provider.issuer + "/"
    else:
        # An OpenID Connect issuer may refuse a nonce it has seen (a second sign-in from this
        # certificate in this room would be): each plan gets a salted nonce of its own.
        plan.update(issuer=provider.issuer, clientId=provider.client_id,
                    nonce=session.identity_nonce(salt=secrets.token_urlsafe(16)))
    return plan


def page_key_fetch(url: str, done: Done) -> None:
    """:data:`kibitz.identity.keys.Fetch` with the Worker's ``fetch`` (no cookies, no cache)."""
    from kibitz.backends.page_relay import page_fetch

    async def run() -> None:
        try:
            status, text = await page_fetch("GET", url, {}, None)
        except Exception as exc:
            log.info("key fetch %s failed: %r", url, exc)
            status, text = 0, ""
        done(status, text.encode())

    task = asyncio.ensure_future(run())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


__all__ = ["SIGN_IN_METHODS", "page_key_fetch", "sign_in_plan"]
