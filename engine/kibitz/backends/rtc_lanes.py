"""The media lanes of one link of :class:`~kibitz.backends.rtc.RtcTransport`.

A link whose label is in ``media_labels`` (when the factory ``supports_media``) carries one
sendrecv audio and one sendrecv video transceiver, offered by the dialer up-front, so either side
can send either kind from the start. ``set_lane`` swaps sender tracks on the live connection and
never renegotiates (there is exactly one OFFER and one ANSWER per link). :class:`LaneSet` keeps
what each lane should send and brings the senders in line; the link half
(:mod:`kibitz.backends.rtc_links`) owns the connection and runs it.

This module must stay importable under Pyodide: asyncio only, no aiortc or ``js``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from kibitz.backends.rtc_api import MediaPeerConnection, RtpSender
from kibitz.protocol.base import DropCounter
from kibitz.transport import LANES, PLACEHOLDER, Lane, LaneDefault, LinkId

log = logging.getLogger("kibitz.backends.rtc")  # one logger for the whole transport

PlaceholderTracks = Callable[[], Mapping[Lane, object]]
"""Makes a fresh set of flowing placeholder tracks (one per lane) for one link; the link owns and
stops them when it closes."""

LaneWant = object | LaneDefault | None
_UNSET: Any = object()


class LaneSet:
    """The audio and video lanes of one media link: what each should send (``wants``: the last
    ``set_lane`` wins; missing = :data:`PLACEHOLDER`), the sender that carries it, and the flowing
    placeholders it sends until told otherwise (made on first use, stopped by :meth:`close`)."""

    def __init__(
        self, link_id: LinkId, placeholder_tracks: PlaceholderTracks | None, drops: DropCounter
    ) -> None:
        self.link_id = link_id
        self._placeholder_tracks = placeholder_tracks
        self._drops = drops
        self.wants: dict[Lane, LaneWant] = {}
        self.applied: dict[Lane, object | None] = {}
        self.senders: dict[Lane, RtpSender] = {}
        self.placeholders: dict[Lane, object] | None = None
        self.applying = False
        self.arrived: set[Lane] = set()
        """Lanes whose remote track arrived (the first m-section of a kind is its lane)."""
        self.closed = False

    def needs_apply(self) -> bool:
        """Senders exist, nothing is applying them and the link is not closed: a change to
        ``wants`` needs an :meth:`apply` run."""
        return bool(self.senders) and not self.applying and not self.closed

    def _resolve(self, lane: Lane) -> object | None:
        want = self.wants.get(lane, PLACEHOLDER)
        if want is not PLACEHOLDER:
            return want
        if self.placeholders is None:
            made = self._placeholder_tracks() if self._placeholder_tracks is not None else {}
            self.placeholders = dict(made)
        return self.placeholders.get(lane)

    async def apply(self) -> None:
        """Bring every sender in line with ``wants``; loops until nothing changed meanwhile,
        so the last ``set_lane`` wins whatever the interleaving. One runner per link at a time."""
        if self.applying:
            return
        self.applying = True
        try:
            changed = True
            while changed and not self.closed:
                changed = False
                for lane, sender in list(self.senders.items()):
                    if self.closed:
                        return
                    target = self._resolve(lane)
                    if self.applied.get(lane, _UNSET) is target:
                        continue
                    self.applied[lane] = target  # even if it fails: no retry loop on a bad track
                    changed = True
                    try:
                        await sender.replace_track(target)
                    except Exception as exc:  # a bad track must not take the link down
                        self._drops.drop("media:replace-track-failed")
                        log.warning("set_lane(%s, %s) failed: %r", self.link_id, lane, exc)
        finally:
            self.applying = False

    def add_transceivers(self, pc: MediaPeerConnection) -> None:
        """Dialer: always both m-sections (an answer can never add one later)."""
        for lane in LANES:
            self.senders[lane] = pc.add_transceiver(lane, direction="sendrecv").sender

    def close(self) -> None:
        """The link closed: forget the senders and stop the placeholders it made."""
        self.closed = True
        self.senders.clear()
        if self.placeholders:
            for track in self.placeholders.values():
                try:
                    cast(Any, track).stop()
                except Exception:
                    log.debug("placeholder stop failed on %s", self.link_id, exc_info=True)
            self.placeholders = None


def adopt_transceivers(pc: MediaPeerConnection, lanes: LaneSet | None) -> None:
    """Answerer: the offer created the transceivers; use the first of each kind as its lane.

    On a link that carries no media (``lanes`` None), or for extra m-sections, they are made
    inactive, so nothing flows either way.
    """
    senders = lanes.senders if lanes is not None else {}
    for tr in pc.get_transceivers():
        kind = tr.kind
        if lanes is not None and kind in LANES and kind not in senders:
            tr.direction = "sendrecv"
            senders[kind] = tr.sender
        elif tr.sender not in senders.values():
            tr.direction = "inactive"
