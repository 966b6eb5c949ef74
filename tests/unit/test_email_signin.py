"""Email sign-in on the real ``kibitz serve``: codes go out over real SMTP (an aiosmtpd sink the test
reads them from), tokens come back RS256 and verify with kibitz.identity against the served JWKS;
the limits (10 minutes, 5 tries, per address+room and per client), key rotation and the stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_fixture import running_redis
from server_fixture import ROOT, KibitzServer, running_kibitz_server
from smtp_sink import Sink, running_smtp_sink

from kibitz.identity import Identity, IdentityConfig, identity_nonce, verify_identity
from kibitz.identity.jwt import parse_jwks
from kibitz.server.email_keys import EmailKeys
from kibitz.server.email_otp import code_hash
from kibitz.server.otp import MemoryOtpStore, OtpRecord, OtpStore, SqliteOtpStore
from kibitz.server.otp_redis import RedisOtpStore

FP = ":".join(f"{i:02x}" for i in range(32))
ROOM = "room-email-3f9k2mq7"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Sink, int]]:
    with running_smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def server(smtp: tuple[Sink, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[KibitzServer]:
    state = tmp_path_factory.mktemp("state")
    with running_kibitz_server("--smtp", f"127.0.0.1:{smtp[1]}", "--smtp-from", "codes@kibitz.example",
                               "--state-dir", str(state)) as srv:
        yield srv


def post(url: str, body: object) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def sign_in(server: KibitzServer, sink: Sink, email: str, room: str = ROOM) -> str:
    status, body, _ = post(f"{server.http}/api/email/start",
                           {"email": email, "room": room, "nonce": identity_nonce(FP, room)})
    assert status == 200 and body["ok"], body
    status, body, _ = post(f"{server.http}/api/email/verify",
                           {"ticket": body["ticket"], "code": sink.code_for(email.lower())})
    assert status == 200 and body["ok"], body
    return str(body["jwt"])


def test_a_code_by_mail_becomes_a_token_bound_to_the_certificate(server: KibitzServer,
                                                                 smtp: tuple[Sink, int]) -> None:
    sink, _ = smtp
    jwt = sign_in(server, sink, "Ann@Allowed.Example")
    mail = sink.messages[-1]
    assert mail["From"] == "codes@kibitz.example" and mail["To"] == "ann@allowed.example"
    keys = parse_jwks(get(f"{server.http}/api/email/jwks"))
    config = IdentityConfig.from_json({"providers": [{"type": "email", "apiBase": server.http}]})
    got = verify_identity(jwt, config=config, keys_of=lambda p: keys, fp=FP, room=ROOM,
                          now=__import__("time").time())
    assert isinstance(got, Identity) and got.email == "ann@allowed.example"
    other_fp = "ff:" + FP[3:]
    refused = verify_identity(jwt, config=config, keys_of=lambda p: keys, fp=other_fp, room=ROOM,
                              now=__import__("time").time())
    assert not isinstance(refused, Identity) and refused.reason == "wrong-nonce"


def test_five_tries_then_locked_and_a_used_ticket_is_gone(server: KibitzServer,
                                                          smtp: tuple[Sink, int]) -> None:
    sink, _ = smtp
    email = "tries@x.example"
    _, started, _ = post(f"{server.http}/api/email/start", {"email": email, "room": ROOM,
                                                              "nonce": identity_nonce(FP, ROOM)})
    code = sink.code_for(email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    answers = [post(f"{server.http}/api/email/verify", {"ticket": started["ticket"], "code": wrong})[1]
               for _ in range(5)]
    assert [a["reason"] for a in answers] == ["mismatch"] * 5
    _, last, _ = post(f"{server.http}/api/email/verify", {"ticket": started["ticket"], "code": code})
    assert last == {"ok": False, "reason": "locked"}
    _, fresh, _ = post(f"{server.http}/api/email/start", {"email": email, "room": ROOM,
                                                            "nonce": identity_nonce(FP, ROOM)})
    _, ok, _ = post(f"{server.http}/api/email/verify",
                    {"ticket": fresh["ticket"], "code": sink.code_for(email)})
    assert ok["ok"]
    _, again, _ = post(f"{server.http}/api/email/verify", {"ticket": fresh["ticket"], "code": "000000"})
    assert again == {"ok": False, "reason": "bad ticket"}


def test_rate_limits_per_address_and_room(server: KibitzServer, smtp: tuple[Sink, int]) -> None:
    body = {"email": "busy@x.example", "room": "room-busy", "nonce": identity_nonce(FP, "room-busy")}
    statuses = [post(f"{server.http}/api/email/start", body)[0] for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    status, answer, headers = post(f"{server.http}/api/email/start", body)
    assert status == 429 and int(headers["Retry-After"]) > 0 and "error" in answer
    assert post(f"{server.http}/api/email/start", {**body, "room": "room-other",
                                                   "nonce": identity_nonce(FP, "room-other")})[0] == 200


@pytest.mark.parametrize("body", [
    {"email": "not-an-address", "room": ROOM, "nonce": identity_nonce(FP, ROOM)},
    {"email": "a@x.example\r\nBcc: b@y.example", "room": ROOM, "nonce": identity_nonce(FP, ROOM)},
    {"email": "a@x.example", "room": ROOM, "nonce": "short"},
    {"email": "a@x.example", "room": "", "nonce": identity_nonce(FP, ROOM)},
    ["a@x.example"],
])
def test_bad_start_bodies_are_refused_with_a_reason(server: KibitzServer, body: object) -> None:
    status, answer, _ = post(f"{server.http}/api/email/start", body)
    assert status == 400 and answer["error"]


def test_a_server_without_smtp_says_so(kibitz_server: KibitzServer) -> None:
    status, answer, _ = post(f"{kibitz_server.http}/api/email/start", {"email": "a@x.example"})
    assert status == 404 and "--smtp" in answer["error"]


def test_mail_that_cannot_be_sent_is_a_502_and_forgotten(tmp_path: Path) -> None:
    with running_kibitz_server("--smtp", "127.0.0.1:9", "--state-dir", str(tmp_path)) as srv:
        status, answer, _ = post(f"{srv.http}/api/email/start", {"email": "a@x.example", "room": ROOM,
                                                                 "nonce": identity_nonce(FP, ROOM)})
    assert status == 502 and "could not be sent" in answer["error"]


def test_rotation_keeps_old_keys_until_their_tokens_expire(tmp_path: Path) -> None:
    keys = EmailKeys(tmp_path / "email-signing-keys.json")
    first = keys.current(now=1000.0)
    assert (tmp_path / "email-signing-keys.json").stat().st_mode & 0o777 == 0o600
    token = keys.mint({"iss": "x", "sub": "a"}, now=1000.0)
    second = keys.rotate(now=1100.0)
    assert keys.current(now=1100.0).kid == second.kid != first.kid
    assert {k["kid"] for k in keys.jwks(now=1100.0)["keys"]} == {first.kid, second.kid}
    assert parse_jwks(keys.jwks(now=1100.0))[first.kid].verify  # the old token still checks out
    assert token.count(".") == 2
    assert {k["kid"] for k in keys.jwks(now=1100.0 + 721)["keys"]} == {second.kid}


def test_rotate_key_command_reaches_a_running_server(tmp_path: Path, smtp: tuple[Sink, int]) -> None:
    with running_kibitz_server("--smtp", f"127.0.0.1:{smtp[1]}", "--state-dir", str(tmp_path)) as srv:
        before = {k["kid"] for k in get(f"{srv.http}/api/email/jwks")["keys"]}
        cmd = [str(ROOT / ".venv/bin/kibitz"), "email", "rotate-key", "--state-dir", str(tmp_path)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        kid = out.stdout.strip().split("=", 1)[1]
        after = {k["kid"] for k in get(f"{srv.http}/api/email/jwks")["keys"]}
        assert after == before | {kid} and kid not in before
        token = sign_in(srv, smtp[0], "rot@x.example")
        assert json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == kid


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_stores_count_tries_and_windows_atomically(kind: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    store: OtpStore
    if kind == "memory":
        store = MemoryOtpStore()
    elif kind == "sqlite":
        store = SqliteOtpStore(tmp_path / "otp.sqlite3")
    else:  # the service's Redis (a real redis-server), a key prefix of this test's own
        store = RedisOtpStore(request.getfixturevalue("redis_session").url, f"otp{secrets.token_hex(4)}:")
    try:
        assert await store.attempt("unknown", 50.0, 5) is None
        await store.put("t1", OtpRecord("h", "s", "a@x", "r", "n", exp=100.0))
        tries = await asyncio.gather(*(store.attempt("t1", 50.0, 5) for _ in range(8)))
        assert sorted(r.attempts for r in tries if r) == [1, 2, 3, 4, 5, 6, 6, 6]
        assert await store.attempt("t1", 100.0, 5) is None  # expired: gone
        assert await store.attempt("t1", 50.0, 5) is None
        hits = [await store.hit("k", 10.0 + i, 600.0, 3) for i in range(4)]
        assert hits[:3] == [None, None, None] and hits[3] == pytest.approx(597.0)
        assert await store.hit("k", 611.0, 600.0, 3) is None  # a new window
    finally:
        await store.close()


def test_two_redis_nodes_share_codes_and_limits(smtp: tuple[Sink, int], tmp_path: Path) -> None:
    """Two ``kibitz serve --redis`` nodes (state directories of their own, one signing key): a code asked for
    on one node is typed in on the other, a used ticket is gone on both, wrong tries and the limit per
    address and room count across the nodes, and Redis holds no code, only its salted hash."""
    import redis

    sink, port = smtp
    with contextlib.ExitStack() as stack:
        rs = stack.enter_context(running_redis())  # a redis-server of its own: the nodes use kbz:
        args = ("--redis", rs.url, "--smtp", f"127.0.0.1:{port}", "--state-dir")
        a = stack.enter_context(running_kibitz_server(*args, str(tmp_path / "a")))
        (tmp_path / "b").mkdir(mode=0o700)  # a state directory of its own, a's signing key copied
        shutil.copy2(tmp_path / "a" / "email-signing-keys.json", tmp_path / "b")
        b = stack.enter_context(running_kibitz_server(*args, str(tmp_path / "b")))
        assert not (tmp_path / "a" / "email-otp.sqlite3").exists()
        email, nonce = "two@nodes.example", identity_nonce(FP, ROOM)
        _, started, _ = post(f"{a.http}/api/email/start", {"email": email, "room": ROOM, "nonce": nonce})
        code = sink.code_for(email)
        r = redis.Redis.from_url(rs.url)
        try:
            keys = r.keys("kbz:otp:*")
            assert len(keys) == 1
            stored = r.hgetall(keys[0])
            assert code.encode() not in b"|".join(v for k, v in stored.items() if k != b"exp")
            assert stored[b"code_hash"].decode() == code_hash(stored[b"salt"].decode(), code)
        finally:
            r.close()
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        assert post(f"{b.http}/api/email/verify", {"ticket": started["ticket"], "code": wrong})[1] == {
            "ok": False, "reason": "mismatch"}
        _, ok, _ = post(f"{b.http}/api/email/verify", {"ticket": started["ticket"], "code": code})
        assert ok["ok"]
        keys = parse_jwks(get(f"{a.http}/api/email/jwks"))  # minted on b, checks with a's keys
        config = IdentityConfig.from_json({"providers": [{"type": "email", "apiBase": b.http}]})
        got = verify_identity(ok["jwt"], config=config, keys_of=lambda p: keys, fp=FP, room=ROOM,
                              now=__import__("time").time())
        assert isinstance(got, Identity) and got.email == email
        assert post(f"{a.http}/api/email/verify", {"ticket": started["ticket"], "code": code})[1] == {
            "ok": False, "reason": "bad ticket"}
        body = {"email": "busy2@nodes.example", "room": ROOM, "nonce": nonce}
        statuses = [post(f"{node.http}/api/email/start", body)[0] for node in (a, b, a, b, a, b)]
        assert statuses == [200] * 5 + [429]
