#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 60) on stable
# Rust (`-s none`: no sanitizer, so no nightly flags), failing on any crash.
#
#   fuzz/run.sh [SECONDS]
#   SANITIZER=address fuzz/run.sh 30   # ASan on stable, via RUSTC_BOOTSTRAP=1
#
# The committed corpus (fuzz/corpus/<target>/) only seeds the runs: new
# inputs go to a scratch directory, so a run leaves the tree clean unless it
# crashes. Crash inputs land in fuzz/artifacts/<target>/ (see README.md).
set -euo pipefail

secs="${1:-60}"
sanitizer="${SANITIZER:-none}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if [ "$sanitizer" != none ]; then
    # Stable ships the sanitizer runtimes; only the -Z flag needs this.
    export RUSTC_BOOTSTRAP=1
fi

targets=$(cargo fuzz list)
echo "== building: $(echo $targets)"
start=$SECONDS
cargo fuzz build -s "$sanitizer"
echo "== built in $((SECONDS - start))s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in $targets; do
    mkdir -p "$work/$t" "corpus/$t"
    if cargo fuzz run -s "$sanitizer" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        >"$work/$t.log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$t")
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log")
    printf '== %-10s %-6s %12s execs %10s execs/s\n' "$t" "$result" "${runs:-?}" "${rate:-?}"
    if [ "$result" = FAILED ]; then
        grep -A4 -E "panicked|ERROR: libFuzzer|Failing input" "$work/$t.log" | head -40 || tail -40 "$work/$t.log"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "== crashes in: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi
echo "== all targets ran ${secs}s without a crash"
