"""Writes tests/vectors/galaxy.json: galaxy values (accepted and refused, with the reason) and the
hub's answer to typical offers. Run by hand after a deliberate format change; the checks in
galaxy_check.py then hold the page and CPython to these exact outputs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from kibitz.galaxy import Galaxy, GalaxyError, format_galaxy, hub_answer, parse_galaxy

FP = hashlib.sha256(b"kibitz hub test certificate").digest()
FP64 = base64.urlsafe_b64encode(FP).rstrip(b"=").decode()

CHROME_OFFER = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "a=extmap-allow-mixed", "a=msid-semantic: WMS",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:Wd3Y", "a=ice-pwd:pW2bnF4M9rGqYVxN3kdGkM6o", "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass", "a=mid:0",
    "a=sctp-port:5000", "a=max-message-size:262144",
]) + "\r\n"

AIORTC_OFFER = (
    "v=0\r\no=- 4005295462 4005295462 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\na=ice-ufrag:rwwK\r\n"
    "a=ice-pwd:YyJ22P6WfFie7wl0HjpxsF\r\na=fingerprint:sha-256 " + ":".join(["C5"] * 32) + "\r\n"
    "a=setup:actpass\r\n"
)
LEGACY_OFFER = (
    "v=0\r\nm=application 9 DTLS/SCTP 5000\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=sctpmap:5000 webrtc-datachannel 65535\r\n"
)

WITH_AUDIO = CHROME_OFFER.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1") + "\r\n".join([
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:1", "a=sendrecv",
    "a=rtpmap:111 opus/48000/2",
]) + "\r\n"

GOOD = [
    f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~4711",
    f"g1|abcd|{'x' * 22}|{FP64}|198.18.96.2~4711|198.18.97.9~4711|[::1]~9|fd00::5~4711",
    f"g1|ab+/|{'y+/' * 8}|{FP64}|kibitz-hub.local~4711",
    f" g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~4711|198.18.96.2~4711 ",
]

BAD = [
    ("", "version"),
    ("g2|a|b|c|d~1", "version"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}", "short"),
    (f"g1|hub Ufrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~4711", "bad-credentials"),
    (f"g1|abc|Pa55word0123456789abcdef|{FP64}|198.18.96.2~4711", "bad-credentials"),
    (f"g1|hubUfrag|short|{FP64}|198.18.96.2~4711", "bad-credentials"),
    (f"g1|hub-frag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~4711", "bad-credentials"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64[:-2]}|198.18.96.2~4711", "bad-fingerprint"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64[:-1]}!|198.18.96.2~4711", "bad-fingerprint"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2", "bad-address"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~0", "bad-address"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|198.18.96.2~70000", "bad-address"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|evil.example.com~4711", "bad-address"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|<script>~4711", "bad-address"),
    (f"g1|hubUfrag|Pa55word0123456789abcdef|{FP64}|" + "|".join(f"198.18.96.{i}~1" for i in range(9)),
     "too-many-addresses"),
    ("g1|" + "a" * 700, "too-long"),
]


def _galaxy_json(g: Galaxy) -> dict[str, object]:
    return {"ufrag": g.ufrag, "pwd": g.pwd, "fingerprint": g.fingerprint_sdp,
            "addresses": [[h, p] for h, p in g.addresses], "value": format_galaxy(g)}


def main() -> None:
    vectors: dict[str, object] = {"parsed": [], "refused": [], "answers": [], "bad_offers": []}
    for value in GOOD:
        vectors["parsed"].append({"value": value, "galaxy": _galaxy_json(parse_galaxy(value))})  # type: ignore[attr-defined]
    for value, reason in BAD:
        try:
            parse_galaxy(value)
        except GalaxyError as exc:
            assert exc.reason == reason, (value, exc.reason, reason)
        else:
            raise AssertionError(f"accepted {value!r}")
        vectors["refused"].append({"value": value, "reason": reason})  # type: ignore[attr-defined]
    g = parse_galaxy(GOOD[1])
    for name, offer in (("chrome", CHROME_OFFER), ("aiortc", AIORTC_OFFER), ("with-audio", WITH_AUDIO)):
        vectors["answers"].append({"name": name, "galaxy": GOOD[1], "offer": offer,  # type: ignore[attr-defined]
                                   "answer": hub_answer(offer, g)})
    bad_offers = [
        ("no-data", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"),
        ("no-mid", "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n"),
        ("sctp-port", CHROME_OFFER.replace("a=sctp-port:5000", "a=sctp-port:5001")),
        ("garbage", "m=\r\n"),
        ("legacy-sctpmap", LEGACY_OFFER),
    ]
    for name, offer in bad_offers:
        try:
            hub_answer(offer, g)
        except GalaxyError as exc:
            vectors["bad_offers"].append({"name": name, "offer": offer, "reason": exc.reason})  # type: ignore[attr-defined]
        else:
            raise AssertionError(name)
    out = Path(__file__).with_name("galaxy.json")
    out.write_text(json.dumps(vectors, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
