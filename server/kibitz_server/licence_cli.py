"""``kibitz licence add | revoke | list | usage``: the operator's side of the relay's licence store.

The store is the one ``kibitz serve --turn-gate licence`` reads (``<state-dir>/licences.sqlite3``),
so a licence added here works at once, and a revoked one (with every room grant it minted) stops
at once, with the server running. ``add`` prints the token exactly once: only its hash is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from .config import make_config
from .grants import licence_hash, licence_sub, new_licence_token
from .licences import Licence, LicenceStore, month_of


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


async def _add(store: LicenceStore, cap: int | None, label: str) -> str:
    token = new_licence_token()
    digest = licence_hash(token)
    await store.add(Licence(licence_sub(digest), digest, label, cap, time.time()))
    return token


async def _run(args: argparse.Namespace, store: LicenceStore) -> int:
    command = args.licence_command
    if command == "add":
        if args.monthly_cap is not None and args.monthly_cap < 0:
            print("kibitz licence add: --monthly-cap must be 0 or more", file=sys.stderr)
            return 2
        token = await _add(store, args.monthly_cap, args.label)
        cap = "no cap" if args.monthly_cap is None else f"{args.monthly_cap} relay credentials a month"
        print(f"licence {licence_sub(licence_hash(token))} added ({cap}).", file=sys.stderr)
        print("Give this token to its holder; it is shown only now (the server keeps a hash):",
              file=sys.stderr)
        print(token, flush=True)
        return 0
    if command == "revoke":
        if await store.revoke(args.id, time.time()):
            print(f"licence {args.id} revoked; it and its room grants get no relay from now on")
            return 0
        found = await store.by_id(args.id)
        why = "is already revoked" if found is not None else "is not known (see `kibitz licence list`)"
        print(f"kibitz licence revoke: {args.id} {why}", file=sys.stderr)
        return 1
    if command == "list":
        licences = await store.all()
        print(f"{'id':<16}  {'cap/month':>9}  {'created':<20}  {'revoked':<20}  label")
        for lic in licences:
            cap = "-" if lic.monthly_cap is None else str(lic.monthly_cap)
            print(f"{lic.id:<16}  {cap:>9}  {_when(lic.created):<20}  {_when(lic.revoked):<20}  {lic.label}")
        return 0
    if command == "usage":
        month = args.month
        if month is not None and (len(month) != 7 or month[4] != "-" or not month.replace("-", "").isdigit()):
            print("kibitz licence usage: --month is YYYY-MM", file=sys.stderr)
            return 2
        caps = {lic.id: lic for lic in await store.all()}
        rows = await store.usage(month)
        print(f"{'month':<7}  {'id':<16}  {'credentials':>11}  {'cap':>9}  label")
        for row in rows:
            owner = caps.get(row.licence_id)
            cap = "-" if owner is None or owner.monthly_cap is None else str(owner.monthly_cap)
            label = owner.label if owner is not None else "(deleted)"
            print(f"{row.month:<7}  {row.licence_id:<16}  {row.credentials:>11}  {cap:>9}  {label}")
        if not rows:
            print(f"(no relay credentials metered{'' if month is None else ' in ' + month};"
                  f" this month is {month_of(time.time())})")
        return 0
    raise AssertionError(command)


def licence_main(args: argparse.Namespace) -> int:
    try:
        config = make_config(
            getattr(args, "config", None), state_dir=getattr(args, "state_dir", None),
            redis_url=getattr(args, "redis", None) or os.environ.get("KIBITZ_REDIS_URL") or None,
        )
    except (ValueError, OSError) as exc:
        print(f"kibitz licence: bad configuration: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        from .app import licence_store

        store = licence_store(config)
        try:
            return await _run(args, store)
        finally:
            await store.close()

    return asyncio.run(main())
