"""``kibitz agent run path/to/agent.py --room R [--server S]``: run an agent file in a room.

The file defines ``async def main(agent)`` (or ``agent_main``). The CLI creates the
:class:`~kibitz.agent.Agent`, joins, prints ``KIBITZ_AGENT_READY <member-id> room=<room>`` once the
agent is on the roster, and runs ``main`` until it returns, the agent is removed from the room, or
the process gets Ctrl-C / SIGTERM; the agent always leaves with a clean goodbye.

Optional module constants describe the agent: ``NAME`` (default: the file's stem), ``BACKEND``
(default ``"none"``) and ``EGRESS`` (default ``False``).

Arguments the CLI does not know are the agent's own: the file defines ``setup(argv) -> dict`` to
parse them (raise ``SystemExit`` or ``ValueError`` to refuse them). The dict may set ``name`` and
``meta`` (added to the roster meta); all of it reaches ``main(agent, options)`` when ``main`` takes
a second parameter. Without ``setup``, unknown arguments are an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

from .agent import DEFAULT_SERVER, Agent, AgentJoinError

log = logging.getLogger("kibitz.agent")

AgentMain = Callable[..., Coroutine[Any, Any, Any]]


class AgentFileError(Exception):
    """The agent file cannot be loaded or defines no ``async def main(agent)``."""


def load_agent_file(path: str | Path) -> tuple[ModuleType, AgentMain]:
    """Import ``path`` as a module and return it with its ``main``/``agent_main`` coroutine function."""
    file = Path(path)
    if not file.is_file():
        raise AgentFileError(f"no agent file at {file}")
    spec = importlib.util.spec_from_file_location(f"kibitz_agent_file_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise AgentFileError(f"cannot import {file} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise AgentFileError(f"importing {file} failed: {exc!r}") from exc
    for attr in ("main", "agent_main"):
        fn = getattr(module, attr, None)
        if fn is not None and inspect.iscoroutinefunction(fn):
            return module, fn
    raise AgentFileError(f"{file} must define `async def main(agent)` (or `async def agent_main(agent)`)")


async def run_agent(main: AgentMain, agent: Agent, *, announce: bool = True) -> None:
    """Join with ``agent``, run ``main(agent)`` until it returns or the agent closes, then leave."""
    async with agent:
        if announce:
            print(f"KIBITZ_AGENT_READY {agent.id} room={agent.room}", flush=True)
        work = asyncio.ensure_future(main(agent))
        closed = asyncio.ensure_future(agent.wait_closed())
        try:
            await asyncio.wait({work, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, closed):
                task.cancel()
            for task in (work, closed):
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # re-raises main's own exception, after the agent has left
            await agent.drain()


def _secret(path: str | None, env: str) -> str | None:
    """A secret from a file or the environment: never from a flag (argv is readable by anyone)."""
    if path:
        return Path(path).read_text(encoding="utf-8").strip() or None
    return os.environ.get(env) or None


def agent_options(module: ModuleType, argv: list[str]) -> dict[str, Any]:
    """The agent's own arguments, parsed by its ``setup(argv)``; ValueError when it refuses them."""
    setup = getattr(module, "setup", None)
    if setup is None:
        if argv:
            raise ValueError(f"unrecognized arguments: {' '.join(argv)} (the agent file has no setup(argv))")
        return {}
    try:
        options = setup(list(argv))
    except SystemExit as exc:  # argparse inside setup() has printed its message
        raise ValueError(f"the agent's setup refused its arguments (exit {exc.code})") from exc
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError("setup(argv) must return a dict (or None)")
    return options


def _takes_options(main: AgentMain) -> bool:
    try:
        return len(inspect.signature(main).parameters) >= 2
    except (TypeError, ValueError):
        return False


def agent_main(args: argparse.Namespace) -> int:
    """Entry point for ``kibitz agent run``; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        module, main = load_agent_file(args.path)
    except AgentFileError as exc:
        print(f"kibitz agent: {exc}", file=sys.stderr)
        return 2
    try:
        if not (getattr(args, "room", None) or getattr(args, "link", None)):
            raise ValueError("give the room with --room or its link with --link")
        options = agent_options(module, list(getattr(args, "agent_args", None) or []))
        meta = options.get("meta")
        agent = Agent(
            server=getattr(args, "server", None) or DEFAULT_SERVER,
            room=getattr(args, "room", None) or "",
            name=str(options.get("name") or getattr(module, "NAME", None) or Path(args.path).stem),
            backend=str(getattr(module, "BACKEND", "none")),
            egress=bool(getattr(module, "EGRESS", False)),
            link=getattr(args, "link", None),
            join_credential=_secret(getattr(args, "credential_file", None), "KIBITZ_JOIN_CREDENTIAL"),
            host_key=_secret(getattr(args, "host_key_file", None), "KIBITZ_HOST_KEY"),
            meta=meta if isinstance(meta, dict) else None,
            galaxy=getattr(args, "galaxy", None) or os.environ.get("KIBITZ_GALAXY") or None,
        )
    except (ValueError, OSError) as exc:
        print(f"kibitz agent: {exc}", file=sys.stderr)
        return 2
    if _takes_options(main):
        takes_options = main

        async def main_with_options(agent: Agent) -> Any:
            return await takes_options(agent, options)

        main = main_with_options

    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
        await run_agent(main, agent)

    try:
        asyncio.run(runner())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 0
    except AgentJoinError as exc:
        print(f"kibitz agent: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a malformed --server
        print(f"kibitz agent: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("the agent's main failed")
        return 1
    return 0


__all__ = ["AgentFileError", "agent_main", "agent_options", "load_agent_file", "run_agent"]
