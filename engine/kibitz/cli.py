"""The ``kibitz`` command: ``kibitz serve`` runs the self-hosted edge, ``kibitz agent run`` an agent."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kibitz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the engine version")
    serve = sub.add_parser("serve", help="run the signaling broker, HTTP endpoints and demo page")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default 8787; 0 = any free)")
    serve.add_argument("--key", default=None, help="broker key clients must present (default peerjs)")
    serve.add_argument("--config", help="TOML/JSON config file")
    serve.add_argument("--broker-port", type=int, default=None, help="broker port (default: --port + 1)")
    serve.add_argument("--dist", default=None, help="bundle directory to serve (default: the repo's dist/)")
    serve.add_argument("--alive-timeout", type=float, default=None, help="seconds without HEARTBEAT")
    serve.add_argument("--expire-timeout", type=float, default=None, help="seconds to hold offline msgs")
    serve.add_argument("--turn-url", action="append", default=None,
                       help="TURN relay URL handed out by /api/turn (repeatable), e.g. turn:host:3478")
    serve.add_argument("--turn-secret-file", default=None,
                       help="file with the relay's shared secret (or set $KIBITZ_TURN_SECRET)")
    serve.add_argument("--turn-ttl", type=float, default=None, help="TURN credential lifetime, s (3600)")
    agent = sub.add_parser("agent", help="agents: run an agent file in a room")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    run = agent_sub.add_parser("run", help="run path/to/agent.py in a room")
    run.add_argument("path")
    run.add_argument("--room", required=True)
    run.add_argument("--server", default="http://127.0.0.1:8787")
    args = parser.parse_args(argv)

    if args.command == "version":
        from kibitz import __version__

        print(__version__)
        return 0
    if args.command == "serve":
        try:
            from kibitz.server.app import serve_main  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            print(f"kibitz serve is unavailable: {exc}", file=sys.stderr)
            return 2
        return int(serve_main(args))
    if args.command == "agent":
        try:
            from kibitz.agent.cli import agent_main  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            print(f"kibitz agent is unavailable: {exc}", file=sys.stderr)
            return 2
        return int(agent_main(args))
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
