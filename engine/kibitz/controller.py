"""The page controller's engine members, listed once.

``Kibitz.mount()`` returns a controller whose methods mostly run in the Python engine: each is a
promise that settles once the engine has done it. This list is the only place they are named.
From it:

* :class:`~kibitz.backends.page_session.PageSession` dispatches a call by its name;
* ``build/build.py`` writes the method list into ``widget.js`` (the generic RPC that carries a
  call to the engine's Worker, queued until the engine is ready) and the declarations into
  ``kibitz.d.ts``.

Adding an engine method is one line here, naming the Python method that does it (on
:class:`~kibitz.session.Session` as ``session.<name>``, or on the page session itself). A member
whose ``py`` is ``None`` exists in the API and rejects with "not available in this build".

The controller's own synchronous members (``broadcast``, ``sendTo``, ``on``, ``getState``…) live
in ``widget/loader.js``: they answer from the page's thread without a round trip to the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """One engine method of the controller."""

    name: str
    """The controller's (JS) name, camelCase."""
    ts: str
    """Its TypeScript signature after the name: ``(id: string): Promise<void>``."""
    py: str | None
    """What runs it: ``session.<method>`` (the :class:`~kibitz.session.Session`) or ``<method>``
    (the page session); ``None``: not in this build."""
    doc: str
    """One line for ``kibitz.d.ts``."""


ENGINE_MEMBERS: tuple[Member, ...] = (
    # Member(name, TypeScript signature, what runs it: session.<method> | <page session method> | None, doc)
    Member("join", "(opts?: { mic?: boolean; cam?: boolean }): Promise<void>", "join", "Enter the call (muted, camera off unless asked); a preview shows its self-view."),
    Member("leave", "(): Promise<void>", "leave", "Leave the call (presence stays: the launcher still shows who is in)."),
    Member("toggleMic", "(): Promise<boolean>", "toggle_mic", "Microphone on/off; resolves with the new state."),
    Member("toggleCam", "(): Promise<boolean>", "toggle_cam", "Camera on/off; resolves with the new state."),
    Member("shareScreen", "(): Promise<void>", "share_screen", "Share a screen (the browser's picker) in the video lane."),
    Member("shareTrack", "(track: MediaStreamTrack): Promise<void>", "share_track", "Send this track in the video lane, as a screen share."),
    Member("stopShare", "(): Promise<void>", "stop_share", "Stop sharing: the camera (or nothing) again."),
    Member("setName", "(name: string): Promise<void>", "session.set_name", "Your display name, for everyone."),
    Member("setAvatar", "(avatar: string): Promise<void>", "session.set_avatar", "Your avatar (a URL or a short text)."),
    Member("setMeta", "(meta: Record<string, unknown>): Promise<void>", "session.set_meta", "Opaque metadata carried in the roster."),
    Member("sendChat", "(text: string, to?: string): Promise<ChatLine>", "session.send_chat", "Post a chat line to everyone, or directly to participant `to`."),
    Member("setLobby", "(on: boolean): Promise<boolean>", "session.set_lobby", "Host only: hold newcomers in the lobby (resolves false for anyone else, the coordinator included)."),
    Member("admit", "(id: string): Promise<boolean>", "session.admit", "Host: let a knocking participant in."),
    Member("deny", "(id: string): Promise<boolean>", "session.deny", "Host: turn a knocking participant away."),
    Member("remove", "(id: string): Promise<boolean>", "session.remove", "Host: remove and keep out (a signed record every coordinator enforces)."),
    Member("unban", "(id: string): Promise<boolean>", "session.unban", "Host: let a removed participant back in."),
    Member("setLocked", "(on: boolean): Promise<boolean>", "session.set_locked", "Host: lock the room to newcomers."),
    Member("resetRoom", "(): Promise<boolean>", "session.reset_room", "Host: clear the room's chat and state."),
    Member("setJoinCredential", "(credential: string): Promise<void>", "set_join_credential", "Answer the door: the room's code, or your invite token."),
    Member("claimHost", "(password: string): Promise<void>", "session.claim_host", "Open the host key the link carries sealed, with the host password; rejects if it is wrong."),
    Member("knock", "(name: string, avatar?: string): Promise<void>", "session.knock", "Ask a host to be let in."),
    Member("getCapabilityGrant", "(id: string): Promise<Grant | null>", "session.get_capability_grant", "What participant `id` may perceive and do."),
    Member("setCapabilityGrant", "(id: string, grant: Grant | null): Promise<void>", "session.set_capability_grant", "Host: change what participant `id` may perceive and do."),
    Member("getAgentAudit", "(id?: string, n?: number): Promise<unknown[]>", "get_agent_audit", "The last `n` refused actions of an agent."),
    Member("createInviteLink", "(): Promise<string>", "create_invite_link", "This page's address as an invite link (the room's settings in the fragment, never a secret; a licensed member's carries a fresh ?grant=)."),
    Member("signInIdentity", '(el: HTMLElement, method?: "auto" | "email" | "google" | "oidc"): Promise<SignedIn>', "sign_in_identity", "Draw the sign-in into `el` and resolve once this tab is verified: email (address, then the mailed code) and/or a button per OpenID Connect provider the room trusts (a popup: authorization code with PKCE, Google: ID token), the nonce bound to this tab's certificate. `auto` (the default) offers every provider the room trusts. The popup returns to `kibitz-signin.html` next to widget.js: register that address as the client's redirect URI."),
    Member("identityNonce", "(salt?: string): Promise<string>", "session.identity_nonce", "The nonce an identity token for this tab must carry: b64url(SHA-256(fingerprint of this page's certificate | room)). With `salt` (16-64 base64url characters, fresh per sign-in, for issuers that refuse a nonce they have seen): `salt.b64url(SHA-256(fingerprint | room | salt))`."),
    Member("provideIdentityToken", "(jwt: string): Promise<SignedIn>", "session.provide_identity_token", "Adopt an identity token minted elsewhere (a popup, another origin); rejects with the reason when it is not bound to this tab's certificate in this room."),
    Member("getIdentityStats", "(): Promise<Record<string, unknown>>", "session.get_identity_stats", "Identity refusals counted by reason (peers' tokens, the door, our own), and key fetches."),
)
"""Every engine method of the controller, in the order ``kibitz.d.ts`` lists them."""

