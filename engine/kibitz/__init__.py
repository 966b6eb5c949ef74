"""Kibitz: an account-free peer-to-peer call + collaboration engine.

The core (protocol, room, mesh, capabilities) is sans-I/O: time, randomness and I/O arrive through
the small interfaces in :mod:`kibitz.clock` and :mod:`kibitz.transport`, so the same code runs in
the page (Pyodide), in CPython agents (asyncio + aiortc) and on the in-memory bus in tests.
"""

from kibitz.ids import room_peer_id

__all__ = ["room_peer_id"]
#: The one place the version is written (semver): pyproject.toml reads it, build/build.py stamps it
#: into widget.js (``Kibitz.version``), the page's engine wheel and the npm package.
__version__ = "0.1.0"
