"""Galaxy links: how a page or an agent finds and trusts a LAN hub (``kibitz hub``) with no server.

A galaxy value is what ``?galaxy=`` carries and what ``kibitz hub`` prints as ``KIBITZ_GALAXY=``::

    g1|<ice-ufrag>|<ice-pwd>|<sha-256 of the hub's DTLS certificate, b64url>|<addr>~<port>|...

It holds everything a peer needs to open a WebRTC connection *to the hub itself* without any
signaling: the hub is an ICE-lite, DTLS-server, SCTP endpoint with a fixed ufrag/password and a
fixed certificate, so the peer makes its offer as usual and builds the hub's answer locally
(:func:`hub_answer`). DTLS then checks the hub's certificate against the pinned fingerprint, so
somebody else on the LAN answering at the hub's address is refused by the browser. Mixed-content
rules do not apply to WebRTC, which is why an ``https`` page can reach a LAN hub this way when it
may not open ``ws://`` to it.

Over that one connection each broker identity the engine claims is one data channel whose label is
the PeerJS query (:func:`hub_channel_label`); the hub answers with the PeerJS broker frames the
engine already speaks (:mod:`kibitz.backends.hub_signaling`).

Pure Python: runs in the page (Pyodide) and in CPython; golden vectors in tests/vectors/galaxy.json.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlencode, urlsplit

GALAXY_VERSION: Final = "g1"
MAX_GALAXY_CHARS: Final = 600
"""A value longer than this is refused before it is split (8 addresses fit with room to spare)."""
MAX_ADDRESSES: Final = 8
HUB_SCTP_PORT: Final = 5000
"""The hub's SCTP port, and the only one it expects from peers (browsers and aiortc use 5000)."""
HUB_MAX_MESSAGE: Final = 262144
"""What the hub's answer advertises as ``a=max-message-size`` (aiortc's SCTP limit)."""
HUB_CONTROL_LABEL: Final = "kbz-hub"
"""Label of the data channel that carries the connection to the hub (no identity on it)."""
CHANNEL_PREFIX: Final = "peerjs?"
"""Every identity channel's label starts with this: ``peerjs?key=..&id=..&token=..``."""
HUB_BROKER_SCHEME: Final = "hub://"
"""``broker_url`` of a transport that reaches its broker through a hub: ``hub://galaxy/``."""

_ICE_CHARS: Final = re.compile(r"^[A-Za-z0-9+/]+$")
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME: Final = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


class GalaxyError(ValueError):
    """A galaxy value that cannot be used; ``reason`` is a short stable code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Galaxy:
    """One hub: ICE credentials, the pinned certificate digest and where it listens."""

    ufrag: str
    pwd: str
    fingerprint: bytes
    """SHA-256 of the hub's DTLS certificate (DER), 32 bytes."""
    addresses: tuple[tuple[str, int], ...]

    @property
    def fingerprint_sdp(self) -> str:
        """The ``a=fingerprint:sha-256`` value: colon-separated upper-case hex."""
        return ":".join(f"{b:02X}" for b in self.fingerprint)

    def value(self) -> str:
        """The link value (what ``?galaxy=`` takes); ``parse_galaxy(g.value()) == g``."""
        return format_galaxy(self)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 literal written as in a URL
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    lowered = host.lower()
    if len(lowered) <= 253 and lowered.endswith(".local") and _HOSTNAME.match(lowered):
        return lowered  # an mDNS name: the browser resolves those itself
    raise GalaxyError("bad-address", f"hub address {host!r} is neither an IP address nor a .local name")


def format_galaxy(g: Galaxy) -> str:
    if not g.addresses:
        raise GalaxyError("no-address", "a galaxy needs at least one hub address")
    parts = [GALAXY_VERSION, g.ufrag, g.pwd, _b64url(g.fingerprint)]
    parts += [f"{host}~{port}" for host, port in g.addresses]
    value = "|".join(parts)
    parse_galaxy(value)  # never hand out a value we would refuse
    return value


def parse_galaxy(value: str) -> Galaxy:
    """Parse a galaxy value (as ``?galaxy=`` carries it, already URL-decoded); raises
    :class:`GalaxyError` with a reason for anything unusable. Never guesses: fails closed."""
    if not isinstance(value, str):
        raise GalaxyError("not-text", "a galaxy value is text")
    value = value.strip()
    if len(value) > MAX_GALAXY_CHARS:
        raise GalaxyError("too-long", f"a galaxy value is at most {MAX_GALAXY_CHARS} characters")
    parts = value.split("|")
    if parts[0] != GALAXY_VERSION:
        raise GalaxyError("version", f"not a {GALAXY_VERSION} galaxy value (starts {parts[0][:8]!r})")
    if len(parts) < 5:
        raise GalaxyError("short", "a galaxy value has ufrag, password, fingerprint and an address")
    ufrag, pwd, fp_text, *addrs = parts[1:]
    if " " in ufrag or " " in pwd:
        raise GalaxyError("bad-credentials", "the link lost a '+' (was it URL-encoded?)")
    if not (4 <= len(ufrag) <= 32 and _ICE_CHARS.match(ufrag)):
        raise GalaxyError("bad-credentials", "ice ufrag must be 4-32 ice-chars")
    if not (22 <= len(pwd) <= 64 and _ICE_CHARS.match(pwd)):
        raise GalaxyError("bad-credentials", "ice password must be 22-64 ice-chars")
    try:
        fingerprint = _unb64url(fp_text)
    except (ValueError, TypeError) as exc:
        raise GalaxyError("bad-fingerprint", "the certificate fingerprint is not base64url") from exc
    if len(fingerprint) != 32:
        raise GalaxyError("bad-fingerprint", "the certificate fingerprint must be a SHA-256 (32 bytes)")
    if len(addrs) > MAX_ADDRESSES:
        raise GalaxyError("too-many-addresses", f"at most {MAX_ADDRESSES} hub addresses")
    addresses: list[tuple[str, int]] = []
    for item in addrs:
        host, sep, port_text = item.rpartition("~")
        if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
            raise GalaxyError("bad-address", f"hub address {item[:60]!r} is not <address>~<port>")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise GalaxyError("bad-address", f"hub port {port} out of range")
        entry = (_check_host(host), port)
        if entry not in addresses:
            addresses.append(entry)
    return Galaxy(ufrag, pwd, fingerprint, tuple(addresses))


