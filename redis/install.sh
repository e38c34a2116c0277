#!/bin/sh
# Installs redis-server (and redis-cli) for wshub-redis's tests when missing.
set -eu
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
$SUDO apt-get update
$SUDO apt-get install -y redis-server
