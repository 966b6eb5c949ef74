"""The page's media, driven from the engine's Worker over the page bridge.

Capture (``getUserMedia``/``getDisplayMedia``), the flowing placeholders sent while a camera or
microphone is off, the ``MediaStream`` objects participants' ``<video>`` elements play and the
audio level meter all live on the page's thread (``widget/page-shim.js``). The engine holds
:class:`~kibitz.backends.page_bridge.PageTrack` handles and decides: which lane sends what, who
is speaking. No ``js`` import here: a fake page drives it in tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kibitz.backends.page_bridge import Bridge, PageCallback, PageRef, PageTrack
from kibitz.session import Source

log = logging.getLogger(__name__)


class BrowserMedia:
    """:class:`~kibitz.backends.page_session.PageMedia` for the page: mic, camera and screen are
    separate captures, so turning one off stops only its device (the camera light goes out)."""

    def __init__(self, bridge: Bridge, on_change: Callable[[], None] | None = None) -> None:
        self._bridge = bridge
        self.tracks: dict[str, Any] = {}
        self.on_change = on_change
        self.on_screen_ended: Callable[[], None] | None = None
        self._ended_off: Callable[[], None] | None = None

    async def acquire(self, source: Source) -> object:
        track = await self._bridge.root.call("captureTrack", source)
        if not isinstance(track, PageTrack):
            raise RuntimeError(f"the page returned no {source} track")
        if source == "screen":
            if self._ended_off is not None:
                self._ended_off()
            self._ended_off = track.on("ended", lambda _v: self._screen_ended())
        old = self.tracks.pop(source, None)
        if old is not None:
            old.stop()
        self.tracks[source] = track
        self._changed()
        return track

    def release(self, source: Source) -> None:
        track = self.tracks.pop(source, None)
        if source == "screen" and self._ended_off is not None:
            self._ended_off()
            self._ended_off = None
        if track is not None:
            track.stop()
            self._changed()

    def _screen_ended(self) -> None:
        """The user stopped sharing from the browser's own bar."""
        if self.on_screen_ended is not None:
            self.on_screen_ended()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


class PageStreams:
    """:class:`~kibitz.backends.page_session.StreamBook`: ``MediaStream`` objects on the page."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def new(self) -> PageRef:
        return self._bridge.new("MediaStream")

    def set_track(self, stream: Any, kind: str, track: Any) -> None:
        self._bridge.root.fire("setStreamTrack", stream, kind, track)


class PageMeter:
    """:class:`~kibitz.backends.page_session.LevelMeter`: the page's analysers, ~10 levels a second
    to ``on_levels`` while at least one track is watched."""

    def __init__(self, bridge: Bridge, on_levels: Callable[[Any], None], interval_ms: int = 100) -> None:
        self._callback: PageCallback | None = bridge.callback(on_levels)
        self._ref = bridge.root.call_ref("levelMeter", self._callback, interval_ms)

    def add(self, key: str, track: Any) -> None:
        self._ref.fire("add", key, track)

    def remove(self, key: str) -> None:
        self._ref.fire("remove", key)

    def stop(self) -> None:
        self._ref.fire("stop")
        if self._callback is not None:
            self._callback.release()
            self._callback = None


def placeholder_tracks(bridge: Bridge) -> dict[str, Any]:
    """Fresh placeholder tracks for one link (silence, 2×2 black at 5 fps): clones of one shared
    source each on the page, so N links cost one canvas and one oscillator. The link stops them."""
    return {
        kind: bridge.root.call_ref("placeholderTrack", kind, desc={"kind": kind, "readyState": "live"},
                                   cls=PageTrack)
        for kind in ("audio", "video")
    }


def stop_placeholder_sources(bridge: Bridge) -> None:
    """Stop the shared placeholder sources (the next link makes new ones): live media keeps a page
    out of the back/forward cache."""
    bridge.root.fire("stopPlaceholders")


__all__ = ["BrowserMedia", "PageMeter", "PageStreams", "placeholder_tracks", "stop_placeholder_sources"]
