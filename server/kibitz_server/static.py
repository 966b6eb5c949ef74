"""Static files from dist/: right MIME types, long caching for versioned paths, br/gzip.

Compressed bodies come from a ``.br``/``.gz`` file beside the original when the build made one
(build/build.py makes them, brotli at quality 11, for every big file a boot downloads: the engine
snapshot among them), else they are compressed once (in a worker thread) and kept in memory,
bounded by size. A body that would shrink by less than 5 % (already-deflated wheels) is served as
is. Browsers decode what they accept natively: Chromium and Firefox accept ``br`` on https and on
http://127.0.0.1 or localhost, only ``gzip`` on plain http to any other host.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import posixpath
from collections import OrderedDict
from pathlib import Path

import brotli  # type: ignore[import-untyped,unused-ignore]
from aiohttp import web

MIME = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".py": "text/x-python; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".data": "application/octet-stream",
    ".bin": "application/octet-stream",
}
COMPRESSIBLE = frozenset(
    (".wasm", ".js", ".mjs", ".json", ".map", ".zip", ".whl", ".tar", ".bin", ".html", ".css", ".svg", ".txt",
     ".py")
)
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"

BUILTIN_INDEX = b"""<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Kibitz server</title>
<h1>Kibitz server is running</h1>
<p>No built bundle was found (dist/ is missing), so there is no demo page yet.
Build it, then reload. Endpoints: <a href="/api/signal">/api/signal</a>,
<a href="/api/turn">/api/turn</a>, <a href="/healthz">/healthz</a>, <a href="/metrics">/metrics</a>,
<a href="/openapi.json">/openapi.json</a>.</p>
</html>
"""


def cache_control(rel: str) -> str:
    """Versioned or content-hashed paths never change; everything else must revalidate."""
    top = rel.split("/", 1)[0]
    if top in ("assets", "wheels") or top.startswith("pyodide-"):
        return IMMUTABLE
    return NO_CACHE


def content_type(path: str) -> str:
    return MIME.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")


def pick_encoding(accept: str) -> list[str]:
    """Encodings the client accepts, best first (br before gzip); ``q=0`` excludes one."""
    ok: set[str] = set()
    for part in accept.lower().split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and name in ("br", "gzip", "*"):
            ok.add(name)
    return [e for e in ("br", "gzip") if e in ok or "*" in ok]


class StaticFiles:
    """Serves one directory; safe against traversal, never follows '..'."""

    def __init__(self, root: Path, cache_bytes: int) -> None:
        self.root = root
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str], tuple[int, int, bytes | None]] = OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}

    def resolve(self, rel: str) -> Path | None:
        if "\x00" in rel or "\\" in rel:
            return None
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        path = self.root.joinpath(*parts)
        if path.is_dir():
            path = path / "index.html"
        return path if path.is_file() else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("tail", "")
        if rel == "":
            for cand in ("index.html", "demo/index.html"):
                path = self.resolve(cand)
                if path is not None:
                    return await self._serve(request, path, cand)
            return web.Response(
                body=BUILTIN_INDEX,
                headers={"Content-Type": MIME[".html"], "Cache-Control": NO_CACHE,
                         "Access-Control-Allow-Origin": "*"},
            )
        path = self.resolve(rel)
        if path is None:
            raise web.HTTPNotFound(headers={"Access-Control-Allow-Origin": "*"})
        if not rel.endswith("/") and path.name == "index.html" and not rel.endswith("index.html"):
            # /whist → /whist/: the page's relative URLs (./app.mjs, ../widget.js) need the slash
            raise web.HTTPMovedPermanently(request.path + "/", headers={"Access-Control-Allow-Origin": "*"})
        if rel.endswith("/") or (path.name == "index.html" and not rel.endswith("index.html")):
            rel = rel.rstrip("/") + "/index.html"
        return await self._serve(request, path, rel)

    async def _serve(self, request: web.Request, path: Path, rel: str) -> web.StreamResponse:
        st = path.stat()
        headers = {
            "Content-Type": content_type(rel),
            "Cache-Control": cache_control(rel),
            "Access-Control-Allow-Origin": "*",
            "Vary": "Accept-Encoding",
        }
        ext = path.suffix.lower()
        if ext in COMPRESSIBLE:
            for enc in pick_encoding(request.headers.get("Accept-Encoding", "")):
                body = await self._compressed(path, enc, st)
                if body is None:
                    continue
                etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}-{enc}"'
                headers.update({"Content-Encoding": enc, "ETag": etag})
                if etag in request.headers.get("If-None-Match", ""):
                    return web.Response(status=304, headers=headers)
                return web.Response(body=body, headers=headers)
        return web.FileResponse(path, headers=headers)

    async def _compressed(self, path: Path, enc: str, st: os.stat_result) -> bytes | None:
        key = (str(path), enc)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            self._cache.move_to_end(key)
            return hit[2]
        fut = self._pending.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            body = await asyncio.to_thread(_compress_file, path, enc)
            self._store(key, st, body)
            fut.set_result(body)
            return body
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._pending[key]

    def _store(self, key: tuple[str, str], st: os.stat_result, body: bytes | None) -> None:
        old = self._cache.pop(key, None)
        if old is not None and old[2] is not None:
            self._cached_bytes -= len(old[2])
        size = len(body) if body is not None else 0
        if size > self.cache_bytes:
            return
        while self._cache and self._cached_bytes + size > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            if evicted[2] is not None:
                self._cached_bytes -= len(evicted[2])
        self._cache[key] = (st.st_mtime_ns, st.st_size, body)
        self._cached_bytes += size


def _compress_file(path: Path, enc: str) -> bytes | None:
    """The .br/.gz sibling if present, else a fresh compression; None when not worth it."""
    sibling = path.with_name(path.name + (".br" if enc == "br" else ".gz"))
    if sibling.is_file():
        return sibling.read_bytes()
    data = path.read_bytes()
    if enc == "br":
        body = brotli.compress(data, quality=5 if len(data) > 1 << 20 else 9)
    else:
        body = gzip.compress(data, compresslevel=6, mtime=0)
    return body if len(body) < 0.95 * len(data) else None
