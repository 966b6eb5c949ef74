#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (root, package registries only):
# Debian packages, the .venv with the project and its tools, npm packages, and the served bundle.
# Each step is skipped when its inputs have not changed since it last ran.
# `--tests` adds what only the tests need (coturn, the TURN relay the e2e tests run on loopback;
# redis-server, which the multi-node tests start on free ports: never the system service;
# iproute2, whose `ip netns` builds the offline-LAN and fault tests' private networks; nftables, with
# which the fault tests impair links; and firefox-esr, the second browser of the e2e suite).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

APT_PACKAGES=(chromium)
if [ "${1:-}" = "--tests" ]; then APT_PACKAGES+=(coturn redis-server iproute2 nftables firefox-esr); fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.kibitz-deps
want=$(cat pyproject.toml engine/kibitz/__init__.py | sha256sum | cut -d' ' -f1)  # the version lives in __init__
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[server,agent,hub,dev]"
  echo "$want" > "$stamp"
fi

if [ -f package.json ]; then
  nstamp=node_modules/.kibitz-deps
  nwant=$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
    echo "setup: installing npm packages"
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
    echo "$nwant" > "$nstamp"
  fi
fi

if [ -f build/build.py ]; then
  .venv/bin/python build/build.py
fi
