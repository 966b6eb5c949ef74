"""A real coturn on 127.0.0.1 with TURN REST auth (``--use-auth-secret``), for the relay tests.

Shared by the TURN modules: ``with running_coturn(tmp_dir) as (port, secret_file): ...`` (or the
module-scoped ``coturn`` fixture of tests/e2e/conftest.py); the relay listens on a free TCP/UDP port
and relays from a random 40-port range on loopback. ``relay_args`` are the ``kibitz serve`` flags
that hand it out, and ``SELECTED_PAIRS`` reads in a page which candidate types its calls went over.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TURNSERVER = shutil.which("turnserver")

# For each connected peer connection the page recorded in window.__pcs: the type of both ends of
# its selected candidate pair.
SELECTED_PAIRS = """async () => {
  const out = [];
  for (const pc of window.__pcs) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    for (const t of stats.values()) {
      if (t.type !== "transport" || !t.selectedCandidatePairId) continue;
      const pair = stats.get(t.selectedCandidatePairId);
      const type = (id) => stats.get(id).candidateType;
      out.push([type(pair.localCandidateId), type(pair.remoteCandidateId)]);
    }
  }
  return out;
}"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_coturn(where: Path) -> Iterator[tuple[int, Path]]:
    """coturn on 127.0.0.1 with REST-API auth; yields (port, file holding the shared secret)."""
    if TURNSERVER is None:
        pytest.fail("coturn's turnserver is not installed (scripts/setup.sh --tests installs it)")
    secret = secrets.token_hex(24)
    secret_file, log_file = where / "secret", where / "turnserver.log"
    secret_file.write_text(secret)
    port = free_port()
    relay_low = 50_000 + secrets.randbelow(10_000)
    proc = subprocess.Popen(
        [
            TURNSERVER, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            f"--min-port={relay_low}", f"--max-port={relay_low + 40}", "--realm=kibitz.test",
            "--use-auth-secret", f"--static-auth-secret={secret}", "--fingerprint", "--no-cli",
            "--no-tls", "--no-dtls", "--no-multicast-peers", "--allow-loopback-peers",
            "--log-file=stdout", "--simple-log",
        ],
        stdout=(log := log_file.open("w")), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # ready once its TCP listener accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"coturn did not start: {log_file.read_text()[-2000:]}")
                time.sleep(0.05)
        yield port, secret_file
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def relay_args(relay: tuple[int, Path]) -> list[str]:
    """The ``kibitz serve`` flags that hand out this relay (UDP) with its shared secret."""
    port, secret_file = relay
    return ["--turn-url", f"turn:127.0.0.1:{port}?transport=udp", "--turn-secret-file", str(secret_file)]
