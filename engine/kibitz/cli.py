"""The ``kibitz`` command: ``kibitz serve`` runs the self-hosted edge, ``kibitz hub`` a LAN hub for
rooms with no internet, ``kibitz licence`` manages its relay licences, ``kibitz room new`` makes a
room with settings, ``kibitz agent run`` runs an agent."""

from __future__ import annotations

import argparse
import importlib
import sys

_EXTRAS: dict[str, tuple[str, str, str]] = {
    "serve": ("serve", "kibitz.server.app", "serve_main"),
    "licence": ("licence", "kibitz.server.licence_cli", "licence_main"),
    "license": ("licence", "kibitz.server.licence_cli", "licence_main"),
    "email": ("email", "kibitz.server.email_cli", "email_main"),
    "hub": ("hub", "kibitz.server.hub.app", "hub_main"),
    "agent": ("agent", "kibitz.agent.cli", "agent_main"),
}
"""Commands whose code lives in an optional extra: command -> (name, module, entry point)."""


def _run_extra(command: str, args: argparse.Namespace) -> int:
    """Run the command's ``module.entry(args)``, or say it is unavailable (its extra is missing)."""
    name, module, entry = _EXTRAS[command]
    try:
        run = getattr(importlib.import_module(module), entry)
    except ImportError as exc:
        print(f"kibitz {name} is unavailable: {exc}", file=sys.stderr)
        return 2
    return int(run(args))


