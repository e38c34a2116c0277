#!/usr/bin/env bash
# Runs every test wshub has, on a fresh machine of this kind. Installs what it
# needs that a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "MSRV: one rust-version, inherited by every crate, no dependency above it (clippy checks std APIs against it)"
./scripts/check-msrv.py

step "lint (clippy, warnings are errors; core/clippy.toml bans clocks in the core)"
cargo clippy --workspace --all-targets -- -D warnings

step "design guard: the core does no I/O, spawns nothing, needs no runtime (clocks: core/clippy.toml)"
if grep -rnE 'std::net|std::fs|std::thread|std::process|tokio|smol|async_io' core/src | grep -vE '^[^:]+:[0-9]+:\s*//'; then
  echo "the core must stay pure (see ../shared/DESIGN.md)"; exit 1
fi
if grep -nE '^(tokio|smol|async-io|async-std|mio|polling)\b' core/Cargo.toml; then
  echo "the core must not depend on a runtime"; exit 1
fi

step "tests (installs Chromium, node and playwright-core for the browser tests, and redis-server for the broker tests, on first use)"
./tests/browser/install.sh
./redis/install.sh
cargo test --workspace --all-targets
cargo test --workspace --doc

step "fuzzing: every cargo-fuzz target for 60 s on stable (installs cargo-fuzz on first use; fuzz/run.sh 3600 for an hour)"
./fuzz/run.sh 60

step "conformance: Autobahn|Testsuite (cases 1-13) against every runtime's echo mode"
# Installs the suite into target/autobahn-venv on first use (Python 2.7 from pyenv).
./conformance/autobahn/check.sh

step "conformance: Autobahn|Testsuite fuzzingserver against the sans-IO client"
./conformance/autobahn/check-client.sh
