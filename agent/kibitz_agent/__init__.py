"""Kibitz agents: join a room from CPython over the same signaling and WebRTC channels (aiortc).

``async with kibitz.agent.Agent(server=..., room=..., name=...) as agent:`` — see docs/agents.md.
aiortc is imported only when an agent starts, so importing this package stays cheap.
"""

from .agent import DEFAULT_SERVER, Agent, AgentJoinError, agent_identity_nonce, is_loopback, resolve_broker

__all__ = [
    "DEFAULT_SERVER",
    "Agent",
    "AgentJoinError",
    "agent_identity_nonce",
    "is_loopback",
    "resolve_broker",
]