def main(argv: list[str] | None = None) -> int:
    from kibitz import __version__

    parser = argparse.ArgumentParser(prog="kibitz", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kibitz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the engine version")
    serve = sub.add_parser("serve", help="run the signaling broker, HTTP endpoints and demo page")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default 8787; 0 = any free)")
    serve.add_argument("--key", default=None, help="broker key clients must present (default peerjs)")
    serve.add_argument("--config", help="TOML/JSON config file")
    serve.add_argument("--broker-port", type=int, default=None, help="broker port (default: --port + 1)")
    serve.add_argument("--dist", default=None,
                       help="bundle directory to serve (default: $KIBITZ_DIST, else the one inside the "
                            "installed wheel, else the checkout's dist/)")
    serve.add_argument("--alive-timeout", type=float, default=None, help="seconds without HEARTBEAT")
    serve.add_argument("--expire-timeout", type=float, default=None, help="seconds to hold offline msgs")
    serve.add_argument("--turn-url", action="append", default=None,
                       help="TURN relay URL handed out by /api/turn (repeatable), e.g. turn:host:3478")
    serve.add_argument("--turn-secret-file", default=None,
                       help="file with the relay's shared secret (or set $KIBITZ_TURN_SECRET)")
    serve.add_argument("--turn-ttl", type=float, default=None, help="TURN credential lifetime, s (3600)")
    serve.add_argument("--turn-gate", choices=("open", "licence"), default=None,
                       help="who gets relay credentials: open (anyone, default) or licence "
                            "(a licence or a room grant; the rest get --stun-url only)")
    serve.add_argument("--stun-url", action="append", default=None,
                       help="STUN URL for callers the gate gives no relay (repeatable), e.g. stun:host:3478")
    serve.add_argument("--state-dir", default=None,
                       help="server state: licences, room-grant key (default $KIBITZ_STATE_DIR or "
                            "~/.local/state/kibitz)")
    serve.add_argument("--grant-secret-file", default=None,
                       help="file with the key that signs room grants (or $KIBITZ_GRANT_SECRET; "
                            "default: <state-dir>/grant.key, made on first use)")
    serve.add_argument("--redis", default=None, metavar="redis://HOST:PORT/DB",
                       help="run as one node of a service of several on this Redis "
                            "(or set $KIBITZ_REDIS_URL, e.g. for a password)")
    serve.add_argument("--smtp", default=None, metavar="HOST:PORT",
                       help="turn on email sign-in (/api/email/*): the SMTP server that mails the codes")
    serve.add_argument("--smtp-from", default=None, help="From address of the code mails")
    serve.add_argument("--smtp-starttls", action="store_true", help="SMTP with STARTTLS")
    serve.add_argument("--smtp-user", default=None, help="SMTP login (password: --smtp-password-file)")
    serve.add_argument("--smtp-password-file", default=None,
                       help="file with the SMTP password (or set $KIBITZ_SMTP_PASSWORD)")
    serve.add_argument("--smtp-cafile", default=None, help="CA bundle for the SMTP server's certificate")
    serve.add_argument("--public-url", default=None,
                       help="this server's public URL: the issuer of its email tokens (default: the "
                            "origin each request came to)")
    lic = sub.add_parser("licence", aliases=["license"], help="relay licences: add, revoke, list, usage")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--state-dir", default=None, help="the server's state directory (as for serve)")
    where.add_argument("--config", help="TOML/JSON config file (for its state_dir)")
    where.add_argument("--redis", default=None, metavar="redis://HOST:PORT/DB",
                       help="the licences of a service of several nodes (as for serve; or $KIBITZ_REDIS_URL)")
    lic_sub = lic.add_subparsers(dest="licence_command", required=True)
    add = lic_sub.add_parser("add", parents=[where], help="make a licence; prints its token once")
    add.add_argument("--monthly-cap", type=int, default=None,
                     help="relay credentials per month for it and the rooms it sponsors (default: no cap)")
    add.add_argument("--label", default="", help="a note for you (who bought it); never sent anywhere")
    rev = lic_sub.add_parser("revoke", parents=[where],
                             help="revoke a licence by id (its room grants stop at once)")
    # A licence id is base64url and may begin with '-': argparse would take it for an option, so
    # the id is optional here and an unknown lone argument is taken as the id below.
    rev.add_argument("id", nargs="?", help="the licence's id, as `kibitz licence list` shows it")
    lic_sub.add_parser("list", parents=[where], help="list licences (ids, labels, caps; never the tokens)")
    use = lic_sub.add_parser("usage", parents=[where], help="relay credentials metered per licence and month")
    use.add_argument("--month", default=None, help="YYYY-MM (default: every month)")
    email = sub.add_parser("email", help="email sign-in: the signing keys of /api/email")
    email_sub = email.add_subparsers(dest="email_command", required=True)
    email_sub.add_parser("rotate-key", parents=[where],
                         help="a new signing key; old ones stay in the JWKS until their tokens expire")
    email_sub.add_parser("keys", parents=[where], help="list the signing keys (ids, dates)")
    try:
        from kibitz.server.hub.app import add_parser as add_hub_parser  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        hub = sub.add_parser("hub", help="run a LAN hub (needs the hub extra: aiortc, aiohttp, segno)")
        hub.set_defaults(hub_missing=True)
    else:
        add_hub_parser(sub)
    from kibitz.room_cli import add_parsers as add_room_parsers

    add_room_parsers(sub)
    agent = sub.add_parser("agent", help="agents: run an agent file in a room")
    agent_sub = agent.add_subparsers(dest="agent_command", required=True)
    run = agent_sub.add_parser("run", help="run path/to/agent.py in a room")
    run.add_argument("path")
    run.add_argument("--room", default=None, help="the room (or give --link)")
    run.add_argument("--link", default=None, help="the room's link: room, gate and an invite in one")
    run.add_argument("--server", default="http://127.0.0.1:8787")
    run.add_argument("--galaxy", default=None,
                     help="join through this LAN hub (the value kibitz hub prints; or $KIBITZ_GALAXY)")
    run.add_argument("--credential-file", default=None,
                     help="file: room code or invite (or $KIBITZ_JOIN_CREDENTIAL)")
    run.add_argument("--host-key-file", default=None, help="file: the room's host key (or $KIBITZ_HOST_KEY)")
    run.epilog = ("Arguments the CLI does not know (e.g. --watch S) go to the agent file's "
                  "setup(argv), if it defines one.")
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "licence_command", None) == "revoke" and args.id is None:
        if len(extra) != 1:
            parser.error("kibitz licence revoke needs one licence id")
        args.id = extra.pop()
    if extra and not (args.command == "agent" and getattr(args, "agent_command", None) == "run"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.agent_args = extra

    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "room":
        from kibitz.room_cli import room_main

        return room_main(args)
    if args.command in _EXTRAS:
        return _run_extra(args.command, args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
