"""The HTTP app over loopback: API endpoints, CORS, metrics, and static files from a temp dist/."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import brotli
import pytest
import websockets

from kibitz.server.app import RunningServer, start_server
from kibitz.server.config import ServerConfig, make_config
from kibitz.server.signal import BrokerDirectory, rendezvous
from kibitz.server.static import pick_encoding

JS = b"console.log('kibitz');\n" * 400
WASM = b"\x00asm\x01\x00\x00\x00" + bytes(range(256)) * 200
SNAPSHOT = b"KZS2" + bytes(range(256)) * 300


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    (d / "demo").mkdir(parents=True)
    (d / "demo" / "index.html").write_text("<!doctype html><title>demo</title>")
    (d / "widget.js").write_bytes(JS)
    (d / "pyodide-314.0.7").mkdir()
    (d / "pyodide-314.0.7" / "pyodide.asm.wasm").write_bytes(WASM)
    (d / "pyodide-314.0.7" / "pyodide.mjs").write_bytes(JS)
    (d / "pyodide-314.0.7" / "pyodide-lock.json").write_text('{"packages": {}}' + " " * 2000)
    (d / "assets").mkdir()
    (d / "assets" / "app.3f9k2m.css").write_text("body{color:red}\n" * 200)
    (d / "wheels").mkdir()
    (d / "wheels" / "kibitz-0.1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04" + b"w" * 4000)
    (d / "precomp.js").write_bytes(JS)
    (d / "precomp.js.br").write_bytes(b"PRECOMPRESSED-BR")
    (d / "assets" / "pyodide-snapshot-0123456789abcdef.bin").write_bytes(SNAPSHOT)
    (d / "assets" / "pyodide-snapshot-0123456789abcdef.bin.br").write_bytes(brotli.compress(SNAPSHOT))
    (d / "assets" / "pyodide-snapshot-0123456789abcdef.bin.gz").write_bytes(gzip.compress(SNAPSHOT))
    (tmp_path / "secret.txt").write_text("outside dist")
    return d


@pytest.fixture
async def server(dist: Path) -> AsyncIterator[RunningServer]:
    srv = await start_server(ServerConfig(port=0, broker_port=0, dist_dir=dist), sweep=False)
    yield srv
    await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


async def test_signal_reports_the_local_broker_and_it_works(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.http_url}/api/signal?room=r1") as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        body = await r.json()
    assert body == {
        "host": "127.0.0.1", "port": server.broker_port, "path": "/", "secure": False, "key": "peerjs",
        "url": f"ws://127.0.0.1:{server.broker_port}/",
    }
    async with websockets.connect(f"{body['url']}peerjs?key=peerjs&id=x1&token=t") as ws:
        assert await ws.recv() == '{"type":"OPEN"}'


async def test_turn_is_unconfigured_and_preflight_allows_auth_headers(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.http_url}/api/turn") as r:
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert await r.json() == {"iceServers": None, "configured": False}
    async with http.options(
        f"{server.http_url}/api/turn",
        headers={"Origin": "https://embedder.example", "Access-Control-Request-Headers": "authorization"},
    ) as r:
        assert r.status == 204
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_healthz_and_metrics_count_peers_relays_and_drops(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.broker_url}peerjs?key=peerjs&token=t&id="
    async with websockets.connect(url + "a") as a, websockets.connect(url + "b") as b:
        await a.recv()
        await b.recv()
        await a.send('{"type":"OFFER","dst":"b","payload":1}')
        await b.recv()
        await a.send("garbage")
        await a.recv()
        async with http.get(f"{server.http_url}/healthz") as r:
            assert await r.json() == {"ok": True, "peers": 2}
        async with http.get(f"{server.http_url}/metrics") as r:
            assert r.content_type == "text/plain"
            text = await r.text()
    assert "kibitz_broker_connected_peers 2" in text
    assert "kibitz_broker_messages_relayed_total 1" in text
    assert 'kibitz_broker_drops_total{reason="invalid_json"} 1' in text
    assert "garbage" not in text


@pytest.mark.parametrize(
    ("path", "ctype", "cache"),
    [
        ("/widget.js", "text/javascript", "no-cache"),
        ("/pyodide-314.0.7/pyodide.asm.wasm", "application/wasm", "public, max-age=31536000, immutable"),
        ("/pyodide-314.0.7/pyodide.mjs", "text/javascript", "public, max-age=31536000, immutable"),
        ("/pyodide-314.0.7/pyodide-lock.json", "application/json", "public, max-age=31536000, immutable"),
        ("/assets/app.3f9k2m.css", "text/css", "public, max-age=31536000, immutable"),
        ("/wheels/kibitz-0.1.0-py3-none-any.whl", "application/zip", "public, max-age=31536000, immutable"),
        ("/demo/", "text/html", "no-cache"),
    ],
)
async def test_static_types_and_caching(
    server: RunningServer, http: aiohttp.ClientSession, path: str, ctype: str, cache: str
) -> None:
    async with http.get(server.http_url + path, headers={"Accept-Encoding": "identity"}) as r:
        assert r.status == 200
        assert r.content_type == ctype
        assert r.headers["Cache-Control"] == cache
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Content-Encoding" not in r.headers


@pytest.mark.parametrize(("enc", "decode"), [("br", brotli.decompress), ("gzip", gzip.decompress)])
@pytest.mark.parametrize(("path", "raw"), [("/widget.js", JS), ("/pyodide-314.0.7/pyodide.asm.wasm", WASM)])
async def test_static_compression(
    server: RunningServer, http: aiohttp.ClientSession, enc: str, decode: object, path: str, raw: bytes
) -> None:
    for _ in range(2):  # second request is served from the in-memory cache
        async with http.get(server.http_url + path, headers={"Accept-Encoding": f"{enc}, deflate"}) as r:
            assert r.headers["Content-Encoding"] == enc
            assert r.headers["Vary"] == "Accept-Encoding"
            body = await r.read()
            assert callable(decode) and decode(body) == raw
            assert len(body) < len(raw)
            etag = r.headers["ETag"]
    async with http.get(server.http_url + path, headers={"Accept-Encoding": enc, "If-None-Match": etag}) as r:
        assert r.status == 304


async def test_precompressed_sibling_is_preferred(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/precomp.js", headers={"Accept-Encoding": "br"}) as r:
        assert r.headers["Content-Encoding"] == "br"
        assert await r.read() == b"PRECOMPRESSED-BR"
        assert r.content_type == "text/javascript"


@pytest.mark.parametrize(("accept", "enc"), [("gzip, deflate, br, zstd", "br"), ("gzip, deflate", "gzip"),
                                            ("identity", None)])
async def test_the_snapshot_goes_out_as_the_builds_compressed_copy(
    server: RunningServer, http: aiohttp.ClientSession, accept: str, enc: str | None
) -> None:
    """What Chromium and Firefox send on https and loopback (br), on plain http elsewhere (gzip)."""
    path = "/assets/pyodide-snapshot-0123456789abcdef.bin"
    async with http.get(server.http_url + path, headers={"Accept-Encoding": accept}) as r:
        assert r.status == 200 and r.content_type == "application/octet-stream"
        assert r.headers.get("Content-Encoding") == enc
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        body = await r.read()
    sibling = {"br": ".br", "gzip": ".gz", None: ""}[enc]
    assert body == (server.config.dist_dir / (path.lstrip("/") + sibling)).read_bytes()


async def test_incompressible_wheel_is_sent_as_is(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/index.html", headers={"Accept-Encoding": "br"}) as r:
        assert r.status == 404
    async with http.get(f"{server.http_url}/wheels/kibitz-0.1.0-py3-none-any.whl",
                        headers={"Accept-Encoding": "br"}) as r:
        # 4000 repeated bytes do compress: the point is a correct, decodable answer either way
        body = await r.read()
        if r.headers.get("Content-Encoding") == "br":
            body = brotli.decompress(body)
        assert body.startswith(b"PK\x03\x04")


async def test_root_serves_demo_and_traversal_is_refused(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.http_url}/", headers={"Accept-Encoding": "identity"}) as r:
        assert r.status == 200
        assert "demo" in await r.text()
    for bad in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt", "/nope.js"):
        async with http.get(server.http_url + bad) as r:
            assert r.status == 404, bad
            assert "outside dist" not in await r.text()


async def test_a_directory_without_its_slash_is_redirected(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """/demo → /demo/: an app's relative URLs (./app.mjs, ../widget.js) resolve against the slash."""
    async with http.get(f"{server.http_url}/demo", allow_redirects=False) as r:
        assert r.status == 301
        assert r.headers["Location"] == "/demo/"
    async with http.get(f"{server.http_url}/demo") as r:
        assert r.status == 200 and str(r.url).endswith("/demo/")


