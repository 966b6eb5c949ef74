"""The self-hosted edge: PeerJS-compatible signaling broker and HTTP endpoints (content-blind)."""
