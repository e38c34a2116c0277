#!/bin/sh
# Creates (or reuses) the Python venv the real-client tests use and installs
# tests/python/requirements.txt into it. Idempotent and safe to run
# concurrently: the work is done under a lock, and skipped when the venv
# already holds exactly these requirements.
#
# Usage: tests/python/setup.sh [venv-dir]   (default: <repo>/target/pyvenv)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${1:-$repo/target/pyvenv}
req=$here/requirements.txt
python=${PYTHON:-python3}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh: $python is older than 3.11 (websockets 17 needs 3.11)" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

stamp=$venv/.requirements.txt
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
    exit 0
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "python venv ready at $venv"
