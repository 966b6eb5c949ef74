"""A real SMTP server for tests (aiosmtpd on a free loopback port) that keeps every message, so a
test can read the sign-in code ``kibitz serve --smtp`` mailed."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def code_for(self, to: str, after: int = 0, timeout: float = 0.0) -> str:
        """The 6-digit code in the newest mail to ``to`` (among messages from index ``after`` on),
        waiting up to ``timeout`` seconds for one to come."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.messages[after:] if m["To"] == to]
            if found:
                code = re.search(r"\b(\d{6})\b", found[-1].get_payload())
                assert code, found[-1].get_payload()
                return code.group(1)
            if time.monotonic() >= deadline:
                raise AssertionError(f"no mail to {to}")
            time.sleep(0.05)


@contextlib.contextmanager
def running_smtp_sink() -> Iterator[tuple[Sink, int]]:
    """``(sink, port)``: an SMTP server on 127.0.0.1:port keeping what it receives."""
    sink = Sink()
    with socket.socket() as probe:  # aiosmtpd's start() dials its own port, so it cannot take 0
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
