"""The wire protocol: every message Kibitz peers exchange, as validated pydantic models.

- :mod:`kibitz.protocol.presence`: participant ↔ coordinator (star, over the presence link).
- :mod:`kibitz.protocol.content`: peer ↔ peer content over the data mesh (never the coordinator).
"""

from kibitz.protocol.base import MAX_FRAME_BYTES, PROTOCOL_VERSION, DropCounter, WireModel, decode, encode

__all__ = ["MAX_FRAME_BYTES", "PROTOCOL_VERSION", "DropCounter", "WireModel", "decode", "encode"]
