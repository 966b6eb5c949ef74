"""A real local OpenID Connect issuer for tests (oidc-provider-mock, authlib underneath, in a thread on
loopback) and the browser's part of its authorization code flow, done by hand."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from oidc_provider_mock import User, run_server_in_thread

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


@contextlib.contextmanager
def running_issuer(names: Iterable[str], *, cors: bool = False) -> Iterator[str]:
    """The issuer's URL; each name ``n`` is a user ``n-sub`` with a verified ``n@idp.example``."""
    users = [User(sub=f"{n}-sub", claims={"email": f"{n}@idp.example", "email_verified": True})
             for n in names]
    with run_server_in_thread(user_claims=users) as server:
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