def galaxy_from_link(link: str) -> Galaxy | None:
    """The galaxy in a page link's ``?galaxy=`` (``None`` when absent or ``off``)."""
    values = parse_qs(urlsplit(link).query).get("galaxy")
    if not values or values[0] == "off":
        return None
    return parse_galaxy(values[0])


# ------------------------------------------------------------------------------ the hub's answer


def _sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in sdp.replace("\r\n", "\n").split("\n") if ln]
    head: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    return head, sections


def _attr(section: list[str], name: str) -> str | None:
    prefix = f"a={name}:"
    for line in section:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def hub_answer(offer_sdp: str, galaxy: Galaxy) -> str:
    """The SDP answer the hub would give to ``offer_sdp``, built locally from the galaxy.

    The offer must carry one data-channel section (``m=application ... webrtc-datachannel``,
    ``a=sctp-port:5000``); any other section is rejected (port 0), as the hub carries no media.
    The answer is ICE-lite with the hub's credentials and host candidates, DTLS ``setup:passive``
    (the hub is the DTLS server) with the pinned fingerprint. Raises :class:`GalaxyError` for an
    offer the hub could not serve.
    """
    _, sections = _sections(offer_sdp)
    out = [
        "v=0",
        "o=kibitz-hub 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
    ]
    body: list[str] = []
    mids: list[str] = []
    data_seen = False
    for index, section in enumerate(sections):
        fields = section[0][2:].split()
        if len(fields) < 3:
            raise GalaxyError("bad-offer", f"offer m-line {index} is malformed")
        kind, proto, fmt = fields[0], fields[2], fields[3:] or ["0"]
        mid = _attr(section, "mid")
        if mid is None:
            raise GalaxyError("bad-offer", f"offer m-line {index} has no a=mid")
        if kind == "application" and "webrtc-datachannel" in fmt and not data_seen:
            port = _attr(section, "sctp-port")
            if port is not None and port != str(HUB_SCTP_PORT):
                raise GalaxyError("bad-offer", f"the hub's SCTP port is {HUB_SCTP_PORT}, the offer's {port}")
            data_seen = True
            mids.append(mid)
            body += [
                f"m=application 9 {proto} webrtc-datachannel",
                "c=IN IP4 0.0.0.0",
                f"a=mid:{mid}",
                f"a=ice-ufrag:{galaxy.ufrag}",
                f"a=ice-pwd:{galaxy.pwd}",
                f"a=fingerprint:sha-256 {galaxy.fingerprint_sdp}",
                "a=setup:passive",
                f"a=sctp-port:{HUB_SCTP_PORT}",
                f"a=max-message-size:{HUB_MAX_MESSAGE}",
            ]
            for n, (host, port_no) in enumerate(galaxy.addresses):
                priority = 2130706431 - n
                body.append(f"a=candidate:{n + 1} 1 udp {priority} {host} {port_no} typ host")
            body.append("a=end-of-candidates")
        else:
            body += [f"m={kind} 0 {proto} {' '.join(fmt)}", "c=IN IP4 0.0.0.0", f"a=mid:{mid}", "a=inactive"]
    if not data_seen:
        raise GalaxyError("bad-offer", "the offer has no data channel section for the hub")
    out.append(f"a=group:BUNDLE {' '.join(mids)}")
    out.append("a=ice-lite")
    return "\r\n".join(out + body) + "\r\n"


# ------------------------------------------------------------------------ identity channel labels


def hub_channel_label(signaling_url: str) -> str:
    """The data channel label that claims an identity at the hub: the PeerJS query of
    ``signaling_url`` (``hub://galaxy/peerjs?key=..&id=..&token=..`` -> ``peerjs?key=..``)."""
    parts = urlsplit(signaling_url)
    if not parts.path.endswith("/peerjs") and parts.path != "peerjs":
        raise ValueError(f"not a broker signaling URL: {signaling_url!r}")
    query = parse_qs(parts.query)
    fields: dict[str, str] = {k: query[k][0] for k in ("key", "id", "token", "version") if k in query}
    return CHANNEL_PREFIX + urlencode(fields)


def parse_channel_label(label: str) -> dict[str, str] | None:
    """``{"key","id","token"}`` from an identity channel label, or ``None`` if it is not one."""
    if not label.startswith(CHANNEL_PREFIX) or len(label) > 1024:
        return None
    query = parse_qs(label[len(CHANNEL_PREFIX):])
    return {k: v[0] for k, v in query.items() if v}
