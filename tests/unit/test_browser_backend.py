"""kibitz.backends.browser under CPython: importable without ``js``, and the page-session dispatch."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from kibitz.backends import browser


def test_imports_without_pyodide() -> None:
    assert "js" not in sys.modules and "pyodide" not in sys.modules
    assert browser.ws_base_of("http://127.0.0.1:8787/") == "ws://127.0.0.1:8787/"
    assert browser.ws_base_of("https://kibitz.example/x/") == "wss://kibitz.example/x/"
    assert browser.ws_base_of("ws://h/") == "ws://h/"
    with pytest.raises(ValueError):
        browser.ws_base_of("ftp://h/")


def _session(room: str = "Room 3f9k") -> browser.PageSession:
    return browser.open_session(json.dumps({"room": room, "name": "Dana"}), lambda *a: None)


async def test_session_dispatches_to_handlers() -> None:
    s = _session()
    assert s.room_id == "kbz-v1-room-3f9k"
    seen: list[Any] = []

    async def join(opts: dict[str, Any]) -> str:
        seen.append(opts)
        return "joined"

    s.handlers["join"] = join
    s.handlers["setName"] = lambda name: seen.append(name)
    assert await s.call("join", [{"mic": False}]) == "joined"
    assert await s.call("setName", ["Robo"]) is None
    assert seen == [{"mic": False}, "Robo"]
    with pytest.raises(NotImplementedError, match="toggleMic"):
        await s.call("toggleMic", [])
    # broadcast / sendTo are no-ops (counted) until the room wires them.
    assert await s.call("broadcast", [{"x": 1}]) is None
    assert s.dropped == 1
    closed: list[int] = []
    s.on_close(lambda: closed.append(1))
    s.close()
    s.close()
    assert closed == [1]
    with pytest.raises(RuntimeError, match="after unmount"):
        await s.call("join", [{}])


def test_session_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        _session("!!!")
    with pytest.raises(TypeError):
        browser.open_session("[1, 2]", lambda *a: None)
