"""A real local OpenID Connect issuer for tests (oidc-provider-mock, authlib underneath, in a thread on
loopback) and the browser's part of its authorization code flow, done by hand."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from oidc_provider_mock import User, run_server_in_thread
from oidc_provider_mock import _app as oidc_app

CLIENT = "kibitz-test-app"
REDIRECT = "http://127.0.0.1:9/callback"


def _with_cors(app: Callable[..., Any]) -> Callable[..., Any]:
    """Every answer readable from any origin, as public issuers serve their discovery document and
    key set (a page fetches them itself)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, ("Access-Control-Allow-Origin", "*")], exc_info)

        return app(environ, start)

    return wrapped


_CDN_STYLESHEET = re.compile(rb"<link[^>]*href=\"https?://[^\"]*\"[^>]*>", re.S)


def _offline_pages(app: Callable[..., Any]) -> Callable[..., Any]:
    """The issuer's HTML pages (its sign-in form) without the stylesheet they link from a CDN: a
    browser in these tests may reach nothing beyond this machine."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seen: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.update(status=status, headers=headers, exc_info=exc_info)
            return lambda _data: None

        body = b"".join(app(environ, start))
        headers = list(seen["headers"])
        if any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers):
            body = _CDN_STYLESHEET.sub(b"", body)
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(seen["status"], headers, seen["exc_info"])
        return [body]

    return wrapped


def _accept_public_clients() -> None:
    """Let a client without a secret redeem its code (``token_endpoint_auth_method: none``), as issuers
    configured for single-page apps do (Keycloak, Auth0, Entra): a page has no secret to keep. The
    mock does not check the PKCE verifier the page sends with it; real issuers do."""
    grant = oidc_app.AuthorizationCodeGrant
    if "none" not in grant.TOKEN_ENDPOINT_AUTH_METHODS:
        grant.TOKEN_ENDPOINT_AUTH_METHODS = [*grant.TOKEN_ENDPOINT_AUTH_METHODS, "none"]


@contextlib.contextmanager
def running_issuer(names: Iterable[str], *, cors: bool = False) -> Iterator[str]:
    """The issuer's URL; each name ``n`` is a user ``n-sub`` with a verified ``n@idp.example``."""
    users = [User(sub=f"{n}-sub", claims={"email": f"{n}@idp.example", "email_verified": True})
             for n in names]
    with run_server_in_thread(user_claims=users) as server:
        _accept_public_clients()
        server.app = _offline_pages(server.app)
        if cors:
            server.app = _with_cors(server.app)
        yield f"http://localhost:{server.server_port}"


def sign_in(issuer: str, sub: str, nonce: str) -> str:
    """The browser's part of the code flow, done by hand: authorize (the mock's form), then the
    token endpoint; returns the ID token."""
    host = urllib.parse.urlsplit(issuer)
    query = urllib.parse.urlencode({"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT,
                                    "scope": "openid email", "nonce": nonce, "state": "s1"})
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    conn.request("POST", f"/oauth2/authorize?{query}", body=urllib.parse.urlencode({"sub": sub}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    resp.read()
    location = resp.getheader("Location") or ""
    if resp.status != 302 or "code=" not in location:
        raise RuntimeError(f"the issuer refused the sign-in: {resp.status} {location}")
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                   "client_id": CLIENT, "client_secret": "any"}).encode()
    req = urllib.request.Request(f"{issuer}/oauth2/token", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=10) as answer:
        return str(json.loads(answer.read())["id_token"])
