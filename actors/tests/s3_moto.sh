#!/usr/bin/env bash
# Runs the S3 backend's conformance subset (sync_s3.rs: external_server_conformance) against
# moto's S3 server, an implementation independent of the s3s server the other tests use.
# Installs moto into a venv under target/ (kept between runs), serves it on loopback, stops it.
# Skipped, with the reason printed, only when python3 is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "s3 conformance: skipped: python3 is not installed"
  exit 0
fi
venv=target/moto-venv
if [ ! -x "$venv/bin/moto_server" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
endpoint="http://127.0.0.1:$port"
# Ready within 30 s, then the test bucket.
for _ in $(seq 1 60); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$endpoint/moto-api/')" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
"$venv/bin/python" - "$endpoint" <<'PY'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/transfers", method="PUT")
urllib.request.urlopen(req, timeout=10).read()
PY
# The same package and feature selection as the workspace run (.ci/test), so that nothing is
# compiled again: the root crate's sync_s3 has no test of that name and runs none.
HERMES_S3_EXTERNAL_ENDPOINT="$endpoint" cargo test --workspace --all-features --test sync_s3 -- \
  --ignored --exact external_server_conformance