async def test_builtin_page_when_dist_is_missing(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    srv = await start_server(ServerConfig(port=0, broker_port=0, dist_dir=tmp_path / "none"), sweep=False)
    try:
        async with http.get(f"{srv.http_url}/") as r:
            assert r.status == 200
            assert "Kibitz server is running" in await r.text()
    finally:
        await srv.close()


async def test_openapi_document_is_served(server: RunningServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{server.http_url}/openapi.json") as r:
        doc = await r.json()
    assert {"/api/signal", "/api/turn", "/healthz", "/metrics"} <= set(doc["paths"])


def test_rendezvous_is_consistent_and_moves_only_lost_rooms() -> None:
    brokers = ["wss://a.example/", "wss://b.example/", "wss://c.example/"]
    rooms = [f"room-{i}" for i in range(300)]
    first = {r: rendezvous(r, brokers) for r in rooms}
    assert first == {r: rendezvous(r, list(reversed(brokers))) for r in rooms}  # order-free
    assert len(set(first.values())) == 3  # spreads rooms
    after = {r: rendezvous(r, brokers[:2]) for r in rooms}
    moved = [r for r in rooms if first[r] != after[r]]
    assert all(first[r] == "wss://c.example/" for r in moved)


def test_directory_uses_only_healthy_brokers() -> None:
    d = BrokerDirectory("peerjs", ("wss://a.example/", "wss://b.example/"), 10, 1)
    assert d.choose("r", None) == {"host": None}
    d.healthy = {"wss://b.example/"}
    got = d.choose("r", None)
    assert got["host"] == "b.example" and got["port"] == 443 and got["secure"] is True


async def test_directory_health_check_against_live_brokers(server: RunningServer) -> None:
    live = server.broker_url
    dead = "ws://127.0.0.1:9/"
    d = BrokerDirectory("peerjs", (live, dead), 10, 1)
    async with aiohttp.ClientSession() as s:
        await d.check_once(s)
    assert d.healthy == {live}


def test_accept_encoding_parsing() -> None:
    assert pick_encoding("gzip, deflate, br") == ["br", "gzip"]
    assert pick_encoding("br;q=0, gzip;q=0.5") == ["gzip"]
    assert pick_encoding("identity") == []
    assert pick_encoding("*") == ["br", "gzip"]


def test_config_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "k.toml"
    f.write_text('[server]\nkey = "sekrit"\nalive_timeout = 30\nbrokers = ["wss://x.example/"]\n')
    cfg = make_config(f, port=9000, key=None)
    assert (cfg.key, cfg.alive_timeout, cfg.port, cfg.resolved_broker_port()) == ("sekrit", 30, 9000, 9001)
    assert cfg.brokers == ("wss://x.example/",)
    with pytest.raises(ValueError, match="unknown config keys"):
        (tmp_path / "bad.json").write_text('{"nope": 1}')
        make_config(tmp_path / "bad.json")
    assert replace(cfg, port=0).resolved_broker_port() == 0


def test_spellings_of_one_room_meet_on_one_broker() -> None:
    from kibitz.server.signal import BrokerDirectory

    remote = tuple(f"wss://b{i}.example/" for i in range(8))
    directory = BrokerDirectory("peerjs", remote, interval=60, timeout=1)
    directory.healthy = set(remote)
    spellings = ["Room 3F9K2MQ7P1", "room-3f9k2mq7p1", "  room__3f9k2mq7p1!", "ROOM.3f9k2mq7p1"]
    picks = {directory.choose(s, None)["url"] for s in spellings}
    assert len(picks) == 1
    others = {directory.choose(f"room-{i:04d}", None)["url"] for i in range(40)}
    assert len(others) > 1  # the choice really depends on the room
