"""The cluster's part of /metrics: this node's counters and the service view (every live node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster


def render_cluster(c: Cluster) -> str:
    lines = [
        "# HELP kibitz_cluster_up 1 while this node reaches Redis.",
        "# TYPE kibitz_cluster_up gauge",
        f"kibitz_cluster_up {int(c.up)}",
    ]

    def counter(name: str, help_: str, value: int) -> None:
        lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {value}"])

    counter("kibitz_cluster_cross_node_sent_total", "Frames this node published to other nodes.",
            c.cross_out)
    counter("kibitz_cluster_cross_node_received_total", "Frames delivered here from other nodes.",
            c.cross_in)
    counter("kibitz_cluster_redis_errors_total", "Redis commands that failed.", c.redis_errors)
    counter("kibitz_cluster_reasserts_total", "Times this node wrote its ids back after an outage.",
            c.reasserts)
    counter("kibitz_cluster_kicks_total", "Ids here closed because they were taken over elsewhere.",
            c.kicks)
    counter("kibitz_cluster_lost_ids_total", "Ids here closed because Redis named another owner.",
            c.lost_ids)
    lines += [
        "# HELP kibitz_cluster_outbox Frames waiting to be sent to other nodes.",
        "# TYPE kibitz_cluster_outbox gauge",
        f"kibitz_cluster_outbox {len(c.frames.outbox)}",
        "# HELP kibitz_cluster_nodes Live nodes in the service (this node's view).",
        "# TYPE kibitz_cluster_nodes gauge",
        f"kibitz_cluster_nodes {len(c.view)}",
        "# HELP kibitz_cluster_node_peers Peers per live node (at its last heartbeat).",
        "# TYPE kibitz_cluster_node_peers gauge",
    ]
    for node, info in sorted(c.view.items()):
        lines.append(f'kibitz_cluster_node_peers{{node="{node}"}} {int(info.get("peers", 0))}')
    lines += [
        "# HELP kibitz_cluster_node_cross_node_messages_total Frames per live node and direction.",
        "# TYPE kibitz_cluster_node_cross_node_messages_total counter",
    ]
    for node, info in sorted(c.view.items()):
        for key, direction in (("cross_out", "sent"), ("cross_in", "received")):
            lines.append(
                f'kibitz_cluster_node_cross_node_messages_total{{node="{node}",direction="{direction}"}} '
                f"{int(info.get(key, 0))}"
            )
    lines += [
        "# HELP kibitz_cluster_self This node's id in the service.",
        "# TYPE kibitz_cluster_self gauge",
        f'kibitz_cluster_self{{node="{c.node}"}} 1',
    ]
    return "\n".join(lines) + "\n"
