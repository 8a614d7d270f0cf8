#!/usr/bin/env bash
# Full test run: lint, migrations check and pytest against a throw-away
# PostgreSQL cluster. Extra arguments go to pytest (make test ARGS="-k foo").
# Installs the Debian packages it needs, so it works on a fresh machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${VENV:-.venv}/bin"
if [[ ! -x "$BIN/python" ]]; then
    echo "test.sh: no venv at $BIN; run 'make test' (it creates it)" >&2
    exit 2
fi
export PATH="$PWD/$BIN:$PATH"

log() { echo "test.sh: $*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi

pg_bindir() {
    # Highest installed major version wins.
    local dirs
    dirs=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' || true)
    [[ -n $dirs ]] || return 1
    dirname "$(sort -V <<<"$dirs" | tail -n 1)"
}

ensure_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v chromium >/dev/null || missing+=(chromium)
    # pynetdicom puts its own storescu in the venv: look for dcmtk's where apt puts it.
    [[ -x /usr/bin/storescu ]] || missing+=(dcmtk)
    pg_bindir >/dev/null || missing+=(postgresql)
    # PDFs (WeasyPrint): Pango, and a font with glyphs beyond Latin.
    compgen -G '/usr/lib/*/libpangoft2-1.0.so.0' >/dev/null || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
    [[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q
        -o Dpkg::Options::=--force-confold install --no-install-recommends "${missing[@]}")
    # Only refresh the package lists when they are absent or stale.
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && "${apt[@]}"; then
        return 0
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
    "${apt[@]}"
}

free_port() {
    python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_packages
PGBIN=$(pg_bindir)

TMP=$(mktemp -d /tmp/radpacs-test.XXXXXX)
PGDIR="$TMP/pg"
AS_PG=()
cleanup() {
    local status=$?
    if [[ -f "$PGDIR/data/postmaster.pid" ]]; then
        "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 755 "$TMP" # the postgres user must reach its data dir below
mkdir "$PGDIR"
if [[ $(id -u) -eq 0 ]]; then
    # initdb and postgres refuse to run as root; --chdir because the checkout
    # may not be readable by that user.
    chown postgres:postgres "$PGDIR"
    AS_PG=(runuser -u postgres -- env --chdir="$PGDIR")
fi

PGPORT=$(free_port)
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    --no-sync --no-instructions >"$PGDIR/initdb.log" 2>&1 \
    || { cat "$PGDIR/initdb.log" >&2; exit 1; }
# Loopback only, socket in our dir; durability off because the data is thrown away.
cat >>"$PGDIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGDIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
EOF
if ! "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 30 start >/dev/null; then
    cat "$PGDIR/server.log" >&2
    exit 1
fi
"${AS_PG[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres radpacs

export DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/radpacs"
export SECRET_KEY="${SECRET_KEY:-test-only-not-secret}"
# Keep test files out of the developer's var/images.
export IMAGE_STORAGE_DIR="$TMP/images"
# Unit tests run Celery eagerly; tests/services starts its own Redis and worker.
unset REDIS_URL
log "PostgreSQL $(basename "$(dirname "$PGBIN")") on 127.0.0.1:$PGPORT"

# SKIP_LINT=1: pytest only (while several people edit the tree at once); CI never sets it.
if [[ -z ${SKIP_LINT:-} ]]; then
    ruff check .
    ruff format --check .
    python manage.py makemigrations --check --dry-run
fi

status=0
python -m pytest "$@" || status=$?
if ((status == 5)); then
    log "pytest collected no tests: failing"
fi
exit "$status"
