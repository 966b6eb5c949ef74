"""A private network for fault tests: network namespaces, impairment, a killable server, and
browsers and agents that live on it. Nothing leaves the machine.

Topology (every name starts with ``rl``; addresses only from 198.18.64.0/20)::

                       hub namespace rl<tag>h  (a plain L3 router, ip_forward=1)
           ┌──────────────────┬──────────────────┬─────────────────── …
   veth rl<tag>p0     veth rl<tag>p1      veth rl<tag>p2
   198.18.64.1/28     198.18.65.1/28      198.18.65.17/28        (hub side: the gateways)
           │                  │                  │
   rl<tag>n0 (server)  rl<tag>n1 (host a)  rl<tag>n2 (host b)   …  one namespace per host
   198.18.64.2         198.18.65.2         198.18.65.18            (host side, default route via hub)

Every pair of hosts talks through the hub's routing (no bridge), so one host's link can be
impaired on its own:

* **loss**: nftables in the hub drops UDP to and from the host at random (``numgen random mod
  100``), as a lossy link would: the kernel here has no ``sch_netem``;
* **rate**: ``tc`` tbf on the host's veth;
* **delay**: the hub routes the host's packets (both directions) through a TUN device read by a
  small userspace relay (tests/netlab_delay.py) that holds each packet for a jittered delay, in
  order; it delays TCP (signaling) as well as UDP (media, data channels);
* **move**: the host's address moves to another subnet (198.18.66.0/24 + 16·i), as a laptop
  changing networks; its old address stops working at once.

Processes in a namespace run under ``ip netns exec``; each is started in its own session so the
lab can kill exactly what it started. :meth:`NetLab.close` kills them and deletes every namespace
(which deletes the veths, routes, rules, nft tables and TUN devices with them), also when a test
failed half-way. Creating namespaces needs root (CI runs as root); :func:`lab_or_skip` skips with
the reason when that is impossible.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv/bin/python"
KIBITZ = ROOT / ".venv/bin/kibitz"
CHROMIUM = os.environ.get("KIBITZ_CHROMIUM", "/usr/bin/chromium")
LAB_NET = "198.18.64.0/20"
SERVER_NET = "198.18.64"
HOSTS_NET = "198.18.65"
MOVED_NET = "198.18.66"
MAX_HOSTS = 16
READY = re.compile(r"KIBITZ_READY (http://\S+) broker=(ws://\S+)")


class LabUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no ``ip``/``nft``, or the kernel refuses)."""


