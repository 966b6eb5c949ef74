"""aiortc media pieces for :mod:`kibitz.backends.aio`: lanes, placeholders, a tone, a probe.

Three aiortc behaviours the browser does not have, and how this module hides them:

* an aiortc track is *pulled* by its consumer (``await track.recv()``), so one track on two
  senders splits its frames between them. :class:`SenderLane` (one per sender, attached for the
  sender's whole life) pulls from the current source through a per-source fan-out, so one track
  (an agent's voice) can feed every link at full rate;
* aiortc stamps RTP timestamps from the frames' ``pts``. Two sources both start at 0, so a
  replaceTrack-style swap would send time backwards. :class:`SenderLane` re-stamps every frame on
  one continuous clock per sender (a swap after a silent gap jumps forward by the gap);
* a received (``RemoteStreamTrack``) track buffers decoded frames without bound until someone
  reads them. :class:`RemoteLane` drains it at once into a small drop-oldest buffer, so an
  agent that never looks at a lane costs no memory.

Frames are re-stamped in place when one consumer reads them and copied first when several do.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import time
from array import array
from collections import deque
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from av.packet import Packet

from kibitz.transport import Lane

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
AUDIO_FRAME_S = 0.02


def _clock_of(kind: str) -> int:
    return AUDIO_CLOCK if kind == "audio" else VIDEO_CLOCK


class KibitzTrack(MediaStreamTrack):
    """An aiortc track that also satisfies :class:`kibitz.backends.rtc_api.MediaTrack`."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    @property
    def ready_state(self) -> str:
        return self.readyState

    async def recv(self) -> Any:  # pragma: no cover - abstract in subclasses
        raise MediaStreamError


DTX_INTERVAL_S = 0.4
"""How often a silent placeholder sends a frame (Opus DTX sends one packet per 400 ms of silence)."""


