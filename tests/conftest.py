"""Fixtures shared by unit and e2e tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "whist"))  # the whist package

from redis_fixture import RedisServer, running_redis
from server_fixture import KibitzServer, running_kibitz_server


@pytest.fixture(scope="session")
def kibitz_server() -> Iterator[KibitzServer]:
    """``kibitz serve`` in a subprocess on 127.0.0.1 (free ports), shared by the session.

    Yields a KibitzServer: ``.http`` ("http://127.0.0.1:PORT"), ``.broker`` ("ws://127.0.0.1:PORT2/"),
    ``.key``, ``.broker_host``/``.broker_port``/``.broker_path`` and ``.peerjs_options()``.
    """
    with running_kibitz_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real ``redis-server`` on a free port for the whole session (started on first use).
    Tests that share it keep to a key prefix of their own."""
    with running_redis() as r:
        yield r
