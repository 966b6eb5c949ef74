"""One ``Kibitz.mount()`` as the engine sees it: :class:`PageSession` over :class:`~kibitz.session.Session`.

Runs in the engine's Worker (or wherever the engine host runs); what it needs of the page (local
media, ``MediaStream`` objects for the participants, the audio level meter) comes in through the
small protocols below, so CPython tests drive it with fakes (``tests/unit/test_browser_backend.py``)
and :mod:`kibitz.backends.page_media` supplies the real ones over the page bridge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kibitz.backends.page_identity import sign_in_plan
from kibitz.backends.page_relay import PageRelay
from kibitz.backends.page_rooms import MountRoom, host_key_of, mount_room, prepared_credential
from kibitz.backends.rtc import RtcTransport
from kibitz.clock import Scheduler
from kibitz.controller import ENGINE_MEMBERS
from kibitz.identity.keys import Fetch
from kibitz.ids import room_peer_id
from kibitz.relay import invite_link, strip_grant
from kibitz.session import LocalMedia, Session, Source
from kibitz.transport import Transport

log = logging.getLogger(__name__)


class PageMedia(LocalMedia, Protocol):
    """:class:`~kibitz.session.LocalMedia` plus what the page session needs to hear of it."""

    tracks: dict[str, Any]
    on_change: Callable[[], None] | None
    on_screen_ended: Callable[[], None] | None


def text_from_page(value: Any) -> str:
    """Text the page handed over: a ``str``, or a long one's UTF-8 bytes (``shim.pyText``).

    Pyodide copies a JS string into Python one character at a time; bytes cross in one copy, and
    decoding them here is C speed (16 kB: ~25 µs in all instead of ~90 µs).
    """
    if type(value) is str:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    if hasattr(value, "to_bytes"):
        return bytes(value.to_bytes()).decode()
    raise TypeError(f"expected text from the page, got {type(value).__name__}")



class StreamBook(Protocol):
    """Builds the page's ``MediaStream`` objects (participants' ``stream``); JS in the page."""

    def new(self) -> Any: ...

    def set_track(self, stream: Any, kind: str, track: Any) -> None:
        """Make ``track`` the stream's only track of ``kind`` (``None``: none of that kind)."""


class LevelMeter(Protocol):
    """Audio levels of tracks, reported to the callback given at creation (the page's analysers)."""

    def add(self, key: str, track: Any) -> None: ...

    def remove(self, key: str) -> None: ...

    def stop(self) -> None: ...


class SpeakingDetector:
    """Who is speaking, from audio levels: on at ``threshold``, off after ``hold_s`` below it.

    The hold keeps a tile from flickering between words; the levels come in ~10 times a second
    from the page's analysers (RMS of a 512-sample window, 0..1).
    """

    def __init__(self, threshold: float = 0.02, hold_s: float = 0.6) -> None:
        self.threshold = threshold
        self.hold_s = hold_s
        self._last_loud: dict[str, float] = {}
        self.speaking: set[str] = set()

    def feed(self, levels: Mapping[str, float], now: float) -> list[tuple[str, bool]]:
        """Return the ``(id, speaking)`` changes caused by one round of levels."""
        changes: list[tuple[str, bool]] = []
        for key, level in levels.items():
            if level >= self.threshold:
                self._last_loud[key] = now
                if key not in self.speaking:
                    self.speaking.add(key)
                    changes.append((key, True))
        for key in sorted(self.speaking):
            quiet_since = self._last_loud.get(key, now)
            if key not in levels or now - quiet_since >= self.hold_s:
                self.speaking.discard(key)
                self._last_loud.pop(key, None)
                changes.append((key, False))
        return changes

    def forget(self, key: str) -> bool:
        self._last_loud.pop(key, None)
        if key in self.speaking:
            self.speaking.discard(key)
            return True
        return False


class NoMedia:
    """Local media for a session that has none (tests, and a host without capture)."""

    def __init__(self) -> None:
        self.tracks: dict[str, Any] = {}
        self.on_change: Callable[[], None] | None = None
        self.on_screen_ended: Callable[[], None] | None = None

    async def acquire(self, source: Source) -> object:
        raise RuntimeError(f"no local media here: cannot turn on {source}")

    def release(self, source: Source) -> None:
        self.tracks.pop(source, None)


