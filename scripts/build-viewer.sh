#!/usr/bin/env bash
# Builds the browser viewer (frontend/) into frontend/dist, which Django serves as
# static/viewer/. Installs Node.js from Debian when it is missing, and the npm packages
# as pinned in package-lock.json when it changed. Not `npm ci`: it refuses a lock
# whose optional packages for other platforms the registry mirror lacks.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../frontend"
log() { echo "build-viewer.sh: $*" >&2; }

if ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends nodejs npm
fi

INSTALLED=node_modules/.radpacs-installed
if [[ ! -f $INSTALLED || package-lock.json -nt $INSTALLED || package.json -nt $INSTALLED ]]; then
    log "npm install (versions from package-lock.json)"
    npm install --no-save --no-audit --no-fund --loglevel=error
    touch "$INSTALLED"
fi

log "vite build"
npm run --silent build -- --logLevel warn 2>&1 | { grep -v 'externalized for browser compatibility' || true; }
touch dist/.built
