#!/usr/bin/env bash
# Autobahn|Testsuite against wshub's echo mode, compared with the expected
# results checked in beside this script. Fails on any regression: a case whose
# behaviour got worse than expected, a close handshake that got worse, or a
# missing case.
#
# usage: conformance/autobahn/check.sh [--update] [RUNTIME ...]   (default: every runtime)
#
# Cases 1-10 (core and performance) must be OK, NON-STRICT or INFORMATIONAL;
# 12-13 (permessage-deflate) are UNIMPLEMENTED for now.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$ROOT/target/autobahn-venv}"

UPDATE=0
RUNTIMES=()
for a in "$@"; do
  case "$a" in
    --update) UPDATE=1 ;;
    *) RUNTIMES+=("$a") ;;
  esac
done
[ ${#RUNTIMES[@]} -gt 0 ] || RUNTIMES=($("$ROOT/target/debug/wshub" runtimes 2>/dev/null || echo blocking))

if [ ! -x "$AUTOBAHN_VENV/bin/wstest" ]; then
  echo "==> installing Autobahn|Testsuite into $AUTOBAHN_VENV"
  bash "$HERE/install.sh"
fi

cargo build -q --manifest-path "$ROOT/Cargo.toml" --bin wshub
status=0
for rt in "${RUNTIMES[@]}"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$ROOT/target/debug/wshub" serve --echo --no-auth --runtime "$rt" --listen "127.0.0.1:$port" 2>/tmp/wshub-autobahn-$rt.log &
  pid=$!
  for _ in $(seq 50); do
    if (: < /dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
    sleep 0.1
  done
  out="$ROOT/target/autobahn/$rt"
  rm -rf "$out"
  echo "==> Autobahn fuzzingclient against the $rt runtime"
  # The suite's own verdict is not the gate: the expected file is.
  bash "$HERE/run-server-suite.sh" --outdir "$out" --agent "wshub-$rt" "ws://127.0.0.1:$port/ws" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  expected="$HERE/expected-results.json"
  if [ "$UPDATE" = 1 ]; then
    python3 "$HERE/compare.py" --update "$out/reports/index.json" "$expected"
  elif ! python3 "$HERE/compare.py" "$out/reports/index.json" "$expected"; then
    status=1
  fi
done
exit $status
