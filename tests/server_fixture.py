"""Start ``kibitz serve`` in a subprocess on 127.0.0.1 (free ports) for tests that need a real server.

Use the ``kibitz_server`` fixture (session-scoped, from tests/conftest.py) or, for a private server
with its own flags, ``with running_kibitz_server("--dist", path) as srv: ...``.
The server prints ``KIBITZ_READY http://127.0.0.1:PORT broker=ws://127.0.0.1:PORT2/`` when ready.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"KIBITZ_READY (http://\S+) broker=(ws://\S+)")


@dataclass(frozen=True)
class KibitzServer:
    """A running server: ``http`` base URL (no trailing slash) and ``broker`` ws URL (trailing '/')."""

    http: str
    broker: str
    key: str
    pid: int

    @property
    def broker_host(self) -> str:
        return urlsplit(self.broker).hostname or "127.0.0.1"

    @property
    def broker_port(self) -> int:
        return int(urlsplit(self.broker).port or 0)

    @property
    def broker_path(self) -> str:
        return urlsplit(self.broker).path or "/"

    def peerjs_options(self) -> dict[str, object]:
        """Options for ``new Peer(id, options)`` in a browser (stock PeerJS 1.5.x)."""
        return {
            "host": self.broker_host,
            "port": self.broker_port,
            "path": self.broker_path,
            "key": self.key,
            "secure": False,
            "config": {"iceServers": []},
        }


@contextlib.contextmanager
def running_kibitz_server(
    *extra_args: str, key: str = "peerjs", timeout: float = 20.0
) -> Iterator[KibitzServer]:
    """Run ``kibitz serve --port 0 --broker-port 0`` plus ``extra_args``; kill its process group after."""
    cmd = [
        str(ROOT / ".venv/bin/kibitz"), "serve", "--host", "127.0.0.1", "--port", "0", "--broker-port", "0",
        "--key", key, *extra_args,
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, text=True
    )
    try:
        assert proc.stdout is not None
        found: list[re.Match[str]] = []
        seen: list[str] = []

        def read_ready() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line)
                m = READY.search(line)
                if m:
                    found.append(m)
                    return

        reader = threading.Thread(target=read_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            raise RuntimeError(f"kibitz serve did not become ready: {''.join(seen)[-2000:]}")
        # keep draining output so the server never blocks on a full pipe
        threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
        yield KibitzServer(found[0].group(1), found[0].group(2), key, proc.pid)
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM ``proc``'s process group (it was started with ``start_new_session=True``), and
    SIGKILL it if it has not exited after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