def sh(*cmd: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one command; raise with its output when it fails (and ``check``)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        why = done.stderr.strip() or done.stdout
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {why}")
    return done


def lab_available() -> str | None:
    """None when namespaces work here, else why not (the reason a test skips with)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/setup.sh --tests installs iproute2 and nftables)"
    probe = f"rl{secrets.token_hex(3)}q"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"the kernel refuses network namespaces: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Host:
    """One namespace on the lab network with one address (``ip``) and its gateway on the hub."""

    lab: NetLab
    name: str
    index: int
    ns: str
    dev: str
    """The host-side veth (in ``ns``)."""
    hub_dev: str
    """The hub-side veth."""
    ip: str
    gateway: str
    moved: bool = False
    impairments: list[str] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *cmd, check=check)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside this namespace in a session of its own; the lab kills it at close."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *cmd], start_new_session=True, **kwargs
        )
        self.lab.procs.append(proc)
        return proc


class NetLab:
    """See the module docstring. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(2)
        self.hub = f"rl{self.tag}h"
        self.hosts: dict[str, Host] = {}
        self.procs: list[subprocess.Popen[Any]] = []
        self.namespaces: list[str] = []
        self.tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rl-{self.tag}-{os.getpid()}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._delay: subprocess.Popen[Any] | None = None
        self._delayed: set[str] = set()
        self._closed = False
        try:
            self._make_ns(self.hub)
            self._in(self.hub, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self._in(self.hub, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
            self._in(self.hub, "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0")
        except Exception:
            self.close()
            raise

    # ------------------------------------------------------------------ building

    def __enter__(self) -> NetLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _in(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check)

    def add_host(self, name: str, *, server: bool = False) -> Host:
        """A new namespace linked to the hub. The server (one per lab) sits at 198.18.64.2."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        index = len(self.hosts)
        if index >= MAX_HOSTS:
            raise ValueError(f"a lab holds at most {MAX_HOSTS} hosts")
        ns, dev, hub_dev = f"rl{self.tag}n{index}", f"rl{self.tag}e{index}", f"rl{self.tag}p{index}"
        if server:
            gateway, ip = f"{SERVER_NET}.1", f"{SERVER_NET}.2"
        else:
            gateway, ip = f"{HOSTS_NET}.{16 * index + 1}", f"{HOSTS_NET}.{16 * index + 2}"
        self._make_ns(ns)
        sh("ip", "-n", self.hub, "link", "add", hub_dev, "type", "veth", "peer", "name", dev, "netns", ns)
        sh("ip", "-n", self.hub, "addr", "add", f"{gateway}/28", "dev", hub_dev)
        sh("ip", "-n", self.hub, "link", "set", hub_dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/28", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
        host = Host(self, name, index, ns, dev, hub_dev, ip, gateway)
        self.hosts[name] = host
        return host

    # ------------------------------------------------------------------ impairment

    def loss(self, host: Host, percent: int, *, ways: tuple[str, ...] = ("in",), proto: str = "udp") -> None:
        """Drop ``percent`` % of the ``proto`` packets on the host's link at random (0 removes it):
        ``ways`` ``"in"`` (to the host, the default) and/or ``"out"`` (from it).

        The rule sits in the hub's forward hook, on the link itself: dropping in the host's own
        output hook would fail its ``sendto`` with EPERM, which no real network does.
        """
        table = f"rl{self.tag}l{host.index}"
        self._in(self.hub, "nft", "delete", "table", "inet", table, check=False)
        if percent <= 0:
            return
        self._in(self.hub, "nft", "add", "table", "inet", table)
        self._in(self.hub, "nft", "add", "chain", "inet", table, "lossy",
                 "{ type filter hook forward priority 0; }")
        for way in ways:
            match = {"in": "oifname", "out": "iifname"}[way]  # as the hub sees the host's veth
            self._in(self.hub, "nft", "add", "rule", "inet", table, "lossy", match, host.hub_dev, "meta",
                     "l4proto", proto, "numgen", "random", "mod", "100", "<", str(percent), "drop")
        host.impairments.append(f"{percent} % {proto.upper()} loss ({'+'.join(ways)})")

    def rate(self, host: Host, kbit: int | None) -> None:
        """Limit what the host sends to ``kbit`` kbit/s (tbf); ``None`` removes the limit."""
        host.run("tc", "qdisc", "del", "dev", host.dev, "root", check=False)
        if kbit is not None:
            host.run("tc", "qdisc", "add", "dev", host.dev, "root", "tbf", "rate", f"{kbit}kbit",
                     "burst", "32kbit", "latency", "400ms")
            host.impairments.append(f"tbf {kbit} kbit/s out")

    def delay(self, host: Host, ms: float, jitter_ms: float = 0.0, jitter_period: float = 0.2) -> None:
        """Route every packet to and from ``host`` through the delay relay (``ms`` ± ``jitter_ms``)."""
        tun = f"rl{self.tag}t"
        if self._delay is None:
            self._in(self.hub, "ip", "tuntap", "add", "dev", tun, "mode", "tun")
            # A deep queue towards the relay: under load it is read late, and the default 500
            # packets overflow (losses the test did not ask for).
            self._in(self.hub, "ip", "link", "set", tun, "txqueuelen", "20000", "up")
            self._in(self.hub, "sysctl", "-qw", f"net.ipv4.conf.{tun}.rp_filter=0")
            self._in(self.hub, "ip", "route", "add", "default", "dev", tun, "table", "64")
            # What the relay writes back comes in on the TUN: route it normally (main table).
            self._in(self.hub, "ip", "rule", "add", "iif", tun, "lookup", "main", "priority", "100")
            log = (self.tmp / "delay.log").open("w")
            self._delay = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, str(PYTHON), str(ROOT / "tests/netlab_delay.py"),
                 "--dev", tun, "--delay-ms", str(ms), "--jitter-ms", str(jitter_ms),
                 "--jitter-period", str(jitter_period)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            self.procs.append(self._delay)
            self._wait_file(self.tmp / "delay.log", "DELAY_READY", self._delay)
        if host.name in self._delayed:
            return
        self._delayed.add(host.name)
        self._in(self.hub, "ip", "rule", "add", "iif", host.hub_dev, "lookup", "64", "priority", "200")
        for ip in self._addresses(host):
            self._in(self.hub, "ip", "rule", "add", "to", ip, "lookup", "64", "priority", "201")
        host.impairments.append(f"delay {ms:g} ± {jitter_ms:g} ms each way (order kept)")

    def undelay(self, host: Host) -> None:
        """Stop routing ``host`` through the delay relay."""
        if host.name not in self._delayed:
            return
        self._delayed.discard(host.name)
        self._in(self.hub, "ip", "rule", "del", "iif", host.hub_dev, "lookup", "64", "priority", "200")
        for ip in self._addresses(host):
            self._in(self.hub, "ip", "rule", "del", "to", ip, "lookup", "64", "priority", "201")
        host.impairments = [i for i in host.impairments if not i.startswith("delay")]

    def _addresses(self, host: Host) -> list[str]:
        i = host.index
        return [f"{HOSTS_NET}.{16 * i + 2}", f"{MOVED_NET}.{16 * i + 2}"]

    def move(self, host: Host) -> str:
        """Give the host an address on another subnet (and drop the old one); returns the new one."""
        if host.moved:
            raise ValueError(f"{host.name} has moved already")
        i = host.index
        gateway, ip = f"{MOVED_NET}.{16 * i + 1}", f"{MOVED_NET}.{16 * i + 2}"
        sh("ip", "-n", self.hub, "addr", "add", f"{gateway}/28", "dev", host.hub_dev)
        sh("ip", "-n", host.ns, "addr", "add", f"{ip}/28", "dev", host.dev)
        sh("ip", "-n", host.ns, "addr", "del", f"{host.ip}/28", "dev", host.dev)
        sh("ip", "-n", host.ns, "route", "replace", "default", "via", gateway)
        sh("ip", "-n", self.hub, "addr", "del", f"{host.gateway}/28", "dev", host.hub_dev)
        host.ip, host.gateway, host.moved = ip, gateway, True
        return ip

    # ------------------------------------------------------------------ processes

    @staticmethod
    def _wait_file(path: Path, marker: str, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{marker} not seen: {path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def chromium_wrapper(self, host: Host) -> Path:
        """An executable that starts Chromium inside ``host``'s namespace (for Playwright's
        ``executable_path``; the DevTools pipe is inherited through ``ip netns exec``)."""
        path = self.tmp / f"chromium-{host.name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {host.ns} {CHROMIUM} "$@"\n')
        path.chmod(0o755)
        return path

    def close(self) -> None:
        """Kill every process started here, then delete every namespace. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for proc in self.procs:
            kill_group(proc)
        # Chromium (started by Playwright through the wrapper) and anything else still inside.
        for ns in self.namespaces:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


# ---------------------------------------------------------------------------------- the server


class LabServer:
    """``kibitz serve`` in a namespace on fixed ports (the namespace is ours, so they are free),
    so it can be SIGKILLed and restarted on the same port, as a deploy does."""

    def __init__(
        self, host: Host, *, port: int = 8787, broker_port: int = 8788, args: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.port = port
        self.broker_port = broker_port
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.http = f"http://{host.ip}:{port}"
        self.broker = f"ws://{host.ip}:{broker_port}/"
        self.starts = 0
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the server is running")
        cmd = [str(KIBITZ), "serve", "--host", self.host.ip, "--port", str(self.port),
               "--broker-port", str(self.broker_port), *self.args]
        proc = self.host.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.proc = proc
        self.starts += 1
        ready = threading.Event()

        def drain(out: IO[str]) -> None:
            for line in out:
                self.output.append(line)
                if READY.search(line):
                    ready.set()

        assert proc.stdout is not None
        threading.Thread(target=drain, args=(proc.stdout,), daemon=True).start()
        if not ready.wait(timeout):
            raise RuntimeError(f"kibitz serve did not start: {''.join(self.output)[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, as a crash or a hard deploy."""
        if self.proc is not None:
            kill_group(self.proc, signal.SIGKILL)

    def metrics(self) -> dict[str, float]:
        """The broker's Prometheus counters (read from inside the namespace)."""
        text = self.host.run(str(PYTHON), "-c", (
            "import urllib.request,sys;"
            f"sys.stdout.write(urllib.request.urlopen('{self.http}/metrics', timeout=5).read().decode())"
        )).stdout
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def rss_kb(self) -> int:
        """Resident memory of the server process (the child of ``ip netns exec``)."""
        if self.proc is None:
            return 0
        return rss_kb_tree(self.proc.pid)


def rss_kb(pid: int) -> int:
    """Resident memory (kB) of one process (0 when it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_kb_tree(pid: int) -> int:
    """RSS (kB) of the biggest process in ``pid``'s tree: ``ip netns exec`` execs, so usually ``pid``."""
    best = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]))
    return best


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found + [g for c in found for g in children(c)]


# ---------------------------------------------------------------------------------- agents


class LabAgent:
    """A CPython agent (tests/netlab_agent.py) in a namespace, driven by JSON lines.

    It joins ``room`` through the lab server, can stream numbered broadcasts and directed
    messages, records what it receives, and answers ``report``. Being its own process, it can be
    SIGSTOPped and SIGCONTed like a laptop lid.
    """

    def __init__(self, host: Host, server: LabServer, room: str, name: str) -> None:
        self.host = host
        self.name = name
        self.log_path = host.lab.tmp / f"agent-{name}.log"
        self._log = self.log_path.open("w")
        cmd = [str(PYTHON), str(ROOT / "tests/netlab_agent.py"), "--server", server.http, "--room", room,
               "--name", name]
        self.proc = host.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                               text=True, bufsize=1)
        self._lock = threading.Lock()
        self.id = ""
        self.pump: Callable[[], None] = lambda: time.sleep(0.01)
        """Called while waiting for an answer (a test with tabs makes it let Playwright dispatch)."""

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (one line of JSON), calling :attr:`pump`
        meanwhile: Playwright's sync API serves the pages' routed requests only while the main
        thread is inside it, so a test that blocked here would stall its tabs."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
            line = _readline(self.proc.stdout, timeout, self.pump)
        if not line:
            raise RuntimeError(f"agent {self.name} died: {self.log_path.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(
                f"agent {self.name}: {op} failed: {answer['error']}\n{self.log_path.read_text()[-3000:]}"
            )
        return answer

    def start(self, timeout: float = 60.0) -> str:
        self.id = str(self.request("start", timeout=timeout)["id"])
        return self.id

    def stop_process(self) -> None:
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def continue_process(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: the agent vanishes without a goodbye (its sockets close with the process)."""
        kill_group(self.proc, signal.SIGKILL)
        self._log.close()

    def rss_kb(self) -> int:
        return rss_kb_tree(self.proc.pid)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.request("leave", timeout=15)
        kill_group(self.proc, signal.SIGTERM)
        self._log.close()


def _readline(stream: IO[str], timeout: float, pump: Callable[[], None]) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while reader.is_alive():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {timeout} s")
        pump()
    return got[0]


# ---------------------------------------------------------------------------------- helpers


def wait_until(
    check: Any, timeout: float, what: str, interval: float = 0.1, sleep: Callable[[float], None] = time.sleep
) -> float:
    """Poll ``check()`` until truthy; the seconds it took. Raises AssertionError on timeout.

    With browser tabs, pass a ``sleep`` that keeps Playwright dispatching (the pages' routed
    requests and new WebSockets wait for the test's main thread)."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        sleep(interval)


@contextlib.contextmanager
def lab_or_skip() -> Iterator[NetLab]:
    """A :class:`NetLab`, or a pytest skip naming why namespaces cannot be made here."""
    import pytest

    reason = lab_available()
    if reason is not None:
        pytest.skip(f"fault lab unavailable: {reason}")
    with NetLab() as lab:
        yield lab


def stale_namespaces() -> list[str]:
    """``rl…`` namespaces left by a lab that was killed before it could clean up."""
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("rl")]


if __name__ == "__main__":  # `python tests/netlab.py --clean`: remove leftovers of killed runs
    if "--clean" in sys.argv:
        for ns in stale_namespaces():
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
            print("deleted", ns)
