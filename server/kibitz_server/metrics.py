"""Counters for the broker, rendered as Prometheus text. Plain attributes: the hot path only adds."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """What an operator needs: how many peers, how much relayed, what was dropped and why."""

    __slots__ = (
        "connected",
        "connections_total",
        "drops",
        "expired",
        "leaves_sent",
        "queued",
        "rejected",
        "relayed",
        "takeovers",
    )

    def __init__(self) -> None:
        self.connected = 0
        self.connections_total = 0
        self.relayed = 0
        self.queued = 0
        self.expired = 0
        self.leaves_sent = 0
        self.takeovers = 0
        self.drops: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n

    def render(self) -> str:
        lines = [
            "# HELP kibitz_broker_connected_peers Peers with an open broker socket.",
            "# TYPE kibitz_broker_connected_peers gauge",
            f"kibitz_broker_connected_peers {self.connected}",
        ]

        def counter(name: str, help_: str, value: int) -> None:
            lines.extend(
                [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"]
            )

        counter("kibitz_broker_connections_total", "Peers registered (OPEN sent).", self.connections_total)
        counter("kibitz_broker_messages_relayed_total", "Signaling messages delivered.", self.relayed)
        counter("kibitz_broker_messages_queued_total", "Messages held for an offline id.", self.queued)
        counter("kibitz_broker_messages_expired_total", "Queued messages that expired.", self.expired)
        counter("kibitz_broker_leaves_sent_total", "LEAVE notices sent on disconnect.", self.leaves_sent)
        counter("kibitz_broker_takeovers_total", "Same id+token reconnects that took over.", self.takeovers)
        lines += [
            "# HELP kibitz_broker_drops_total Frames dropped, by reason.",
            "# TYPE kibitz_broker_drops_total counter",
        ]
        lines += [f'kibitz_broker_drops_total{{reason="{r}"}} {n}' for r, n in sorted(self.drops.items())]
        lines += [
            "# HELP kibitz_broker_rejected_connections_total Sockets refused, by reason.",
            "# TYPE kibitz_broker_rejected_connections_total counter",
        ]
        lines += [
            f'kibitz_broker_rejected_connections_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.rejected.items())
        ]
        return "\n".join(lines) + "\n"
