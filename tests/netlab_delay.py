"""A userspace delay line for the fault lab (the kernel here has no ``sch_netem``).

Runs in the lab's hub namespace and reads IP packets from a TUN device: the hub routes an impaired
host's packets (both directions) into it. Each packet is written back to the same device after a
delay, where the hub routes it on normally. The delay wanders around ``--delay-ms`` within
± ``--jitter-ms`` (a new random target every 200 ms, approached linearly), and packets leave in the
order they came (jitter as a queue makes it, no reordering). Prints ``DELAY_READY`` once the device is open.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import os
import random
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--jitter-period", type=float, default=0.2)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base, jitter = args.delay_ms / 1000, args.jitter_ms / 1000
    fd = open_tun(args.dev)
    print("DELAY_READY", flush=True)
    queue: list[tuple[float, int, bytes]] = []
    seq = 0
    last_release = 0.0
    start = time.monotonic()
    step = args.jitter_period
    segment = [0, rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)]
    """[index of the current 200 ms segment, jitter at its start, jitter at its end]"""

    def offset(now: float) -> float:
        """The jitter at ``now``: piecewise linear between random targets ``step`` apart."""
        k, frac = divmod((now - start) / step, 1.0)
        while segment[0] < k:
            segment[:] = [segment[0] + 1, segment[2], rng.uniform(-jitter, jitter)]
        return segment[1] + (segment[2] - segment[1]) * frac

    forwarded = 0
    while True:
        now = time.monotonic()
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            while True:
                try:
                    packet = os.read(fd, 65535)
                except BlockingIOError:
                    break
                now = time.monotonic()
                release = max(now + base + offset(now), last_release)
                last_release = release
                heapq.heappush(queue, (release, seq, packet))
                seq += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, packet = heapq.heappop(queue)
            try:
                os.write(fd, packet)
                forwarded += 1
            except OSError as exc:  # a full device queue drops, as a router would
                print("write failed:", exc, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