STATE_DEFAULTS: dict[str, Any] = {
    "inCall": False, "micOn": False, "camOn": False, "sharing": False, "self": None,
    "isHost": False, "lobbyOn": False, "locked": False, "lobbyStatus": "none",
}

SESSIONS: list[PageSession] = []
"""Live page sessions (diagnostics and the e2e tests' hooks reach them through here)."""


class PageSession:
    """One ``Kibitz.mount()`` as Python sees it: a :class:`~kibitz.session.Session` and the way back.

    widget.js only marshals: controller methods arrive through :meth:`call` (or the synchronous
    :meth:`broadcast_json` / :meth:`send_json` for app data, which must be cheap), and everything
    the session reports goes to the page through ``emit(event, *args)``: ``state``,
    ``participants``, ``join``, ``leave``, ``speaking``, ``chat``, ``knocks``, ``lobby``, ``caps``
    and ``message`` (JSON text + sender id, so a large payload crosses the FFI as one string).

    This class adds only what is the page's: a ``MediaStream`` per participant built from the
    remote tracks the session reports (mutated in place when a link is re-dialled, so a <video>
    bound to it keeps playing), the self-view stream, speaking detection from audio levels, and
    the pagehide goodbye. ``preview`` mounts show a local self-view and never touch the network.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        emit: Callable[..., Any],
        *,
        transport: Transport | None = None,
        scheduler: Scheduler | None = None,
        media: PageMedia | None = None,
        streams: StreamBook | None = None,
        meter: Callable[[Callable[[Any], None]], LevelMeter] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        convert: Callable[[Any], Any] | None = None,
        fetch: Fetch | None = None,
    ) -> None:
        """``fetch``: how issuers' keys are loaded (:mod:`.page_identity`); none, no keys."""
        self.config = dict(config)
        self.room_id = room_peer_id(str(config.get("room", "")))
        self.preview = bool(config.get("preview"))
        self._emit_raw = emit
        self._convert = convert or (lambda v: v)
        self._streams = streams
        self._media: PageMedia = media or NoMedia()
        self._media.on_change = self._local_media_changed
        self._media.on_screen_ended = self._screen_ended
        self._scheduler = scheduler
        self._transport = transport
        self._wall = wall_clock
        self.closed = False
        self.dropped = 0
        self.errors = 0
        self.state: dict[str, Any] = dict(STATE_DEFAULTS)
        self.speaking = SpeakingDetector()
        self._stream_of: dict[str, Any] = {}
        self._self_stream: Any = None
        self._shared: Any = None
        self._metered: dict[str, Any] = {}
        self._meter: LevelMeter | None = meter(self._on_levels) if meter is not None else None
        self._close_hooks: list[Callable[[], None]] = []
        self._preview_on = False
        self._policy: dict[str, Any] | None = None
        self.session: Session | None = None
        self.room_settings: MountRoom | None = None
        if not self.preview:
            if transport is None or scheduler is None:
                raise ValueError("a page session needs a transport and a scheduler (preview does not)")
            identity = config.get("identity") or config.get("tabToken")
            # The room's gate (joinGate, or the page link's): a GateError here rejects the mount's
            # `ready` with its reason; a gated room never falls back to open.
            self.room_settings = rooms = mount_room(config)
            self.session = Session(
                str(config["room"]),
                transport=transport,
                scheduler=scheduler,
                rng=rng,
                name=str(config.get("name") or ""),
                meta=dict(config.get("meta") or {}),
                identity=str(identity) if identity else None,
                media=self._media,
                wall_clock=wall_clock,
                gate=rooms.gate,
                host_key=rooms.host_key,
                verify_identity=config.get("verifyIdentity") or None,
                api_base=str(config["apiBase"]).rstrip("/") if config.get("apiBase") else None,
                fetch=fetch,
            )
            for event in ("participants", "join", "leave", "state", "chat", "knocks", "lobby", "caps",
                          "message", "tracks"):
                self.session.on(event, getattr(self, f"_on_{event}"))
        self.handlers: dict[str, Callable[..., Any]] = {
            m.name: self._handler(m.name, m.py) for m in ENGINE_MEMBERS
        }
        """Every engine method of the controller (:data:`kibitz.controller.ENGINE_MEMBERS`), by name,
        and the engine's side of the page-local getters (the page answers those from its mirror)."""
        self.handlers.update(getState=self.get_state, getParticipants=self.get_participants,
                             getChat=self._handler("getChat", "session.get_chat"),
                             getKnocks=self._handler("getKnocks", "session.get_knocks"))
        self.relay: PageRelay | None = None
        """The relay this mount asks for (None for a preview): see :mod:`.page_relay`."""
        self.signaling = "broker"
        """``"hub"`` when this page signals through a LAN hub (``?galaxy=``), else ``"broker"``."""
        SESSIONS.append(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Join the room's presence now (the launcher shows who is there); enter the call if
        ``startOpen``. Preview mounts only report their (local) state."""
        if self.session is not None:
            self.session.start()
            if self.config.get("startOpen"):
                self.session.join()
        self._emit_state()

    def on_close(self, hook: Callable[[], None]) -> None:
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Unmount / pagehide: a clean goodbye (peers drop us at once), then free what we hold."""
        if self.closed:
            return
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                log.exception("session close failed")
        self.closed = True
        for source in list(self._media.tracks):
            self._media.release(source)  # type: ignore[arg-type]
        if self._meter is not None:
            self._meter.stop()
        hooks, self._close_hooks = self._close_hooks, []
        for hook in reversed(hooks):
            try:
                hook()
            except Exception:
                log.exception("close hook raised")
        if self in SESSIONS:
            SESSIONS.remove(self)

    # ------------------------------------------------------------------ page → engine

    async def call(self, method: str, args: Any) -> Any:
        """One controller method from widget.js; the result settles the page's promise."""
        if self.closed:
            raise RuntimeError(f"{method}() after unmount")
        handler = self.handlers.get(str(method))
        if handler is None:
            raise NotImplementedError(f"Kibitz: {method}() is not available in this build")
        if args is None:
            args = []
        if not isinstance(args, list | tuple):
            raise TypeError(f"{method}(): arguments must be a list")
        if self.relay is not None and not self.relay.settled.is_set():
            await self.relay.settled.wait()  # the session starts once /api/turn has answered
        result = handler(*args)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return self._convert(result)

    def broadcast_json(self, text: Any) -> int:
        """``broadcast(data)``: JSON text from the page (long text as UTF-8 bytes, see
        :func:`text_from_page`); a no-op (0) until we are in the call."""
        if self.session is None or self.closed or not self.session.in_call:
            self.dropped += 1
            return 0
        if type(text) is not str:
            text = text_from_page(text)
        # The text is parsed once for the checks and carried as is, never re-encoded.
        return len(self.session.broadcast_json(text))

    def send_json(self, peer: str, text: Any) -> str | None:
        """``sendTo(id, data)``: directly over our own link to ``peer``.

        Returns ``None`` when sent (or dropped before we are in the call, like ``broadcast``) and
        the refusal's reason otherwise, which the page throws as its own Error: the reason crosses
        the FFI as data, not as a Python traceback to pick apart.
        """
        if self.session is None or self.closed or not self.session.in_call:
            self.dropped += 1
            return None
        try:
            if type(text) is not str:
                text = text_from_page(text)
            # Session.send_json minus its in_call check, made just above (one frame less per send).
            self.session.content.send_json(str(peer), text)
        except (KeyError, ValueError, PermissionError, RuntimeError) as exc:
            return str(exc.args[0]) if exc.args else type(exc).__name__
        return None

    def send_policy(self) -> dict[str, Any]:
        """What the page needs to refuse a ``broadcast``/``sendTo`` synchronously, as the engine would:
        whether our own grant lets us send app data (``send``) and agent actions (``act``), and for
        each member we keep a link to (parked ones included: their streams are kept through a
        presence blip), ``None`` or why a directed message to it is refused. The page throws those
        at once; the engine still checks every message it is handed."""
        session = self.session
        if session is None or self.closed:
            return {"send": True, "act": True, "peers": {}}
        book, mesh, content = session.book, session.mesh, session.content
        peers: dict[str, str | None] = {}
        for peer in dict.fromkeys([*mesh.members, *mesh.parked]):
            try:
                content._require_directed(peer)
                peers[peer] = None
            except (KeyError, ValueError) as exc:
                peers[peer] = str(exc.args[0]) if exc.args else type(exc).__name__
        return {"send": book.may_act(session.self_id, "send-chat"),
                "act": book.may_act(session.self_id, "act"), "peers": peers}

    def _emit_policy(self) -> None:
        policy = self.send_policy()
        if policy != self._policy:
            self._policy = policy
            self.emit("policy", policy)

    def set_ice_servers(self, servers_json: str) -> bool:
        """ICE servers fetched again from ``/api/turn`` (the page does so before its TURN credentials
        expire): peer connections made from now on use them. False for a mount without a network."""
        servers = json.loads(servers_json)
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
            raise TypeError("ICE servers must be a JSON list of objects with urls")
        transport = self._transport
        if not isinstance(transport, RtcTransport) or self.closed:
            return False
        transport.set_rtc_config(dataclasses.replace(transport.rtc_config, ice_servers=tuple(servers)))
        return True

    def _handler(self, name: str, py: str | None) -> Callable[..., Any]:
        if py is None:
            def missing(*_args: Any) -> Any:
                raise NotImplementedError(f"Kibitz: {name}() is not available in this build")

            return missing
        if not py.startswith("session."):
            method: Callable[..., Any] = getattr(self, py)
            return method
        attr = py[len("session."):]

        def run(*args: Any) -> Any:
            if self.session is None:
                raise RuntimeError(f"a preview never joins a room: {name} is not available")
            return getattr(self.session, attr)(*args)

        return run

    async def create_invite_link(self, page_url: str) -> str:
        """``createInviteLink()``: this page's address as an invite (the page passes it in), with the
        room and its settings in the fragment when the room has any (gate, host; never a secret);
        a licensed opener's carries a fresh room grant (``?grant=``), so its joiners ride its relay."""
        url = str(page_url)
        if self.session is not None and self.session.gate.to_params() != {"g": "open"}:
            url = self.session.invite_link(strip_grant(url)[0])
        if self.relay is None:
            return invite_link(url, None)
        return await self.relay.invite_link(url)

    async def set_join_credential(self, credential: str | None) -> None:
        """``setJoinCredential(code | invite)``: what the door asked for; a code is turned into its
        slow-hash key here (it never leaves this page)."""
        session = self._need()
        rooms = self.room_settings
        settings = dataclasses.replace(rooms, credential=credential) if rooms else None
        session.set_credential(await prepared_credential(settings) if settings else credential)

    async def prepare(self) -> None:
        """Before the session starts: the code's key, and the host key unsealed with the host
        password. A wrong host password is said in the state (``hostError``), never fatal: the
        mount goes on as a guest."""
        if self.session is None or self.room_settings is None:
            return
        credential = await prepared_credential(self.room_settings)
        if credential:
            self.session.set_credential(credential)
        if self.room_settings.host_password and not self.room_settings.host_key:
            try:
                self.session.set_host_key(await host_key_of(self.room_settings) or "")
            except ValueError as exc:
                self.state["hostError"] = str(exc)
                log.warning("hostPassword: %s", exc)

    async def join(self, opts: Mapping[str, Any] | None = None) -> None:
        opts = opts or {}
        if self.relay is not None and self.relay.error:
            raise PermissionError(self.relay.error)  # relay only, and no relay: stay out, say why
        if self.session is None:
            self._preview_on = True
            if opts.get("cam", True) and "cam" not in self._media.tracks:
                await self._media.acquire("cam")
            if opts.get("mic") and "mic" not in self._media.tracks:
                await self._media.acquire("mic")
            self._emit_state()
            self._emit_participants()
            return
        self.session.join()
        if opts.get("mic"):
            await self.session.set_mic(True)
        if opts.get("cam"):
            await self.session.set_cam(True)

    async def leave(self) -> None:
        if self.session is None:
            self._preview_on = False
            for source in list(self._media.tracks):
                self._media.release(source)  # type: ignore[arg-type]
            self._emit_state()
            self._emit_participants()
            return
        self.session.leave()
        state = self.session.get_state()
        if state["micOn"]:
            await self.session.set_mic(False)
        if state["camOn"]:
            await self.session.set_cam(False)
        if state["sharing"]:
            self.session.stop_share()

    async def toggle_mic(self) -> bool:
        if self.session is None:
            return await self._preview_toggle("mic")
        return await self.session.toggle_mic()

    async def toggle_cam(self) -> bool:
        if self.session is None:
            return await self._preview_toggle("cam")
        return await self.session.toggle_cam()

    async def _preview_toggle(self, source: Source) -> bool:
        if source in self._media.tracks:
            self._media.release(source)
        else:
            await self._media.acquire(source)
        self._emit_state()
        return source in self._media.tracks

    async def share_screen(self) -> None:
        await self._need().share_screen()

    async def share_track(self, track: Any) -> None:
        if track is None or getattr(track, "kind", "video") != "video":
            raise TypeError("shareTrack(track) needs a video MediaStreamTrack")
        self._shared = track
        await self._need().share_screen(track)
        self._local_media_changed()

    def stop_share(self) -> None:
        self._shared = None
        self._need().stop_share()
        self._local_media_changed()

    def sign_in_identity(self, method: str) -> dict[str, Any]:
        """``signInIdentity(el, method)``: the page draws the sign-in into ``el`` from this plan."""
        return sign_in_plan(self._need(), str(method))

    def get_agent_audit(self, peer: str | None = None, n: int = 6) -> list[dict[str, Any]]:
        return self._need().get_agent_audit(peer, n)

    def _need(self) -> Session:
        if self.session is None:
            raise RuntimeError("a preview never joins a room")
        return self.session

    # ------------------------------------------------------------------ engine → page

    def get_state(self) -> dict[str, Any]:
        if self.session is None:
            tracks = self._media.tracks
            return {**STATE_DEFAULTS, "inCall": self._preview_on, "micOn": "mic" in tracks,
                    "camOn": "cam" in tracks, "preview": True}
        state = self.session.get_state()
        if state.get("lobbyStatus") is None:
            state["lobbyStatus"] = "none"
        if self.relay is not None:
            state.update(self.relay.state())
        state["signaling"] = self.signaling
        return state

    def get_participants(self) -> list[dict[str, Any]]:
        if self.session is None:
            if not self._preview_on:
                return []
            return [{"id": "preview", "name": str(self.config.get("name") or ""), "isSelf": True,
                     "camOn": "cam" in self._media.tracks, "micOn": "mic" in self._media.tracks,
                     "speaking": False, "stream": self._self_view(), "meta": {}, "role": "guest"}]
        return [self._decorate(p) for p in self.session.get_participants()]

    def _decorate(self, person: dict[str, Any]) -> dict[str, Any]:
        pid = person["id"]
        person["speaking"] = pid in self.speaking.speaking
        person["stream"] = self._self_view() if person.get("isSelf") else self._stream_of.get(pid)
        return person

    def emit(self, event: str, *args: Any) -> None:
        if self.closed:
            return
        try:
            self._emit_raw(event, *[self._convert(a) for a in args])
        except Exception:
            self.errors += 1
            log.exception("page listener for %s failed", event)

    def _emit_state(self) -> None:
        self.state = self.get_state()
        self.emit("state", self.state)

    def _emit_participants(self) -> None:
        self.emit("participants", self.get_participants())

    def _on_participants(self, _people: list[dict[str, Any]]) -> None:
        self._emit_participants()
        self._emit_policy()
        self._sync_meters()

    def _on_join(self, person: dict[str, Any]) -> None:
        self.emit("join", self._decorate(dict(person)))

    def _on_leave(self, person: dict[str, Any]) -> None:
        pid = str(person.get("id"))
        self._stream_of.pop(pid, None)
        if self.speaking.forget(pid):
            self.emit("speaking", pid, False)
        self.emit("leave", person)

    def _on_state(self, _state: dict[str, Any]) -> None:
        self._emit_state()
        self._emit_policy()
        self._sync_meters()

    def _on_chat(self, line: dict[str, Any] | None) -> None:
        self.emit("chat", line)

    def _on_knocks(self, knocks: list[dict[str, Any]]) -> None:
        self.emit("knocks", knocks)

    def _on_lobby(self, status: str) -> None:
        self.emit("lobby", status)

    def _on_caps(self, grant: dict[str, Any]) -> None:
        self.emit("caps", grant)
        self._emit_policy()

    def _on_message(self, data: Any, sender: str) -> None:
        # One string over the FFI: the page's JSON.parse is far cheaper than a deep to_js. The
        # receive check already encoded the value being delivered; json_of reuses that text.
        # Strings need no conversion, so this skips emit()'s per-argument pass (the hot path).
        if self.closed:
            return
        text = self.session.content.json_of(data) if self.session is not None else json.dumps(data)
        try:
            self._emit_raw("message", text, sender)
        except Exception:
            self.errors += 1
            log.exception("page listener for message failed")

    def _on_tracks(self, peer: str, lane: str, track: Any) -> None:
        if self._streams is None:
            return
        stream = self._stream_of.get(peer)
        if stream is None:
            stream = self._stream_of[peer] = self._streams.new()
        self._streams.set_track(stream, lane, track)
        self._sync_meters()
        self._emit_participants()

    # ------------------------------------------------------------------ local media, speaking

    def _self_view(self) -> Any:
        if self._streams is None:
            return None
        tracks = self._media.tracks
        if self._self_stream is None:
            self._self_stream = self._streams.new()
        state = self.session.get_state() if self.session is not None else {"micOn": True, "camOn": True,
                                                                             "sharing": False}
        video = (self._shared or tracks.get("screen")) if state["sharing"] else None
        if video is None and state["camOn"]:
            video = tracks.get("cam")
        self._streams.set_track(self._self_stream, "audio", tracks.get("mic") if state["micOn"] else None)
        self._streams.set_track(self._self_stream, "video", video)
        return self._self_stream

    def _local_media_changed(self) -> None:
        if self.closed:
            return
        self._self_view()
        self._sync_meters()

    def _screen_ended(self) -> None:
        if self.session is not None and self.session.get_state()["sharing"]:
            self.stop_share()

    def _sync_meters(self) -> None:
        """Analyse exactly the audio we can hear: our mic while on, and each remote mic that is on."""
        if self._meter is None or self.session is None:
            return
        want: dict[str, Any] = {}
        mic = self._media.tracks.get("mic")
        if mic is not None and self.session.get_state()["micOn"]:
            want[self.session.self_id] = mic
        for person in self.session.get_participants():
            if person["isSelf"] or not person.get("micOn"):
                continue
            track = self.session.remote_tracks(person["id"]).get("audio")
            if track is not None:
                want[person["id"]] = track
        for key in [k for k in self._metered if k not in want or self._metered[k] is not want[k]]:
            self._meter.remove(key)
            del self._metered[key]
        for key, track in want.items():
            if key not in self._metered:
                self._meter.add(key, track)
                self._metered[key] = track
        for key in list(self.speaking.speaking):
            if key not in want and self.speaking.forget(key):
                self.emit("speaking", key, False)
                self._emit_participants()

    def _on_levels(self, levels: Any) -> None:
        if self.closed:
            return
        raw = levels if isinstance(levels, dict) else {}
        now = self._scheduler.now() if self._scheduler is not None else self._wall()
        changes = self.speaking.feed({str(k): float(v) for k, v in raw.items()}, now)
        for key, on in changes:
            self.emit("speaking", key, on)
        if changes:
            self._emit_participants()

    # ------------------------------------------------------------------ diagnostics / test hooks

    def cut_link(self, peer: str) -> bool:
        """Close the ``RTCPeerConnection`` under our data link to ``peer`` (a simulated network cut)."""
        session = self._need()
        link = session.mesh.link_of(peer)
        links = getattr(session._transport, "_links", {})
        lk = links.get(link) if link is not None else None
        if lk is None or lk.pc is None:
            return False
        raw = lk.pc.raw
        if hasattr(raw, "fire"):
            raw.fire("close")  # a page bridge reference (the engine in a Worker)
        else:
            raw.close()
        return True


