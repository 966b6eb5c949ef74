"""Who may sign members in, and what a verified identity token must say: providers, allow lists,
and the one check every peer and the coordinator run (:func:`verify_identity`).

A *provider* is an OpenID Connect issuer whose RS256 ID tokens we accept:

* ``email`` — the Kibitz server's own email-code issuer (``POST /api/email/start|verify``): issuer
  = the server's public URL (``apiBase``), audience ``kibitz-email``, keys at
  ``{apiBase}/api/email/jwks``;
* ``google`` — issuer ``https://accounts.google.com`` (also written without the scheme), audience =
  the app's OAuth client id, keys from its discovery document;
* ``oidc`` — any other issuer URL and client id, keys from ``{issuer}/.well-known/openid-configuration``.

:func:`verify_identity` accepts a token only when, in this order: an issuer we trust wrote it
(:mod:`kibitz.identity.jwt`: RS256, kid, iss, aud, times, sub), it names an ``email`` (and, except
for the email provider whose tokens mean "this address received the code", ``email_verified`` is
``true``), its ``nonce`` binds it to the certificate of the link it arrived on in this room
(:func:`kibitz.identity.binding.identity_nonce`), and the address is allowed (allowed emails and
allowed domains form a union; a Google Workspace ``hd`` claim counts as the domain).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from kibitz.identity.binding import nonce_binds
from kibitz.identity.jwt import JWT_REFUSALS, JwtRefusal, peek_claims, verify_rs256
from kibitz.identity.rsa import RsaPublicKey

ProviderKind = Literal["email", "google", "oidc"]
PROVIDER_KINDS: frozenset[str] = frozenset(get_args(ProviderKind))
GOOGLE_ISSUER = "https://accounts.google.com"
EMAIL_AUDIENCE = "kibitz-email"
MAX_PROVIDERS = 4
MAX_ALLOWED = 256
MAX_EMAIL_CHARS = 254

IdentityReason = Literal[
    "no-keys",
    "no-fingerprint",
    "no-email",
    "email-unverified",
    "other-cert",
    "wrong-nonce",
    "not-allowed",
]
IDENTITY_REFUSALS: tuple[str, ...] = (*JWT_REFUSALS, *get_args(IdentityReason))
"""Every reason a token can be refused for (stable words: count them, switch on them)."""


class IdentityConfigError(ValueError):
    """A ``verifyIdentity`` option (or a gate's identity settings) that cannot be used."""


def normalize_email(email: str) -> str:
    return email.strip().casefold()


def _domain(entry: str) -> str:
    return normalize_email(entry).lstrip("@")


def _url(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or len(value) > 512:
        raise IdentityConfigError(f"{what} must be an http(s) URL")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class Provider:
    kind: ProviderKind
    issuer: str
    """Where tokens come from: the server's public URL (email) or the OIDC issuer."""
    client_id: str = ""

    @property
    def issuers(self) -> tuple[str, ...]:
        if self.kind == "google" and self.issuer == GOOGLE_ISSUER:
            return (GOOGLE_ISSUER, "accounts.google.com")
        return (self.issuer,)

    @property
    def audience(self) -> str:
        return EMAIL_AUDIENCE if self.kind == "email" else self.client_id

    @property
    def jwks_url(self) -> str | None:
        """Fixed key-set URL (email), else None: read it from the discovery document."""
        return f"{self.issuer}/api/email/jwks" if self.kind == "email" else None

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def needs_email_verified(self) -> bool:
        return self.kind != "email"

    def to_json(self) -> dict[str, str]:
        if self.kind == "email":
            return {"type": "email", "apiBase": self.issuer}
        return {"type": self.kind, "issuer": self.issuer, "clientId": self.client_id}

    @classmethod
    def from_json(cls, obj: object, *, api_base: str | None = None) -> Provider:
        """``"email"`` (the mount's ``apiBase``), ``{type: "email", apiBase}``, ``{type: "google",
        clientId}``, ``{type: "oidc", issuer, clientId}``."""
        if isinstance(obj, str):
            obj = {"type": obj}
        if not isinstance(obj, Mapping):
            raise IdentityConfigError("a provider is 'email' or an object {type, …}")
        unknown = sorted(set(obj) - {"type", "issuer", "clientId", "apiBase"})
        if unknown:
            raise IdentityConfigError(f"a provider has fields this engine does not know: {unknown}")
        kind = obj.get("type")
        if kind not in PROVIDER_KINDS:
            raise IdentityConfigError(f"provider type {kind!r}; types are {sorted(PROVIDER_KINDS)}")
        if kind == "email":
            base = obj.get("apiBase") or api_base
            if not base:
                raise IdentityConfigError("the email provider needs apiBase (the Kibitz server's URL)")
            return cls("email", _url(base, "apiBase"))
        client_id = obj.get("clientId")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= 256:
            raise IdentityConfigError(f"the {kind} provider needs clientId (the app's OAuth client id)")
        issuer = obj.get("issuer") or (GOOGLE_ISSUER if kind == "google" else None)
        if not issuer:
            raise IdentityConfigError("an oidc provider needs its issuer URL")
        return cls(kind, _url(issuer, "issuer"), client_id)


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """The ``verifyIdentity`` mount option: trusted providers, who is allowed, and whether content
    waits for everyone to be verified (``require``)."""

    providers: tuple[Provider, ...]
    allowed_emails: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()
    require: bool = False

    @classmethod
    def from_json(cls, obj: object, *, api_base: str | None = None) -> IdentityConfig:
        if isinstance(obj, IdentityConfig):
            return obj
        if not isinstance(obj, Mapping):
            raise IdentityConfigError("verifyIdentity must be an object {providers, …}")
        unknown = sorted(set(obj) - {"providers", "allowedDomains", "allowedEmails", "require"})
        if unknown:
            raise IdentityConfigError(f"verifyIdentity has fields this engine does not know: {unknown}")
        raw = obj.get("providers") or []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list | tuple) or not 0 < len(raw) <= MAX_PROVIDERS:
            raise IdentityConfigError(f"verifyIdentity.providers lists 1 to {MAX_PROVIDERS} providers")
        require = obj.get("require", False)
        if not isinstance(require, bool):
            raise IdentityConfigError("verifyIdentity.require must be true or false")
        return cls(
            tuple(Provider.from_json(p, api_base=api_base) for p in raw),
            allowed_emails=_allow_list(obj.get("allowedEmails"), "allowedEmails", normalize_email),
            allowed_domains=_allow_list(obj.get("allowedDomains"), "allowedDomains", _domain),
            require=require,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"providers": [p.to_json() for p in self.providers]}
        if self.allowed_emails:
            out["allowedEmails"] = sorted(self.allowed_emails)
        if self.allowed_domains:
            out["allowedDomains"] = sorted(self.allowed_domains)
        if self.require:
            out["require"] = True
        return out

    @property
    def restricted(self) -> bool:
        return bool(self.allowed_emails or self.allowed_domains)

    def allows(self, email: str, hd: object = None) -> bool:
        """Whether a verified ``email`` (with its ``hd`` claim, if any) is let in."""
        if not self.restricted:
            return True
        email = normalize_email(email)
        if email in self.allowed_emails:
            return True
        domain = email.rpartition("@")[2]
        hosted = _domain(hd) if isinstance(hd, str) else None
        return domain in self.allowed_domains or (hosted is not None and hosted in self.allowed_domains)

    def provider_for(self, issuer: object) -> Provider | None:
        for p in self.providers:
            if issuer in p.issuers:
                return p
        return None


def parse_allowed(entries: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Split ``a@x.example, @y.example, z.example`` into (emails, domains)."""
    emails, domains = set(), set()
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if "@" in entry.lstrip("@"):
            emails.add(normalize_email(entry))
        else:
            domains.add(_domain(entry))
    return frozenset(emails), frozenset(domains)


def _allow_list(value: object, what: str, norm: Callable[[str], str]) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple) or len(value) > MAX_ALLOWED:
        raise IdentityConfigError(f"verifyIdentity.{what} is a list of at most {MAX_ALLOWED} texts")
    if not all(isinstance(v, str) and 0 < len(v.strip()) <= MAX_EMAIL_CHARS for v in value):
        raise IdentityConfigError(f"verifyIdentity.{what} holds only short texts")
    return frozenset(norm(v) for v in value)


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified identity: who (``email``), vouched for by whom, for which certificate, until when."""

    email: str
    sub: str
    issuer: str
    provider: ProviderKind
    fp: str
    exp: float


@dataclass(frozen=True, slots=True)
class IdentityRefusal:
    reason: str
    detail: str
    provider: Provider | None = None
    """For ``no-keys`` / ``unknown-kid``: whose key set to (re)fetch before trying again."""


def verify_identity(
    token: object,
    *,
    config: IdentityConfig,
    keys_of: Callable[[Provider], Mapping[str, RsaPublicKey] | None],
    fp: str | None,
    room: str,
    now: float,
    known_fps: Collection[str] = (),
) -> Identity | IdentityRefusal:
    """Check an identity token that arrived on a link whose remote certificate is ``fp`` (see the
    module docstring). ``known_fps``: certificates of the room's other links, to tell a token copied
    from another member (``other-cert``) from one made for another room (``wrong-nonce``)."""
    claims = peek_claims(token)
    provider = config.provider_for(claims.get("iss")) if claims is not None else None
    if claims is not None and provider is None:
        return IdentityRefusal("wrong-issuer", f"issuer {str(claims.get('iss'))[:120]!r} is not trusted here")
    if provider is None:  # not a JWT at all: let the JWT reader say why
        got = verify_rs256(token, {}, issuers=(), audience=None, now=now)
        assert isinstance(got, JwtRefusal)
        return IdentityRefusal(got.reason, got.detail)
    keys = keys_of(provider)
    if keys is None:
        return IdentityRefusal("no-keys", "the issuer's keys are not loaded yet", provider)
    checked = verify_rs256(token, keys, issuers=provider.issuers, audience=provider.audience, now=now)
    if isinstance(checked, JwtRefusal):
        return IdentityRefusal(checked.reason, checked.detail, provider)
    email = checked.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > MAX_EMAIL_CHARS:
        return IdentityRefusal("no-email", "the token names no email address")
    if provider.needs_email_verified and checked.get("email_verified") is not True:
        return IdentityRefusal("email-unverified", "the issuer has not verified this address")
    if not fp:
        return IdentityRefusal("no-fingerprint", "the link's certificate cannot be read")
    nonce = checked.get("nonce")
    if not nonce_binds(nonce, fp, room):
        if any(nonce_binds(nonce, other, room) for other in known_fps if other != fp):
            return IdentityRefusal("other-cert", "the token was made for another member's certificate")
        return IdentityRefusal("wrong-nonce", "the token was made for another certificate or another room")
    if not config.allows(email, checked.get("hd")):
        return IdentityRefusal("not-allowed", "this address is not on the room's list")
    exp = float(checked["exp"])
    return Identity(normalize_email(email), str(checked["sub"]), provider.issuer, provider.kind, fp, exp)


__all__ = [
    "EMAIL_AUDIENCE",
    "GOOGLE_ISSUER",
    "IDENTITY_REFUSALS",
    "Identity",
    "IdentityConfig",
    "IdentityConfigError",
    "IdentityRefusal",
    "Provider",
    "normalize_email",
    "parse_allowed",
    "verify_identity",
]
