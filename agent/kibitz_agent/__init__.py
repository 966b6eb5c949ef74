"""Kibitz agents: join a room from CPython over the same signaling and WebRTC channels (aiortc)."""