ENGINE_METHODS: tuple[str, ...] = tuple(m.name for m in ENGINE_MEMBERS)

_NAME = re.compile(r"^[a-z][A-Za-z0-9]*$")
_PY = re.compile(r"^(session\.)?[a-z_][a-z0-9_]*$")


def check_members(members: tuple[Member, ...] = ENGINE_MEMBERS) -> None:
    """Raise ``ValueError`` for a malformed list (duplicate or badly formed names)."""
    seen: set[str] = set()
    for m in members:
        if not _NAME.match(m.name):
            raise ValueError(f"controller member {m.name!r}: names are camelCase identifiers")
        if m.name in seen:
            raise ValueError(f"controller member {m.name!r} is listed twice")
        seen.add(m.name)
        if m.py is not None and not _PY.match(m.py):
            raise ValueError(f"controller member {m.name!r}: py must be 'method' or 'session.method'")
        if not m.ts.startswith("(") or "):" not in m.ts:
            raise ValueError(f"controller member {m.name!r}: ts must look like '(a: T): R'")


def typescript(members: tuple[Member, ...] = ENGINE_MEMBERS, indent: str = "  ") -> str:
    """The members as ``MountedWidget`` declarations (what build.py puts into ``kibitz.d.ts``)."""
    out = []
    for m in members:
        doc = m.doc if m.py is not None else f"{m.doc} (Not available in this build: rejects.)"
        out.append(f"{indent}/** {doc} */\n{indent}{m.name}{m.ts};")
    return "\n".join(out)


__all__ = ["ENGINE_MEMBERS", "ENGINE_METHODS", "Member", "check_members", "typescript"]
