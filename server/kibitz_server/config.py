"""Server settings: defaults, a TOML/JSON config file, then command-line flags (last one wins).

Defaults mirror the reference PeerJS server (``peer@1.0.2`` CLI) where a client could notice the
difference (key, path, expire and alive timeouts, concurrent limit); the extra limits (rate, frame
size, queues) are ours and exist so one bad client cannot hurt the others.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: Where a wheel built by ``build/build.py --wheel`` carries the bundle (a checkout never has it).
PACKAGED_DIST = Path(__file__).resolve().parent / "bundle"


def _default_dist() -> Path:
    """The bundle directory: $KIBITZ_DIST, else the one inside the installed wheel, else the repo's
    dist/ (editable install), else ./dist."""
    env = os.environ.get("KIBITZ_DIST")
    if env:
        return Path(env)
    if (PACKAGED_DIST / "widget.js").is_file():
        return PACKAGED_DIST
    repo_dist = Path(__file__).resolve().parents[2] / "dist"
    if repo_dist.parent.joinpath("pyproject.toml").exists():
        return repo_dist
    return Path.cwd() / "dist"


def default_state_dir() -> Path:
    """Where the server keeps its state (licences, the room-grant key, later identity keys):
    $KIBITZ_STATE_DIR, else $XDG_STATE_HOME/kibitz, else ~/.local/state/kibitz."""
    env = os.environ.get("KIBITZ_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "kibitz"


TURN_GATES = ("open", "licence")


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
    #: Who gets relay credentials: ``open`` (anyone) or ``licence`` (a licence or a room grant;
    #: everyone else gets tier ``free``: the ``stun_urls`` only).
    turn_gate: str = "open"
    #: STUN URLs handed to callers the gate gives no relay (tier free/capped); empty = none.
    stun_urls: tuple[str, ...] = ()
    #: The server's state: the licence store (licences.sqlite3), the room-grant key (grant.key).
    #: Created (mode 0700) only when something needs it.
    state_dir: Path = field(default_factory=default_state_dir)
    #: File holding the key that signs room grants; else $KIBITZ_GRANT_SECRET; else
    #: ``state_dir/grant.key``, made on first use. Servers sharing licences must share it.
    grant_secret_file: Path | None = None
    #: ``redis://HOST:PORT/DB``: run as one node of a service of several (docs/scale.md); None =
    #: a single node with everything in memory.
    redis_url: str | None = None
    #: Prefix of every Redis key and channel (several services may share one Redis).
    redis_prefix: str = "kbz:"
    #: A node that has not refreshed its registry key for this long is dead for the others.
    cluster_node_ttl: float = 3.0
    #: How often a node refreshes its key and reads the live set.
    cluster_heartbeat: float = 0.75
    #: Expiry of a broker id's record in Redis; the holder extends it every third of it.
    cluster_lease: float = 60.0
    #: Email sign-in (``/api/email/*``): the SMTP server that mails the codes, ``HOST:PORT``; unset =
    #: no email sign-in. The only setting it needs; the signing key is made on first start.
    smtp: str | None = None
    #: The From address of the code mails (default ``kibitz@<smtp host's domain>``).
    smtp_from: str | None = None
    #: Upgrade the SMTP connection with STARTTLS (certificate checked) before anything else.
    smtp_starttls: bool = False
    #: SMTP login; its password from ``smtp_password_file`` or $KIBITZ_SMTP_PASSWORD, never a flag.
    smtp_user: str | None = None
    smtp_password_file: Path | None = None
    #: CA bundle for the SMTP server's certificate (default: the system's).
    smtp_cafile: Path | None = None
    #: This server's public URL: the ``iss`` of the email tokens (default: the origin a request came to).
    public_url: str | None = None
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
        for name in ("cluster_node_ttl", "cluster_heartbeat", "cluster_lease"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.cluster_heartbeat * 2 > self.cluster_node_ttl:
            raise ValueError("cluster_node_ttl must be at least twice cluster_heartbeat")
        if self.redis_url is not None:
            if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"redis_url must be redis://HOST:PORT/DB (got {self.redis_url!r})")
            if self.brokers:
                raise ValueError("brokers and redis_url do not mix: with Redis the nodes find each other")
        if self.turn_secret_file is not None and not self.turn_urls:
            raise ValueError("turn_secret_file is set but turn_urls is empty")
        if self.turn_gate not in TURN_GATES:
            raise ValueError(f"turn_gate must be one of {', '.join(TURN_GATES)}, got {self.turn_gate!r}")
        if self.turn_gate == "licence" and not self.turn_urls:
            raise ValueError("turn_gate 'licence' needs a relay to gate: turn_urls is empty")
        email_only = ("smtp_from", "smtp_user", "smtp_password_file", "smtp_cafile")
        if not self.smtp and (self.smtp_starttls or any(getattr(self, n) for n in email_only)):
            raise ValueError("SMTP settings without smtp (HOST:PORT): email sign-in is off")
        if self.smtp:
            host, sep, port = self.smtp.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"smtp must be HOST:PORT, got {self.smtp!r}")
        if self.smtp_from is not None and ("@" not in self.smtp_from or "\n" in self.smtp_from):
            raise ValueError("smtp_from must be an email address")
        if self.public_url is not None and not self.public_url.startswith(("https://", "http://")):
            raise ValueError("public_url must be this server's http(s) URL")
        return self

    @property
    def email_keys_path(self) -> Path:
        return self.state_dir / "email-signing-keys.json"

    @property
    def otp_db(self) -> Path:
        return self.state_dir / "email-otp.sqlite3"

    def smtp_password(self) -> str | None:
        """The SMTP password (file first, then $KIBITZ_SMTP_PASSWORD), or None."""
        if self.smtp_password_file is not None:
            return self.smtp_password_file.read_text(encoding="utf-8").strip()
        return os.environ.get("KIBITZ_SMTP_PASSWORD", "").strip() or None

    @property
    def licence_db(self) -> Path:
        return self.state_dir / "licences.sqlite3"

    def grant_secret(self) -> bytes:
        """The room-grant key: the file, else $KIBITZ_GRANT_SECRET, else ``state_dir/grant.key``
        (32 random bytes as hex, written with mode 0600 the first time)."""
        if self.grant_secret_file is not None:
            return self.grant_secret_file.read_bytes().strip()
        env = os.environ.get("KIBITZ_GRANT_SECRET", "").strip()
        if env:
            return env.encode()
        path = self.state_dir / "grant.key"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.state_dir / f".grant.key.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:  # a hard link appears whole or not at all; if another process won, use theirs
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_bytes().strip()

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
    for name in ("brokers", "turn_urls", "stun_urls"):
        if name in values:
            values[name] = tuple(values[name])
    for name in ("turn_secret_file", "grant_secret_file", "state_dir", "smtp_password_file", "smtp_cafile"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    if "dist_dir" in values:
        values["dist_dir"] = Path(values["dist_dir"])
    return replace(ServerConfig(), **values).validate()
