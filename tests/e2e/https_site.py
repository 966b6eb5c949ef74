"""An embedding site over https, for the offline-LAN tests: run as a script inside a namespace.

    python https_site.py --cert C --key K --port 443 --pages DIR --bundle DIST

serves ``DIR`` at ``/`` (the site's own pages and its copy of ``kibitz-sw.js``) and the Kibitz
bundle at ``/kibitz/``, with the MIME types Pyodide needs. Every request line goes to stdout as
``REQ <path>`` so a test can tell what the pages asked for. ``/api/*`` answers 404 (this site has no
Kibitz server: a page that still asks it for signaling is noticed).
"""

from __future__ import annotations

import argparse
import contextlib
import posixpath
import ssl
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit


class Handler(SimpleHTTPRequestHandler):
    pages: ClassVar[Path]
    bundle: ClassVar[Path]
    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".whl": "application/zip",
        ".json": "application/json",
        ".tar": "application/x-tar",
        ".zip": "application/zip",
        ".bin": "application/octet-stream",
    }

    def translate_path(self, path: str) -> str:
        rel = posixpath.normpath(unquote(urlsplit(path).path)).lstrip("/")
        if rel.startswith("kibitz/") or rel == "kibitz":
            return str(self.bundle / rel[len("kibitz/"):])
        return str(self.pages / rel)

    def do_GET(self) -> None:
        print(f"REQ {self.path}", flush=True)
        if urlsplit(self.path).path.startswith("/api/"):
            self.send_error(404, "no Kibitz server on this site")
            return
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    """TLS handshakes in each request's thread (not in the accept loop, where one slow handshake
    would hold up every other connection)."""

    daemon_threads = True
    ctx: ssl.SSLContext

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--pages", required=True)
    p.add_argument("--bundle", required=True)
    args = p.parse_args()
    Handler.pages = Path(args.pages)
    Handler.bundle = Path(args.bundle)
    server = TlsServer((args.host, args.port), Handler)
    server.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.ctx.load_cert_chain(args.cert, args.key)
    print(f"SITE_READY {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
