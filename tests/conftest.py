"""Fixtures shared by unit and e2e tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_fixture import KibitzServer, running_kibitz_server


@pytest.fixture(scope="session")
def kibitz_server() -> Iterator[KibitzServer]:
    """``kibitz serve`` in a subprocess on 127.0.0.1 (free ports), shared by the session.

    Yields a KibitzServer: ``.http`` ("http://127.0.0.1:PORT"), ``.broker`` ("ws://127.0.0.1:PORT2/"),
    ``.key``, ``.broker_host``/``.broker_port``/``.broker_path`` and ``.peerjs_options()``.
    """
    with running_kibitz_server() as srv:
        yield srv
