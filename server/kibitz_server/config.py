"""Server settings: defaults, a TOML/JSON config file, then command-line flags (last one wins).

Defaults mirror the reference PeerJS server (``peer@1.0.2`` CLI) where a client could notice the
difference (key, path, expire and alive timeouts, concurrent limit); the extra limits (rate, frame
size, queues) are ours and exist so one bad client cannot hurt the others.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _default_dist() -> Path:
    """The bundle directory: $KIBITZ_DIST, else the repo's dist/ (editable install), else ./dist."""
    env = os.environ.get("KIBITZ_DIST")
    if env:
        return Path(env)
    repo_dist = Path(__file__).resolve().parents[2] / "dist"
    if repo_dist.parent.joinpath("pyproject.toml").exists():
        return repo_dist
    return Path.cwd() / "dist"


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``kibitz serve`` can be told. Times are seconds, sizes bytes."""

    host: str = "127.0.0.1"
    port: int = 8787
    #: The broker's own port; ``None`` means ``port + 1`` (or 0 when ``port`` is 0).
    broker_port: int | None = None
    key: str = "peerjs"
    path: str = "/"
    expire_timeout: float = 5.0
    alive_timeout: float = 60.0
    sweep_interval: float = 0.3
    #: After the broker sends CLOSE it waits this long for the peer's CLOSE before dropping TCP.
    close_grace: float = 2.0
    concurrent_limit: int = 5000
    allow_discovery: bool = False
    #: Largest text frame relayed; bigger ones get ERROR and are dropped (connection stays).
    max_message_bytes: int = 64 * 1024
    #: Frames above this are a protocol violation: the socket is closed with 1009.
    hard_frame_bytes: int = 1024 * 1024
    #: Frames one connection may send per second before its excess is dropped.
    rate_limit_per_sec: int = 1000
    #: Messages held for one offline id, and for all offline ids together.
    queue_per_id: int = 128
    queue_total: int = 20000
    #: A destination whose socket has this much unsent data gets no more until it drains.
    max_write_buffer: int = 4 * 1024 * 1024
    #: Extra broker URLs (ws:// or wss://) that /api/signal may hand out, health-checked.
    brokers: tuple[str, ...] = ()
    #: Advertise the local broker under this URL (e.g. behind a TLS proxy) instead of host:port.
    public_broker_url: str | None = None
    #: Do not offer the in-process broker through /api/signal (only the configured ``brokers``).
    local_broker_in_signal: bool = True
    health_interval: float = 10.0
    health_timeout: float = 2.5
    #: TURN relay URLs (``turn:host:port?transport=udp`` …) that /api/turn hands out with fresh
    #: credentials; empty = no relay (/api/turn says ``configured: false``).
    turn_urls: tuple[str, ...] = ()
    #: File holding the relay's shared secret (coturn ``--static-auth-secret``); else the
    #: ``KIBITZ_TURN_SECRET`` environment variable. Never a flag: argv is visible to every user.
    turn_secret_file: Path | None = None
    #: Lifetime of the TURN credentials /api/turn mints, seconds.
    turn_ttl: float = 3600.0
    dist_dir: Path = field(default_factory=_default_dist)
    #: In-memory cache for compressed static files.
    compress_cache_bytes: int = 256 * 1024 * 1024

    def resolved_broker_port(self) -> int:
        if self.broker_port is not None:
            return self.broker_port
        return 0 if self.port == 0 else self.port + 1

    def validate(self) -> ServerConfig:
        if not self.path.startswith("/") or not self.path.endswith("/"):
            raise ValueError(f"path must start and end with '/': {self.path!r}")
        for name in ("expire_timeout", "alive_timeout", "sweep_interval", "close_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_message_bytes > self.hard_frame_bytes:
            raise ValueError("max_message_bytes must be <= hard_frame_bytes")
        if self.turn_secret_file is not None and not self.turn_urls:
            raise ValueError("turn_secret_file is set but turn_urls is empty")
        return self

    def turn_secret(self) -> bytes | None:
        """The TURN shared secret (file first, then $KIBITZ_TURN_SECRET), or None."""
        if self.turn_secret_file is not None:
            return self.turn_secret_file.read_bytes().strip()
        env = os.environ.get("KIBITZ_TURN_SECRET", "").strip()
        return env.encode() if env else None


_FIELD_NAMES = {f.name for f in fields(ServerConfig)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON file; keys are ServerConfig field names (a ``[server]`` table is fine)."""
    p = Path(path)
    text = p.read_text()
    raw: dict[str, Any] = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    if "server" in raw and isinstance(raw["server"], dict):
        raw = raw["server"]
    unknown = set(raw) - _FIELD_NAMES
    if unknown:
        raise ValueError(f"unknown config keys in {p}: {sorted(unknown)}")
    return raw


def make_config(file: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Defaults, then ``file``, then the non-None ``overrides`` (command-line flags)."""
    values: dict[str, Any] = {}
    if file:
        values.update(load_config_file(file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("brokers", "turn_urls"):
        if name in values:
            values[name] = tuple(values[name])
    if values.get("turn_secret_file") is not None:
        values["turn_secret_file"] = Path(values["turn_secret_file"])
    if "dist_dir" in values:
        values["dist_dir"] = Path(values["dist_dir"])
    return replace(ServerConfig(), **values).validate()
