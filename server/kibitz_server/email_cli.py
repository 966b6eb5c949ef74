"""``kibitz email rotate-key`` and ``kibitz email keys``: the signing keys of email sign-in.

They act on ``<state-dir>/email-signing-keys.json``, the file ``kibitz serve --smtp …`` signs with; a
running server notices the change on its next request, so a rotation needs no restart.
"""

from __future__ import annotations

import argparse
import sys
import time

from .config import make_config
from .email_keys import KEEP_AFTER_RETIRED_S, EmailKeys


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def email_main(args: argparse.Namespace) -> int:
    try:
        config = make_config(getattr(args, "config", None), state_dir=getattr(args, "state_dir", None))
        keys = EmailKeys(config.email_keys_path)
        if args.email_command == "rotate-key":
            fresh = keys.rotate()
            print(f"KIBITZ_EMAIL_KID={fresh.kid}")
            print(f"# new signing key {fresh.kid}; retired keys stay in the JWKS for "
                  f"{KEEP_AFTER_RETIRED_S:.0f} s", file=sys.stderr)
            return 0
        now = time.time()
        current = keys.current(now)
        for k in keys.keys(now):
            state = "signing" if k is current else (f"retired {_when(k.retired)}" if k.retired else "unused")
            print(f"{k.kid}\tcreated {_when(k.created)}\t{state}")
        return 0
    except (ValueError, OSError) as exc:
        print(f"kibitz email: {exc}", file=sys.stderr)
        return 2


__all__ = ["email_main"]
