"""A counting TCP proxy for HTTP/1.1: what a browser really receives from a server, request by request.

Put it in front of ``kibitz serve`` (``CountingProxy("127.0.0.1", port)``, then load pages from
``proxy.url``): it forwards bytes unchanged both ways and counts every byte the server sends,
whoever asked (the page, its workers, the browser's preloads). It also reads the HTTP framing of
each connection so every response is attributed to its request: path, status, Content-Encoding,
header and body bytes. Resource Timing in the page cannot do this: it sees neither workers' fetches
nor cross-origin sizes.

Used by tests/e2e/test_first_load.py and bench/first_load_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    path: str
    status: int
    encoding: str | None
    header_bytes: int
    body_bytes: int

    @property
    def wire(self) -> int:
        return self.header_bytes + self.body_bytes


class _Stream:
    """Parses one direction of one connection as it flows."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.head: dict[str, Any] | None = None  # the response being read
        self.left = 0  # body bytes still to come (Content-Length)
        self.chunked = False
        self.raw = False  # upgraded (WebSocket): stop parsing


class CountingProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``responses`` lists what came back, in order."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.responses: list[Response] = []
        self.down = 0  # every byte server → browser, framing included
        self.up = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def reset(self) -> None:
        with self._lock:
            self.responses.clear()
            self.down = self.up = 0

    def snapshot(self) -> tuple[int, list[Response]]:
        with self._lock:
            return self.down, list(self.responses)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        paths: list[str] = []
        down = _Stream()
        requests = bytearray()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    with self._lock:
                        if upstream:
                            self.up += len(data)
                            _requests(data, paths, requests)
                        else:
                            self.down += len(data)
                            self._responses(data, down, paths)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pump(reader, up_w, True), pump(up_r, writer, False))

    def _responses(self, data: bytes, s: _Stream, paths: list[str]) -> None:
        if s.raw:
            return
        s.buf += data
        while True:
            if s.head is None:
                end = s.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(s.buf[:end]).decode("latin-1").split("\r\n")
                fields = (line.partition(":") for line in lines[1:])
                headers = {k.strip().lower(): v.strip() for k, _, v in fields}
                status = int(lines[0].split()[1])
                path = paths.pop(0) if paths else "?"
                s.head = {"path": path, "status": status, "encoding": headers.get("content-encoding"),
                          "header": end + 4, "body": 0}
                del s.buf[:end + 4]
                if status == 101:
                    s.raw = True
                    self._finish(s)
                    return
                s.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                no_body = status in (204, 304) or 100 <= status < 200 or path.startswith("HEAD ")
                s.left = 0 if no_body else int(headers.get("content-length", "0") or 0)
                if not s.chunked and s.left == 0:
                    self._finish(s)
                    continue
            if s.chunked:
                if not self._chunked(s):
                    return
                continue
            take = min(s.left, len(s.buf))
            s.head["body"] += take
            s.left -= take
            del s.buf[:take]
            if s.left:
                return
            self._finish(s)

    def _chunked(self, s: _Stream) -> bool:
        """Consume chunks; True when the response is complete."""
        assert s.head is not None
        while True:
            if s.left:
                take = min(s.left, len(s.buf))
                s.head["body"] += take
                s.left -= take
                del s.buf[:take]
                if s.left:
                    return False
            end = s.buf.find(b"\r\n")
            if end < 0:
                return False
            line = bytes(s.buf[:end]).split(b";")[0].strip()
            if line == b"":  # the CRLF after a chunk's data
                s.head["body"] += 2
                del s.buf[:2]
                continue
            size = int(line, 16)
            s.head["body"] += end + 2
            del s.buf[:end + 2]
            if size == 0:
                trailer = s.buf.find(b"\r\n")
                if trailer < 0:
                    return False
                s.head["body"] += trailer + 2
                del s.buf[:trailer + 2]
                self._finish(s)
                return True
            s.left = size

    def _finish(self, s: _Stream) -> None:
        h = s.head
        assert h is not None
        self.responses.append(Response(h["path"], h["status"], h["encoding"], h["header"], h["body"]))
        s.head = None
        s.chunked = False
        s.left = 0


def _requests(data: bytes, paths: list[str], buf: bytearray) -> None:
    """Request lines (GETs: no bodies) in the order they are sent on this connection."""
    buf += data
    while (end := buf.find(b"\r\n\r\n")) >= 0:
        method, target = bytes(buf[:buf.find(b"\r\n")]).decode("latin-1").split()[:2]
        paths.append(target if method == "GET" else f"{method} {target}")
        del buf[:end + 4]
