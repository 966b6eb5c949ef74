"""A tiny static server for e2e tests: dist/ (or in-memory pages) on 127.0.0.1, port 0.

Serves the MIME types Pyodide needs (.wasm, .mjs, .whl) and ``Access-Control-Allow-Origin: *``
so a page on another port can load widget.js and everything it fetches. Records every request
(path, status) so tests can assert nothing 404ed. Later tests switch to the real server fixture.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"


def ensure_dist() -> Path:
    """Run build/build.py (a no-op when nothing changed) so tests never see a stale bundle."""
    subprocess.run([sys.executable, str(ROOT / "build" / "build.py"), "--quiet"], check=True, cwd=ROOT)
    return DIST


class _Handler(SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".whl": "application/zip",
        ".json": "application/json",
        ".ts": "text/plain",
        ".zip": "application/zip",
    }

    def __init__(self, *args: Any, pages: dict[str, str], log: list[tuple[str, int]], **kwargs: Any) -> None:
        self._pages = pages
        self._log = log
        super().__init__(*args, **kwargs)

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        page = self._pages.get(path)
        if page is None:
            super().do_GET()
            return
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._log.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer:
    """One origin: files under ``root`` plus ``pages`` (path → HTML), on 127.0.0.1:<free port>."""

    def __init__(self, root: Path, pages: dict[str, str] | None = None) -> None:
        self.pages: dict[str, str] = dict(pages or {})
        self.log: list[tuple[str, int]] = []
        handler = partial(_Handler, directory=str(root), pages=self.pages, log=self.log)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> StaticServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def errors(self) -> list[tuple[str, int]]:
        return [(p, c) for p, c in self.log if c >= 400]


@contextmanager
def serve(root: Path, pages: dict[str, str] | None = None) -> Iterator[StaticServer]:
    server = StaticServer(root, pages).start()
    try:
        yield server
    finally:
        server.stop()
