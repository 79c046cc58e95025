#!/usr/bin/env bash
# Install the peer tools the benchmark compares emberkeep against (restic, borg).
# Idempotent: does nothing when both are already on PATH; runs `apt-get update`
# at most once, and only when a package is missing. Safe to run repeatedly.
set -euo pipefail

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v borg >/dev/null 2>&1 || missing+=(borgbackup)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "bench/setup.sh: restic and borg already installed"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists once, and only when apt does not know a candidate for
    # every missing package (fresh containers often ship with empty or stale lists).
    need_update=0
    for pkg in "${missing[@]}"; do
        candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            need_update=1
        fi
    done
    if [ "$need_update" -eq 1 ]; then
        $SUDO apt-get update
    fi
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

restic version
borg --version

# The emberkeep CLI comes from the project's own venv (pip install -e .).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/emberkeep" ]; then
    echo "emberkeep: $ROOT/.venv/bin/emberkeep"
else
    echo "note: $ROOT/.venv/bin/emberkeep not found; run 'pip install -e .' in the venv" \
         "or pass --emberkeep PATH to bench/run.py" >&2
fi
