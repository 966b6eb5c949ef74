"""Sending the sign-in code: plain SMTP (``smtplib``, in a worker thread), STARTTLS and login when
configured. The password comes from a file or the environment, never from a flag (argv is visible
to every user of the machine), and nothing here logs a code or a password.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

TIMEOUT_S = 15.0


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one message or raise (``OSError``/``smtplib.SMTPException``)."""


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    cafile: str | None = None
    """CA bundle to trust for STARTTLS (default: the system's)."""

    @classmethod
    def parse_address(cls, text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--smtp must be HOST:PORT, got {text!r}")
        return host.strip("[]"), int(port)

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        msg.set_content(body)
        return msg

    def _send_now(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_S) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=self.cafile))
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(msg)

    async def send(self, to: str, subject: str, body: str) -> None:
        await asyncio.to_thread(self._send_now, self.message(to, subject, body))


__all__ = ["Mailer", "SmtpMailer"]