class _Paced(KibitzTrack):
    """Yields one frame every ``period`` seconds on the monotonic clock (no drift, no burst)."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self._period = period
        self._start: float | None = None
        self._count = 0

    async def _tick(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._count * self._period
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 1.0:  # fell far behind (loop stalled): skip, do not burst
                self._count = int((now - self._start) / self._period)
        if self.readyState != "live":
            raise MediaStreamError
        n = self._count
        self._count += 1
        return n


class BlackVideoTrack(_Paced):
    """The flowing video placeholder: tiny black frames (default 2x2 at 5 fps), nearly free to encode."""

    kind = "video"

    def __init__(self, width: int = 2, height: int = 2, fps: float = 5.0) -> None:
        super().__init__(1.0 / fps)
        self.width, self.height, self.fps = width, height, fps

    async def recv(self) -> VideoFrame:
        n = await self._tick()
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(frame.planes, (16, 128, 128), strict=True):  # limited-range black
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = int(n * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class _AudioSource(_Paced):
    kind = "audio"

    def __init__(self, sample_rate: int = AUDIO_CLOCK, frame_s: float = AUDIO_FRAME_S) -> None:
        super().__init__(frame_s)
        self.sample_rate = sample_rate
        self.samples = int(sample_rate * frame_s)

    def _pcm(self, n: int) -> bytes:
        return bytes(2 * self.samples)

    async def recv(self) -> AudioFrame:
        n = await self._tick()
        frame = AudioFrame(format="s16", layout="mono", samples=self.samples)
        pcm = self._pcm(n) if self.enabled else bytes(2 * self.samples)
        frame.planes[0].update(pcm.ljust(frame.planes[0].buffer_size, b"\0"))
        frame.pts = n * self.samples
        frame.sample_rate = self.sample_rate
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class SilenceTrack(_AudioSource):
    """The flowing audio placeholder, paced like Opus DTX: one 20 ms frame of digital silence
    every 400 ms (mono s16, 48 kHz), with timestamps that skip the gaps.

    A browser sending silence with DTX does the same, so receivers treat the lane as alive, while
    encoding (and the peer's decoding) costs a twentieth of a 50 fps stream: measured on aiortc,
    the audio placeholder was ~85 % of an idle link's CPU before this pacing.
    """

    def __init__(self, sample_rate: int = AUDIO_CLOCK, every_s: float = DTX_INTERVAL_S) -> None:
        super().__init__(sample_rate)
        self._period = every_s
        self._stride = int(sample_rate * every_s)

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        assert frame.pts is not None
        frame.pts = (frame.pts // self.samples) * self._stride
        return frame


class ToneTrack(_AudioSource):
    """A sine tone (default 440 Hz, 48 kHz mono s16, 20 ms frames): test signal and agent voice stand-in.

    ``enabled = False`` sends silence instead, like a muted ``MediaStreamTrack``.
    """

    def __init__(
        self, frequency: int = 440, *, amplitude: float = 0.3, sample_rate: int = AUDIO_CLOCK
    ) -> None:
        super().__init__(sample_rate)
        if not 0 < frequency < sample_rate // 2 or not 0.0 <= amplitude <= 1.0:
            raise ValueError("need 0 < frequency < sample_rate/2 and 0 <= amplitude <= 1")
        self.frequency = frequency
        # One exact repeat of the waveform (an integer number of cycles), sliced per frame.
        period = sample_rate // math.gcd(frequency, sample_rate)
        peak = int(32767 * amplitude)
        step = 2 * math.pi * frequency / sample_rate
        table = array("h", (round(peak * math.sin(step * i)) for i in range(period)))
        reps = -(-(period + self.samples) // period)
        self._table = (table * reps).tobytes()
        self._table_len = period

    def _pcm(self, n: int) -> bytes:
        offset = (n * self.samples) % self._table_len
        return self._table[2 * offset : 2 * (offset + self.samples)]


def placeholder_tracks() -> dict[Lane, MediaStreamTrack]:
    """Fresh placeholders for one link: ``{"audio": SilenceTrack(), "video": BlackVideoTrack()}``."""
    return {"audio": SilenceTrack(), "video": BlackVideoTrack()}


# ---------------------------------------------------------------------------------- sending


def _copy_plane(src: Any, dst: Any) -> None:
    data = memoryview(src)
    if not hasattr(dst, "line_size") or src.line_size == dst.line_size:  # audio planes: packed
        dst.update(bytes(data[: dst.buffer_size]).ljust(dst.buffer_size, b"\0"))
        return
    out = bytearray(dst.buffer_size)
    width = min(src.line_size, dst.line_size)
    for row in range(dst.height):
        at, frm = row * dst.line_size, row * src.line_size
        out[at : at + width] = data[frm : frm + width]
    dst.update(bytes(out))


def copy_frame(frame: Any) -> Any:
    """A private copy of a PyAV frame or packet (so its ``pts`` can be changed safely)."""
    if isinstance(frame, AudioFrame):
        out: Any = AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=frame.samples)
        out.sample_rate = frame.sample_rate
    elif isinstance(frame, VideoFrame):
        out = VideoFrame(frame.width, frame.height, frame.format.name)
    elif isinstance(frame, Packet):
        out = Packet(bytes(frame))
        out.pts, out.time_base = frame.pts, frame.time_base
        return out
    else:
        return frame
    for src, dst in zip(frame.planes, out.planes, strict=True):
        _copy_plane(src, dst)
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


class _Fanout:
    """Reads one source track once and hands every frame to all subscribed lanes."""

    def __init__(self, source: MediaStreamTrack, registry: FanoutRegistry) -> None:
        self.source = source
        self.lanes: set[SenderLane] = set()
        self._registry = registry
        self._task: asyncio.Task[None] | None = None

    def add(self, lane: SenderLane) -> None:
        self.lanes.add(lane)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def remove(self, lane: SenderLane) -> None:
        self.lanes.discard(lane)
        if not self.lanes:
            self._registry._forget(self)
            if self._task is not None:
                self._task.cancel()
                self._task = None

    async def _run(self) -> None:
        while self.lanes:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("media source %s failed", self.source.id)
                break
            shared = len(self.lanes) > 1
            for lane in list(self.lanes):
                lane._offer(self, frame, shared)
        self._registry._forget(self)  # ended: a later subscription starts afresh (and fails alike)


class FanoutRegistry:
    """One :class:`_Fanout` per source track, so a track feeding many senders is read once."""

    def __init__(self) -> None:
        self._by_source: dict[MediaStreamTrack, _Fanout] = {}

    def subscribe(self, source: MediaStreamTrack, lane: SenderLane) -> _Fanout:
        fan = self._by_source.get(source)
        if fan is None:
            fan = self._by_source[source] = _Fanout(source, self)
        fan.add(lane)
        return fan

    def _forget(self, fan: _Fanout) -> None:
        if self._by_source.get(fan.source) is fan:
            del self._by_source[fan.source]

    def __len__(self) -> int:
        return len(self._by_source)


class SenderLane(KibitzTrack):
    """The track an aiortc sender really holds: forwards the current source, re-stamped.

    ``set_source(None)`` leaves the sender blocked in ``recv()``: no packets at all.
    """

    def __init__(self, kind: str, registry: FanoutRegistry, *, max_queue: int = 8) -> None:
        super().__init__()
        self.kind = kind
        self.source: MediaStreamTrack | None = None
        self._registry = registry
        self._fanout: _Fanout | None = None
        self._queue: deque[tuple[Any, bool]] = deque(maxlen=max_queue)
        self._wake = asyncio.Event()
        self._clock = _clock_of(kind)
        self._t0 = time.monotonic()
        self._last_out = -1
        self._seg_out: int | None = None
        self._seg_in = 0

    def set_source(self, source: MediaStreamTrack | None) -> None:
        if source is self.source:
            return
        if self._fanout is not None:
            self._fanout.remove(self)
            self._fanout = None
        self.source = source
        self._queue.clear()
        self._seg_out = None  # the next frame starts a new timestamp segment
        if source is not None and self.readyState == "live":
            if source.kind != self.kind:
                raise ValueError(f"a {source.kind} track cannot go on a {self.kind} lane")
            self._fanout = self._registry.subscribe(source, self)

    def _offer(self, fanout: _Fanout, frame: Any, shared: bool) -> None:
        if fanout is self._fanout:
            self._queue.append((frame, shared))
            self._wake.set()

    async def recv(self) -> Any:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame, shared = self._queue.popleft()
        if shared:
            frame = copy_frame(frame)
        self._restamp(frame)
        return frame

    def _restamp(self, frame: Any) -> None:
        clock = self._clock
        wall = int((time.monotonic() - self._t0) * clock)
        if frame.pts is not None and frame.time_base is not None:
            ticks = int(frame.pts * frame.time_base * clock)
        else:
            ticks = wall
        if self._seg_out is None:
            self._seg_out, self._seg_in = max(self._last_out + 1, wall), ticks
        out = max(self._seg_out + ticks - self._seg_in, self._last_out + 1)
        self._last_out = out
        if isinstance(frame, AudioFrame):
            rate = frame.sample_rate or clock
            frame.time_base = fractions.Fraction(1, rate)
            frame.pts = out * rate // clock
        else:
            frame.time_base = fractions.Fraction(1, clock)
            frame.pts = out

    def stop(self) -> None:
        super().stop()
        self.set_source(None)
        self._wake.set()


# -------------------------------------------------------------------------------- receiving


class RemoteLane(KibitzTrack):
    """A received track, drained as it arrives into a drop-oldest buffer (``max_buffer`` frames).

    Read it like any aiortc track (``await recv()``), or not at all: nothing piles up. Counts
    ``frames_received``, ``samples_received`` (audio) and ``frames_dropped``. ``stop()`` ends it for
    readers; draining continues until the link closes.
    """

    def __init__(self, native: MediaStreamTrack, *, max_buffer: int | None = None) -> None:
        super().__init__()
        self.kind = native.kind
        self._id = native.id
        self._native = native
        self._buffer: deque[Any] = deque(maxlen=max_buffer or (100 if native.kind == "audio" else 30))
        self._wake = asyncio.Event()
        self._ended = False
        self.frames_received = 0
        self.samples_received = 0
        self.frames_dropped = 0
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self._native.recv()
                self.frames_received += 1
                if isinstance(frame, AudioFrame):
                    self.samples_received += frame.samples
                if self.readyState != "live":
                    continue
                if len(self._buffer) == self._buffer.maxlen:
                    self.frames_dropped += 1
                self._buffer.append(frame)
                self._wake.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._wake.set()

    async def recv(self) -> Any:
        while not self._buffer:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._wake.clear()
            await self._wake.wait()
        return self._buffer.popleft()

    def stop(self) -> None:
        super().stop()
        self._buffer.clear()
        self._wake.set()


def pcm_peak(frame: AudioFrame) -> int:
    """Largest absolute s16 sample in ``frame`` (0 for silence); -1 for non-s16 formats."""
    if frame.format.name not in ("s16", "s16p"):
        return -1
    count = frame.samples * (1 if frame.format.is_planar else len(frame.layout.channels))
    samples = array("h")
    samples.frombytes(bytes(memoryview(frame.planes[0])[: 2 * count]))
    return max((abs(s) for s in samples), default=0)


class TrackProbe:
    """Consumes a track in the background and measures it (tests, agent receive loops).

    ``frames``; ``loud_frames`` (audio frames whose peak exceeds ``loud_threshold``); ``last_peak``;
    ``size`` (width, height) of the last video frame; ``ended``.
    """

    def __init__(self, track: MediaStreamTrack, *, loud_threshold: int = 1000) -> None:
        self.track = track
        self.loud_threshold = loud_threshold
        self.frames = 0
        self.loud_frames = 0
        self.last_peak = 0
        self.size: tuple[int, int] | None = None
        self.ended = False
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if isinstance(frame, AudioFrame):
                    self.last_peak = pcm_peak(frame)
                    if self.last_peak > self.loud_threshold:
                        self.loud_frames += 1
                elif isinstance(frame, VideoFrame):
                    self.size = (frame.width, frame.height)
                self._changed.set()
        except MediaStreamError:
            pass
        finally:
            self.ended = True
            self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate(self)`` holds (checked after every frame); TimeoutError otherwise."""

        async def loop() -> None:
            while not predicate(self):
                if self.ended:
                    raise MediaStreamError("track ended")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
