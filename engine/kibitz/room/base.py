"""What the two role protocols share: the facade they act through, and timers that die with a role.

A role object (:class:`~kibitz.room.coordinator.Coordinator` or
:class:`~kibitz.room.participant.Participant`) lives for one tenure. It acts only through the
:class:`RoomCore` the :class:`~kibitz.room.Room` facade gives it, and owns a :class:`Timers` set that the
facade stops when the tenure ends, so nothing from an old role (a late timer, an event on an old link)
can act in a new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kibitz.clock import Scheduler, TimerHandle
from kibitz.protocol.base import DropCounter
from kibitz.protocol.presence import ClientMessage, CoordinatorMessage
from kibitz.room.model import MemberProfile, RoomEvent, Roster
from kibitz.transport import LinkId, Transport

log = logging.getLogger("kibitz.room")


class RoomCore(Protocol):
    """The facade as a role sees it: identity, the seams, the published roster, and plumbing."""

    room_id: str
    self_id: str
    features: tuple[str, ...]
    drops: DropCounter
    stats: dict[str, int]
    roster: Roster

    @property
    def profile(self) -> MemberProfile: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def scheduler(self) -> Scheduler: ...

    def emit(self, event: RoomEvent) -> None: ...

    def publish(self, roster: Roster) -> None:
        """Make ``roster`` this member's view (emits :class:`RosterChanged` when it differs)."""

    def send(self, link: LinkId, msg: ClientMessage | CoordinatorMessage) -> None: ...

    def send_raw(self, link: LinkId, frame: str) -> None: ...

    def close(self, link: LinkId) -> None:
        """Close ``link`` and remember it as retired, so its late events are ignored."""

    def retire(self, link: LinkId) -> None: ...


class Timers:
    """Named one-shot timers of one role tenure. :meth:`stop` cancels them and disarms late fires."""

    def __init__(self, scheduler: Scheduler, drops: DropCounter, owner: str) -> None:
        self._scheduler = scheduler
        self._drops = drops
        self._owner = owner
        self._handles: dict[str, TimerHandle] = {}
        self._stopped = False

    def set(self, key: str, delay: float, fn: Callable[[], None]) -> None:
        if self._stopped:
            return
        self.cancel(key)

        def fire() -> None:
            if self._stopped:
                return
            self._handles.pop(key, None)
            try:
                fn()
            except Exception:  # a bug must not take the peer down; it is counted and logged
                self._drops.drop("internal-error")
                log.exception("%s: error in timer %s", self._owner, key)

        self._handles[key] = self._scheduler.call_later(delay, fire)

    def cancel(self, key: str) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def __contains__(self, key: str) -> bool:
        return key in self._handles

    def stop(self) -> None:
        self._stopped = True
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()


class RecentSet:
    """A set that keeps only its ``cap`` most recently added keys (memory a long-lived room needs
    for who it has seen, without growing for ever)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._keys: dict[str, None] = {}

    def add(self, key: str) -> None:
        self._keys.pop(key, None)
        self._keys[key] = None
        if len(self._keys) > self.cap:
            del self._keys[next(iter(self._keys))]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
