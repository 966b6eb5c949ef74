"""A mixed-version room: the engine of the previous release (N-1) and this one (N) on one bus.

As the original's versionSkew test did (HEAD engine vs a frozen v0.1.0 peer), the older engine is
not a copy kept in the tree but the real one: ``engine/kibitz`` at the commit tests/skew/previous.json
names, taken out of git (or out of ``previous-engine.tar.gz`` beside it: that commit's ``git archive``, so
a shallow clone can run this) and imported as ``kibitz_prev`` beside this ``kibitz``. Both run
:class:`Session` on one in-memory :class:`~kibitz.testing.Bus` (the older one sees the bus's events
as its own classes: the transport seam is what the two share). Each may coordinate; the roster
converges, broadcasts, direct messages and chat cross in both directions, a rename is seen, and a
leave is noticed.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import io
import json
import random
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kibitz import __version__
from kibitz.clock import FakeClock
from kibitz.session import Session
from kibitz.testing import Bus, BusTransport

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = json.loads((ROOT / "tests" / "skew" / "previous.json").read_text())
ROOM = "room-skew-5t9w2k"
_IMPORT = re.compile(r"^(\s*)(from|import)\s+kibitz(?=[\s.])", re.M)


@pytest.fixture(scope="module")
def prev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """``kibitz_prev``: engine/kibitz at the previous release's commit, its imports renamed."""
    commit = PREVIOUS["commit"]
    frozen = ROOT / "tests" / "skew" / "previous-engine.tar.gz"
    if frozen.exists():  # git archive of that commit, kept so a shallow clone (CI) can run this
        data = gzip.decompress(frozen.read_bytes())
    else:
        res = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "engine/kibitz"],
                             capture_output=True)
        if res.returncode != 0:
            pytest.fail(f"git cannot give engine/kibitz at {commit} (a shallow clone? `git fetch "
                        f"--unshallow`): {res.stderr.decode().strip()}")
        data = res.stdout
    root = tmp_path_factory.mktemp("prev")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="data")
    pkg = root / "kibitz_prev"
    (root / "engine" / "kibitz").rename(pkg)
    for py in pkg.rglob("*.py"):
        py.write_text(_IMPORT.sub(r"\1\2 kibitz_prev", py.read_text()))
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("kibitz_prev")
        importlib.import_module("kibitz_prev.session")
        yield module
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "kibitz_prev" or n.startswith("kibitz_prev.")]:
            del sys.modules[name]


class PrevTransport:
    """The bus's transport for the older engine: its events arrive as the older engine's classes."""

    def __init__(self, inner: BusTransport, prev_transport: ModuleType) -> None:
        self._inner = inner
        self._prev = prev_transport

    def bind(self, sink: Callable[[Any], None]) -> None:
        def convert(ev: Any) -> None:
            cls = getattr(self._prev, type(ev).__name__)
            sink(cls(**{f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}))

        self._inner.bind(convert)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def make(bus: Bus, name: str, engine: ModuleType | None) -> Any:
    """A started Session on the bus: this engine's (``engine`` None) or the older one's."""
    transport: Any = bus.transport(name)
    session_cls: Any = Session
    if engine is not None:
        transport = PrevTransport(transport, importlib.import_module(f"{engine.__name__}.transport"))
        session_cls = importlib.import_module(f"{engine.__name__}.session").Session
    s = session_cls(ROOM, transport=transport, scheduler=bus.scheduler(name), rng=random.Random(name),
                    name=name.title(), wall_clock=lambda: bus.clock.now())
    s.start()
    return s


def test_the_previous_release_is_what_the_record_says(prev: ModuleType) -> None:
    assert prev.__version__ == PREVIOUS["version"]
    major, minor, patch = (int(x) for x in __version__.split("-")[0].split("."))
    assert (major, minor, patch) >= tuple(int(x) for x in PREVIOUS["version"].split("."))


@pytest.mark.parametrize("old_first", [True, False], ids=["N-1 coordinates", "N coordinates"])
def test_engines_n_and_n_minus_1_share_a_room(prev: ModuleType, old_first: bool) -> None:
    bus = Bus(FakeClock())
    order = [("old", prev), ("ann", None), ("bob", None)] if old_first else \
        [("ann", None), ("old", prev), ("bob", None)]
    sessions: dict[str, Any] = {}
    for name, engine in order:
        sessions[name] = make(bus, name, engine)
        bus.clock.advance(1.0)
    bus.clock.advance(2.0)
    for s in sessions.values():
        s.join()
    bus.clock.advance(3.0)
    old, ann, bob = sessions["old"], sessions["ann"], sessions["bob"]
    assert type(old).__module__ == "kibitz_prev.session" and type(ann).__module__ == "kibitz.session"
    coordinator = next(n for n, s in sessions.items() if s.get_state().get("isCoordinator"))
    assert coordinator == order[0][0]
    ids = {s.self_id for s in sessions.values()}
    for name, s in sessions.items():
        people = s.get_participants()
        assert {p["id"] for p in people} == ids, name
        assert all(p["linkUp"] for p in people), name

    got: dict[str, list[tuple[Any, str]]] = {n: [] for n in sessions}
    chat: dict[str, list[str]] = {n: [] for n in sessions}
    for n, s in sessions.items():
        s.on_message(lambda data, frm, n=n: got[n].append((data, frm)))
        s.on("chat", lambda line, n=n: chat[n].append(line["text"]) if line else None)
    old.broadcast({"from": "old", "n": 1})
    ann.broadcast({"from": "ann", "n": 2})
    ann.send_to(old.self_id, {"direct": "to old"})
    old.send_to(bob.self_id, {"direct": "to bob"})
    old.send_chat("hello from N-1")
    bob.send_chat("hello from N")
    ann.set_name("Annie")
    bus.clock.advance(1.0)
    assert got["old"] == [({"from": "ann", "n": 2}, ann.self_id), ({"direct": "to old"}, ann.self_id)]
    assert ({"from": "old", "n": 1}, old.self_id) in got["ann"] and len(got["ann"]) == 1
    assert got["bob"] == [({"from": "old", "n": 1}, old.self_id), ({"from": "ann", "n": 2}, ann.self_id),
                          ({"direct": "to bob"}, old.self_id)]
    for n in sessions:
        assert sorted(chat[n]) == ["hello from N", "hello from N-1"], (n, chat[n])
    assert {p["name"] for p in old.get_participants() if p["id"] == ann.self_id} == {"Annie"}

    # Whoever leaves, the others notice, across versions.
    leaver = old if old_first else ann
    leaver.leave()
    bus.clock.advance(3.0)
    for s in sessions.values():
        if s is leaver:
            continue
        assert leaver.self_id not in {p["id"] for p in s.get_participants()}
