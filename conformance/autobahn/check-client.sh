#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingserver (client mode) against wshub's sans-IO
# reconnecting client (adapters/blocking/examples/autobahn_client.rs), compared
# with expected-client-results.json. Fails on any regression.
#
# usage: conformance/autobahn/check-client.sh [--update]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$ROOT/target/autobahn-venv}"
if [ ! -x "$AUTOBAHN_VENV/bin/wstest" ]; then
  echo "==> installing Autobahn|Testsuite into $AUTOBAHN_VENV"
  bash "$HERE/install.sh"
fi
cargo build -q --manifest-path "$ROOT/Cargo.toml" -p wshub-blocking --example autobahn_client
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out="$ROOT/target/autobahn/client"
rm -rf "$out"
echo "==> Autobahn fuzzingserver against the wshub client"
bash "$HERE/run-client-suite.sh" --port "$port" --timeout 600 --outdir "$out" -- \
  "$ROOT/target/debug/examples/autobahn_client" '{URL}' || true
if [ "${1:-}" = --update ]; then
  exec python3 "$HERE/compare.py" --update "$out/reports/index.json" "$HERE/expected-client-results.json"
fi
exec python3 "$HERE/compare.py" --nonstrict-is-ok "$out/reports/index.json" "$HERE/expected-client-results.json"
