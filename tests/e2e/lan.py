"""A virtual LAN for tests, built from network namespaces: no route to anything else.

``Lan(tag)`` makes a namespace holding a bridge, and ``lan.host(name, last_octet)`` a namespace per
device with one veth into that bridge and an address in 198.18.96.0/20 (only: see common rules).
Nothing has a default route, so nothing can leave. Names are ``hb<tag><name>`` (15 characters at
most for interfaces), unique per test run, and everything is deleted by :meth:`Lan.close` (deleting
a namespace deletes its veth end, and with it the pair).

Processes run in a host with ``host.popen([...])`` (``ip netns exec``). A browser runs in one
through :meth:`Host.wrapper`: a script Playwright launches as the browser executable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server_fixture import stop_group

SUBNET = "198.18.96"
PREFIX = 20


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"hbprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    lan: Lan
    name: str
    ns: str
    addr: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *args], check=check,
                              capture_output=True, text=True)

    def popen(self, args: list[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kw)
        self.procs.append(proc)
        return proc

    def wrapper(self, executable: str, directory: Path) -> str:
        """A script that runs ``executable`` inside this host (for Playwright's executable_path)."""
        path = directory / f"{self.ns}-{Path(executable).name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} {executable} "$@"\n')
        path.chmod(0o755)
        return str(path)

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
        """SIGTERM its process group, SIGKILL after ``timeout``."""
        if proc.poll() is None:
            stop_group(proc, timeout)


class Lan:
    def __init__(self, tag: str) -> None:
        if len(tag) > 6:
            raise ValueError("tag: 6 characters at most (interface names are 15)")
        self.tag = tag
        self.bridge_ns = f"hb{tag}lan"
        self.hosts: dict[str, Host] = {}
        _ip("netns", "add", self.bridge_ns)
        self._in_bridge("ip", "link", "set", "lo", "up")
        self._in_bridge("ip", "link", "add", "br0", "type", "bridge")
        self._in_bridge("ip", "link", "set", "br0", "up")

    def _in_bridge(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.bridge_ns, *args], check=True, capture_output=True)

    def host(self, name: str, octet: int) -> Host:
        ns = f"hb{self.tag}{name}"
        addr = f"{SUBNET}.{octet}"
        outer, inner = f"hb{self.tag}{name}o"[:15], f"hb{self.tag}{name}i"[:15]
        _ip("netns", "add", ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", outer, "netns", self.bridge_ns)
        _ip("link", "set", inner, "netns", ns)
        self._in_bridge("ip", "link", "set", outer, "master", "br0")
        self._in_bridge("ip", "link", "set", outer, "up")
        h = Host(self, name, ns, addr)
        h.run("ip", "link", "set", "lo", "up")
        h.run("ip", "link", "set", inner, "name", "eth0")
        # IPv4 only: an IPv6 link-local address settles (DAD) a second or two after the link comes
        # up, and Chromium takes that address change for a network change and aborts what it has
        # in flight (ERR_NETWORK_CHANGED: a page booting then lost its engine download).
        for conf in ("all", "default", "eth0"):
            h.run("sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1")
        h.run("ip", "addr", "add", f"{addr}/{PREFIX}", "dev", "eth0")
        h.run("ip", "link", "set", "eth0", "up")
        # Link-local multicast stays on the LAN (mDNS: browsers name their host candidates
        # <uuid>.local until a page has camera permission). Not a default route.
        h.run("ip", "route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts[name] = h
        return h

    def close(self) -> None:
        for h in self.hosts.values():
            for proc in h.procs:
                h.stop(proc, timeout=5)
        for h in self.hosts.values():
            _ip("netns", "del", h.ns, check=False)
        _ip("netns", "del", self.bridge_ns, check=False)


@contextlib.contextmanager
def lan(tag: str) -> Iterator[Lan]:
    net = Lan(tag)
    try:
        yield net
    finally:
        net.close()
