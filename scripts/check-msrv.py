#!/usr/bin/env python3
"""Checks the workspace's one MSRV.

Only one Rust toolchain exists on this kind of machine, so the MSRV cannot be
proven by building with an older rustc. What can be checked:

1. every workspace member inherits the workspace's `rust-version` (one MSRV);
2. no package in the lock file (dependencies of every member, dev and build
   ones included) declares a `rust-version` above it, since cargo would refuse
   to build that package on the declared toolchain.

The third leg, std APIs newer than the MSRV used in our own code, is clippy's
`incompatible_msrv` lint, which reads the same `rust-version` and runs with
`-D warnings` in scripts/test-all.sh.
"""

import json
import subprocess
import sys


def version(text):
    """"1.88" and "1.88.0" compare equal."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def shown(v):
    return ".".join(map(str, v[:2] if v[2] == 0 else v))


def main():
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(meta["workspace_members"])
    declared = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in members}
    msrvs = set(declared.values())
    failures = []
    if len(msrvs) != 1 or None in msrvs:
        failures.append(f"workspace members declare different rust-versions: {declared}")
    msrv = max((version(v) for v in msrvs if v), default=(0, 0, 0))
    for p in meta["packages"]:
        if p["id"] in members or not p.get("rust_version"):
            continue
        if version(p["rust_version"]) > msrv:
            failures.append(
                f"{p['name']} {p['version']} needs rustc {p['rust_version']}, "
                f"above the workspace's {shown(msrv)}"
            )
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"MSRV {shown(msrv)}: {len(members)} members inherit it; no dependency needs more")


if __name__ == "__main__":
    main()
