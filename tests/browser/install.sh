#!/bin/sh
# Installs what the headless-browser tests (cargo test --test browser) need
# on a Debian machine: the `chromium` package, node and npm (from apt when
# missing), and playwright-core (pinned in package-lock.json) into
# tests/browser/node_modules. No browser is downloaded by npm. Idempotent:
# when everything is present it only checks, in well under a second.
set -eu
cd "$(dirname "$0")"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

packages=""
[ -x /usr/bin/chromium ] || packages="$packages chromium"
command -v node >/dev/null 2>&1 || packages="$packages nodejs"
command -v npm >/dev/null 2>&1 || packages="$packages npm"
if [ -n "$packages" ]; then
    echo "install.sh: apt-get install$packages"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages
fi

node -e 'if (+process.versions.node.split(".")[0] < 18) { console.error("install.sh: node >= 18 needed, found " + process.version); process.exit(1) }'

# Install (again) only when node_modules lacks the version package-lock.json pins.
want=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$want" != "$have" ]; then
    echo "install.sh: npm ci (playwright-core $want)"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

echo "install.sh: ready ($(/usr/bin/chromium --version 2>/dev/null || echo chromium), node $(node --version), playwright-core $want)"
