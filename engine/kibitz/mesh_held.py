"""Incoming mesh links from someone our roster does not name yet, held until it does.

A link from someone not (yet) in our roster is held for :data:`HOLD_SECONDS`, since the roster
naming it may still be on its way. At most :data:`MAX_HELD` links are held, each with whether it
opened and its first :data:`MAX_HELD_FRAMES` frames; too many links, too many or too long frames, or
no roster in time close the link (``held-too-many``, ``held-overflow``, ``held-expired``).

Interface, for :class:`~kibitz.mesh.Mesh`: :meth:`HeldLinks.hold` a link, ``link in held``, feed its
events to :meth:`HeldLinks.event`, :meth:`HeldLinks.take` it over once the roster names its member
(the mesh then replays what it held), :meth:`HeldLinks.close` every one. The mesh gives it
``close_link`` (close a link) and ``remember_dead`` (a link that closed: later events on it are stale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kibitz.clock import Scheduler, TimerHandle
from kibitz.mesh_wire import MAX_TEXT_FRAME
from kibitz.protocol.base import DropCounter
from kibitz.transport import LinkClosed, LinkId, LinkMessage, LinkOpened, Payload

HOLD_SECONDS = 5.0
MAX_HELD = 32
MAX_HELD_FRAMES = 16


@dataclass(slots=True)
class Held:
    """An incoming link from someone not in our roster yet."""

    link: LinkId
    timer: TimerHandle
    opened: bool = False
    frames: list[Payload] = field(default_factory=list)


class HeldLinks:
    """The links held for members the roster does not name yet, at most one per remote id."""

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        drops: DropCounter,
        close_link: Callable[[LinkId], None],
        remember_dead: Callable[[LinkId], None],
    ) -> None:
        self._clock = scheduler
        self._drops = drops
        self._close_link = close_link
        self._remember_dead = remember_dead
        self._held: dict[str, Held] = {}
        self._links: dict[LinkId, str] = {}

    def __contains__(self, link: object) -> bool:
        return link in self._links

    def hold(self, remote: str, link: LinkId) -> None:
        """Hold ``link`` from ``remote`` (replacing any link held for it), or close it if full."""
        if remote in self._held:
            self._drop(remote)
        if len(self._held) >= MAX_HELD:
            self._drops.drop("held-too-many")
            self._close_link(link)
            return
        timer = self._clock.call_later(HOLD_SECONDS, lambda: self._expired(remote, link))
        self._held[remote] = Held(link, timer)
        self._links[link] = remote

    def take(self, remote: str) -> Held | None:
        """The link held for ``remote``, no longer held (the caller owns it now), if any."""
        held = self._held.pop(remote, None)
        if held is not None:
            held.timer.cancel()
            del self._links[held.link]
        return held

    def event(self, link: LinkId, event: LinkOpened | LinkMessage | LinkClosed) -> None:
        """An event on a held link (``link in self``)."""
        remote = self._links[link]
        held = self._held[remote]
        if isinstance(event, LinkOpened):
            held.opened = True
        elif isinstance(event, LinkMessage):
            held.opened = True
            if len(held.frames) >= MAX_HELD_FRAMES or len(event.data) > MAX_TEXT_FRAME:
                self._drops.drop("held-overflow")
                self._drop(remote)
                return
            held.frames.append(event.data)
        else:
            held.timer.cancel()
            del self._held[remote]
            del self._links[held.link]
            self._remember_dead(held.link)

    def close(self) -> None:
        """Close every held link."""
        for remote in list(self._held):
            self._drop(remote)

    def _expired(self, remote: str, link: LinkId) -> None:
        held = self._held.get(remote)
        if held is not None and held.link == link:
            self._drops.drop("held-expired")
            self._drop(remote)

    def _drop(self, remote: str) -> None:
        held = self._held.pop(remote)
        held.timer.cancel()
        del self._links[held.link]
        self._close_link(held.link)
